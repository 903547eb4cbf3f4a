"""`fourd`: the headless command line. Sub-commands register here as the pipelines land."""

from __future__ import annotations

import argparse
import sys


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
    sub.add_parser("doctor", help="show Python, torch, device, accelerators, folders and bundled priors")
    from pipelines.world.commands import add_world_parser

    add_world_parser(sub)
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
    if args.command == "world":
        from pipelines.world.commands import run_world_command

        return run_world_command(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
