"""Command-line entry points: one per pipeline rule (``python -m mei_core <command> --help``).

The commands themselves are declared in :mod:`mei_core.pipeline.commands`.
"""

from __future__ import annotations

import time

#: when this command started (a job logs its start-up: the time until its first optimisation step)
STARTED = time.time()

import logging  # noqa: E402
import sys  # noqa: E402

from .pipeline.commands import COMMANDS, build_parser, run_command  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    arguments = {k: v for k, v in vars(args).items() if k not in ("command", "worker")}
    if COMMANDS[args.command].job:
        from .pipeline.worker import run_in_worker, socket_path

        path = socket_path(args.worker)
        if path is None:
            return run_command(args.command, arguments | {"started": STARTED})
        return run_in_worker(path, args.command, arguments | {"started": STARTED})
    return run_command(args.command, arguments)


if __name__ == "__main__":
    sys.exit(main())
