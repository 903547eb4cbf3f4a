"""`fourd`: the headless command line.

Sub-commands live in modules listed in ``COMMAND_MODULES``. Each module provides
``add_parser(subparsers)``, which adds one or more sub-commands, and ``run(args) -> int``, which
runs any of them and returns the exit code (0 done, 1 failed, 2 bad input, 130 cancelled).
Modules are imported to build the parser, so they import nothing heavy at module level.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from renderers.allocator import set_openmp_wait_policy

set_openmp_wait_policy()  # before anything loads torch

COMMAND_MODULES: tuple[str, ...] = (
    "pipelines.jobs.commands",  # generate, run, resume, runs
    "pipelines.export_commands",  # export
    "pipelines.world.commands",  # world: examples, datasets, classifier, contact sheets
    "pipelines.world.eval_commands",  # eval: a pipeline over a suite of world scenes, with a report
    "pipelines.priors.cli_models",  # models
    "pipelines.models.cli_train",  # train prior
)


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg_version = version("fourd-studio")
    except PackageNotFoundError:
        pkg_version = "unknown"
    parser = argparse.ArgumentParser(
        prog="fourd",
        description="Generate, inspect and export 4D assets from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"fourd-studio {pkg_version}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers = {}
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        before = set(sub.choices)
        module.add_parser(sub)
        handlers.update({command: module.run for command in set(sub.choices) - before})
    sub.add_parser("doctor", help="show Python, torch, device, accelerators, folders and bundled models")
    parser.set_defaults(_handlers=handlers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "doctor":
        from pipelines import doctor

        return doctor.main()
    handler = args._handlers.get(args.command)
    if handler is None:
        parser.error(f"unknown command {args.command!r}")
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
