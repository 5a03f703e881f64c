"""Command-line entry points: one per pipeline rule (``python -m mei_core <command> --help``)."""

from __future__ import annotations

import time

#: when this command started (a job logs its start-up: the time until its first optimisation step)
STARTED = time.time()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from .errors import MEIConfigError  # noqa: E402


def _link_profiles(args: argparse.Namespace) -> None:
    """Link the repo's profiles into the user's Snakemake config folder, so that
    ``snakemake --profile cluster`` works from anywhere; an existing profile of that name is kept."""
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "snakemake"
    config_home.mkdir(parents=True, exist_ok=True)
    for profile in sorted(Path(args.profiles).resolve().iterdir()):
        if not (profile / "config.yaml").exists():
            continue
        link = config_home / profile.name
        if link.is_symlink() and link.resolve() == profile:
            print(f"profile {profile.name}: already linked ({link})")
            continue
        if link.is_symlink() and not link.exists():  # a dangling link, e.g. to a deleted checkout
            link.unlink()
        if link.exists():
            print(f"profile {profile.name}: kept your existing {link}; use --profile {profile} for this repo's")
        else:
            link.symlink_to(profile, target_is_directory=True)
            print(f"profile {profile.name}: linked {link} -> {profile}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mei_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **arguments: dict) -> argparse.ArgumentParser:
        sub = commands.add_parser(name)
        for flag, options in arguments.items():
            sub.add_argument(f"--{flag.replace('_', '-')}", **options)
        return sub

    required = {"required": True}
    many = {"nargs": "+", **required}
    command("demo-dataset", spec=required, dataset=required, truth=required, threads={"type": int, "default": 1})
    command("demo-member", spec=required, dataset=required, truth=required, seed={"type": int, **required}, checkpoint=required, metrics=required, threads={"type": int, "default": 1})
    command("demo-connectome", spec=required, weights=required, network=required)
    command("demo-retina", spec=required, description=required)
    command("demo-vr", spec=required, description=required)
    command("demo-connectome-targets", config={"default": "config/config.yaml"}, demo={"default": "connectome"}, out=required)
    command("assemble", spec=required, manifest=required)
    command("objective-table", spec=required, out=required)
    # --worker: run in a worker that keeps torch imported (mei_core.worker): auto | off | a socket path
    worker = {"default": "off"}
    # one job per shard: every seed in one batch, one file per seed (--out in the order of --seeds)
    command("generate", manifest=required, method=required, shard=required, seeds={"type": int, **many}, out=many, device={"default": "auto"}, threads={"type": int, "default": 1}, worker=worker)
    command("score", manifest=required, shard_spec=required, shards=many, out=many, device={"default": "auto"}, threads={"type": int, "default": 1}, worker=worker)
    command("worker", socket=required, idle={"type": float, "default": 60.0})
    command("aggregate", manifest=required, table=required, shards=many, heldout={"nargs": "*", "default": []}, methods=many, seeds={"type": int, **many}, zarr=required, scores=required, traces=required)
    command("concat", inputs=many, out=required)
    command("validate", manifest=required, validation_manifest=required, zarr=required, scores=required, table=required, out=required, activations=required)
    command("report", zarr=required, method=required, out=required, validation={"default": None})
    command("grid-figure", validation=required, methods=many, labels=many, title=required, out=required)
    command("presets")
    command("checksums", tables=many, out=required)
    command("verify", results={"default": "results"}, checksums={"default": None})
    command("summary", scores=required)
    command("video-gifs", zarr=required, method=required, out_dir=required, fps={"type": float, "default": 5.0})
    command("link-profiles", profiles={"default": str(Path(__file__).resolve().parent.parent / "profiles")})
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.command in JOBS:
        arguments = {k: v for k, v in vars(args).items() if k not in ("command", "worker")} | {"started": STARTED}
        from .worker import socket_path

        path = socket_path(args.worker)
        if path is None:
            return run_command(args.command, arguments)
        from .worker import run_in_worker

        return run_in_worker(path, args.command, arguments)
    if args.command == "worker":
        from .worker import main as serve

        serve(args.socket, args.idle)
        return 0
    return run_command(args.command, {k: v for k, v in vars(args).items() if k != "command"})


#: commands that may run in a worker (mei_core.worker): the per-shard jobs
JOBS = ("generate", "score")


def run_command(command: str, arguments: dict) -> int:
    """Run one command with its parsed arguments; 2 for a configuration error (message on stderr)."""
    args = argparse.Namespace(command=command, **arguments)
    try:
        if args.command == "demo-dataset":
            from .demo.v1 import KIND
            KIND.make_dataset(args.spec, args.dataset, args.truth, args.threads)
        elif args.command == "demo-member":
            from .demo.v1 import KIND
            KIND.train_member(args.spec, args.dataset, args.truth, args.seed, args.checkpoint, args.metrics, args.threads)
        elif args.command == "demo-retina":
            from .demo.retina import KIND
            KIND.make(args.spec, args.description)
        elif args.command == "demo-vr":
            from .demo.vr import KIND
            KIND.make(args.spec, args.description)
        elif args.command == "demo-connectome":
            from .demo.connectome import KIND
            KIND.make(args.spec, args.weights, args.network)
        elif args.command == "demo-connectome-targets":
            import yaml

            from .demo.connectome import KIND
            spec = yaml.safe_load(open(args.config))["demo"][args.demo]
            KIND.targets(spec).to_csv(args.out, index=False)
        elif args.command == "assemble":
            from .ensembles import assemble_ensemble
            assemble_ensemble(args.spec, args.manifest)
        elif args.command == "objective-table":
            from .objectives.kinds import write_objective_table
            write_objective_table(args.spec, args.out)
        elif args.command == "generate":
            from .generate import generate_shard
            generate_shard(args.manifest, args.method, args.shard, args.seeds, args.out, args.device, args.threads, getattr(args, "started", None))
        elif args.command == "score":
            from .generate import score_heldout
            score_heldout(args.manifest, args.shard_spec, args.shards, args.out, args.device, args.threads)
        elif args.command == "aggregate":
            from .results import aggregate_ensemble
            aggregate_ensemble(args.manifest, args.table, args.shards, args.heldout, args.methods, args.seeds, args.zarr, args.scores, args.traces)
        elif args.command == "concat":
            from .results import concatenate_tables
            concatenate_tables(args.inputs, args.out)
        elif args.command == "validate":
            from .validation import validate_ensemble
            validate_ensemble(args.manifest, args.validation_manifest, args.zarr, args.scores, args.table, args.out, args.activations)
        elif args.command == "report":
            from .report import mei_grid
            mei_grid(args.zarr, args.method, args.out, args.validation)
        elif args.command == "grid-figure":
            from .report import grid_figure
            grid_figure(args.validation, args.methods, args.labels, args.title, args.out)
        elif args.command == "presets":
            from .presets import describe_presets
            print(describe_presets())
        elif args.command == "checksums":
            from .verify import write_checksums
            write_checksums(args.tables, args.out)
        elif args.command == "verify":
            from .verify import verify
            problems = verify(args.results, args.checksums)
            for problem in problems:
                print(f"problem: {problem}", file=sys.stderr)
            print(f"{args.results}: {'intact' if not problems else f'{len(problems)} problem(s)'}")
            return 1 if problems else 0
        elif args.command == "summary":
            from .results import summary
            print(summary(args.scores))
        elif args.command == "video-gifs":
            from .report import video_gifs
            video_gifs(args.zarr, args.method, args.out_dir, args.fps)
        elif args.command == "link-profiles":
            _link_profiles(args)
    except MEIConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
