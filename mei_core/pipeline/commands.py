"""The command table: one command per pipeline rule (``python -m mei_core <command> --help``).

Each command declares its arguments and the one ``mei_core`` function it calls, imported on use so
that a thin client starts without torch. ``mei_core.__main__`` parses; the worker runs job commands
through :func:`run_command` too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MEIConfigError

REQUIRED: dict[str, Any] = {"required": True}
MANY: dict[str, Any] = {"nargs": "+", "required": True}
INT: dict[str, Any] = {"type": int, "required": True}
THREADS: dict[str, Any] = {"type": int, "default": 1}
#: --worker: run in a worker that keeps torch imported (mei_core.pipeline.worker): auto | off | a socket path
WORKER: dict[str, Any] = {"default": "off"}


@dataclass(frozen=True)
class Command:
    name: str
    arguments: dict[str, dict[str, Any]]
    run: Callable[[argparse.Namespace], int | None]
    #: a per-shard job: may run in a worker, and is told when its process started
    job: bool = False


COMMANDS: dict[str, Command] = {}


def command(name: str, job: bool = False, **arguments: dict[str, Any]) -> Callable:
    """Register the decorated function as command ``name`` with these ``--arguments``."""

    def register(run: Callable[[argparse.Namespace], int | None]) -> Callable:
        COMMANDS[name] = Command(name, {**arguments, **({"worker": WORKER} if job else {})}, run, job)
        return run

    return register


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mei_core", description=description)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for entry in COMMANDS.values():
        sub = subparsers.add_parser(entry.name)
        for flag, options in entry.arguments.items():
            sub.add_argument(f"--{flag.replace('_', '-')}", **options)
    return parser


def run_command(name: str, arguments: dict[str, Any]) -> int:
    """Run one command with its parsed arguments; 2 for a configuration error (message on stderr)."""
    try:
        return COMMANDS[name].run(argparse.Namespace(command=name, **arguments)) or 0
    except MEIConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------------- demos


@command("demo-dataset", spec=REQUIRED, dataset=REQUIRED, truth=REQUIRED, threads=THREADS)
def _demo_dataset(args: argparse.Namespace) -> None:
    from ..demo.v1 import KIND

    KIND.make_dataset(args.spec, args.dataset, args.truth, args.threads)


@command("demo-member", spec=REQUIRED, dataset=REQUIRED, truth=REQUIRED, seed=INT, checkpoint=REQUIRED, metrics=REQUIRED, threads=THREADS)
def _demo_member(args: argparse.Namespace) -> None:
    from ..demo.v1 import KIND

    KIND.train_member(args.spec, args.dataset, args.truth, args.seed, args.checkpoint, args.metrics, args.threads)


@command("demo-make", kind=REQUIRED, spec=REQUIRED, outputs=MANY)
def _demo_make(args: argparse.Namespace) -> None:
    """A one-step demo kind's files (rule ``demo_<kind>``), in the order of the kind's ``files``."""
    from ..demo import demo_kind

    demo_kind(args.kind, "--kind").make(args.spec, *args.outputs)


@command("demo-connectome-targets", config={"default": "config/config.yaml"}, demo={"default": "connectome"}, out=REQUIRED)
def _demo_connectome_targets(args: argparse.Namespace) -> None:
    import yaml

    from ..demo.connectome import KIND

    spec = yaml.safe_load(open(args.config))["demo"][args.demo]
    KIND.targets(spec).to_csv(args.out, index=False)


# ------------------------------------------------------------------------------- the pipeline's rules


@command("assemble", spec=REQUIRED, manifest=REQUIRED)
def _assemble(args: argparse.Namespace) -> None:
    from .ensembles import assemble_ensemble

    assemble_ensemble(args.spec, args.manifest)


@command("objective-table", spec=REQUIRED, out=REQUIRED)
def _objective_table(args: argparse.Namespace) -> None:
    from ..objectives.kinds import write_objective_table

    write_objective_table(args.spec, args.out)


#: --recompute: the job was forced (--forcerun): its outputs are deleted first, so none is kept for
#: holding its current key (Snakemake backs `update` outputs up and restores them if the job fails)
RECOMPUTE: dict[str, Any] = {"action": "store_true"}


def _discard_if(recompute: bool, outputs: list[str]) -> None:
    for output in outputs if recompute else []:
        Path(output).unlink(missing_ok=True)


# one job per shard: every seed in one batch, one file per seed (--out in the order of --seeds)
@command("generate", job=True, manifest=REQUIRED, method=REQUIRED, shard=REQUIRED, seeds={"type": int, **MANY}, out=MANY, device={"default": "auto"}, threads=THREADS, recompute=RECOMPUTE)
def _generate(args: argparse.Namespace) -> None:
    from .generate import generate_shard

    _discard_if(args.recompute, args.out)
    generate_shard(args.manifest, args.method, args.shard, args.seeds, args.out, args.device, args.threads, getattr(args, "started", None))


@command("score", job=True, manifest=REQUIRED, shard_spec=REQUIRED, shards=MANY, out=MANY, device={"default": "auto"}, threads=THREADS, recompute=RECOMPUTE)
def _score(args: argparse.Namespace) -> None:
    from .generate import score_heldout

    _discard_if(args.recompute, args.out)
    score_heldout(args.manifest, args.shard_spec, args.shards, args.out, args.device, args.threads)


@command("worker", socket=REQUIRED, idle={"type": float, "default": 60.0})
def _worker(args: argparse.Namespace) -> None:
    from .worker import main as serve

    serve(args.socket, run_command, args.idle)


@command("aggregate", manifest=REQUIRED, table=REQUIRED, shards=MANY, heldout={"nargs": "*", "default": []}, methods=MANY, seeds={"type": int, **MANY}, zarr=REQUIRED, scores=REQUIRED, traces=REQUIRED,
         method_specs=MANY, shard_specs=MANY, device=REQUIRED)
def _aggregate(args: argparse.Namespace) -> None:
    from .results import aggregate_ensemble

    aggregate_ensemble(args.manifest, args.table, args.shards, args.heldout, args.methods, args.seeds, args.zarr, args.scores, args.traces,
                       args.method_specs, args.shard_specs, args.device)


# --record: where the job records the sha256 of the table it wrote (verify)
@command("concat", inputs=MANY, out=REQUIRED, record={"default": None})
def _concat(args: argparse.Namespace) -> None:
    from .results import concatenate_tables
    from .verify import write_table_record

    concatenate_tables(args.inputs, args.out)
    if args.record:
        write_table_record(args.out, args.record)


@command("validate", manifest=REQUIRED, validation_manifest=REQUIRED, zarr=REQUIRED, scores=REQUIRED, table=REQUIRED, out=REQUIRED, activations=REQUIRED,
         truth_kind={"default": "none"}, truth={"nargs": "*", "default": []})
def _validate(args: argparse.Namespace) -> None:
    from .validation import validate_ensemble

    truth = {"kind": args.truth_kind, "file": args.truth[0]} if args.truth_kind != "none" and args.truth and args.truth[0] else None
    validate_ensemble(args.manifest, args.validation_manifest, args.zarr, args.scores, args.table, args.out, args.activations, truth)


@command("report", zarr=REQUIRED, method=REQUIRED, out=REQUIRED, validation={"default": None})
def _report(args: argparse.Namespace) -> None:
    from .report import mei_grid

    mei_grid(args.zarr, args.method, args.out, args.validation)


@command("grid-figure", validation=REQUIRED, methods=MANY, labels=MANY, title=REQUIRED, out=REQUIRED)
def _grid_figure(args: argparse.Namespace) -> None:
    from .report import grid_figure

    grid_figure(args.validation, args.methods, args.labels, args.title, args.out)


@command("video-gifs", zarr=REQUIRED, method=REQUIRED, out_dir=REQUIRED, fps={"type": float, "default": 5.0})
def _video_gifs(args: argparse.Namespace) -> None:
    from .report import video_gifs

    video_gifs(args.zarr, args.method, args.out_dir, args.fps)


@command("browse-thumbnails", zarr=REQUIRED, method=REQUIRED, out_dir=REQUIRED, gif_folder={"nargs": "?", "default": None})
def _browse_thumbnails(args: argparse.Namespace) -> None:
    from .browse import draw_thumbnails

    draw_thumbnails(args.zarr, args.method, args.out_dir, args.gif_folder)


@command("browse", scores=REQUIRED, validation=REQUIRED, traces=REQUIRED, thumbnails=MANY, out=REQUIRED, data=REQUIRED, trace_dir=REQUIRED,
         grids={"default": "{}", "help": "JSON: ensemble → grid → {methods, labels, figure}"})
def _browse(args: argparse.Namespace) -> None:
    import json

    from .browse import write_browser

    write_browser(args.scores, args.validation, args.traces, args.thumbnails, args.out, args.data, args.trace_dir, json.loads(args.grids))


@command("checksums", tables=MANY, out=REQUIRED, records={"nargs": "*", "default": None}, stores={"nargs": "*", "default": []})
def _checksums(args: argparse.Namespace) -> None:
    from .verify import write_checksums

    write_checksums(args.tables, args.out, args.records, args.stores)


@command("summary", scores=REQUIRED)
def _summary(args: argparse.Namespace) -> None:
    from .results import summary

    print(summary(args.scores))


# ------------------------------------------------------------------------------------- for users


@command("presets")
def _presets(args: argparse.Namespace) -> None:
    from ..presets import describe_presets

    print(describe_presets())


@command("docs", write={"action": "store_true"}, check={"action": "store_true"})
def _docs(args: argparse.Namespace) -> int:
    """config/README.md's tables generated from the registries: ``--check`` (the default) fails when
    they differ, ``--write`` rewrites them."""
    from .docs import check_or_write

    return check_or_write(write=args.write)


@command("verify", results={"default": "results"}, checksums={"default": None})
def _verify(args: argparse.Namespace) -> int:
    from .verify import verify

    problems = verify(args.results, args.checksums)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"{args.results}: {'intact' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


@command("link-profiles", profiles={"default": str(Path(__file__).resolve().parents[2] / "profiles")})
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
