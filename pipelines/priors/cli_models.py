"""`fourd models list | download NAME | path NAME`: what priors are installed, fetch one, where one is."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``models`` command to a ``fourd`` sub-parser collection."""
    parser = subparsers.add_parser("models", help="list, download or locate the diffusion priors")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="show every named prior and whether its weights are on this machine")
    download = sub.add_parser("download", help="fetch a prior's weights from the Hugging Face hub")
    download.add_argument("name", help="the prior's name, e.g. sd21-base")
    download.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds")
    path = sub.add_parser("path", help="print the folder a prior is loaded from")
    path.add_argument("name")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``models`` command; 0 on success, 2 when a model is missing or the network is not there."""
    from pipelines.priors.registry import ModelNotFound, NoNetwork, download, find_model, installed_path, list_models

    try:
        if args.models_command == "list":
            for spec in list_models():
                where = installed_path(spec.name)
                state = str(where) if where else "not installed"
                print(f"{spec.name:20s} {spec.task:18s} {spec.title:32s} {state}")
            return 0
        if args.models_command == "download":
            print(download(args.name, timeout=args.timeout))
            return 0
        if args.models_command == "path":
            print(find_model(args.name))
            return 0
    except (ModelNotFound, NoNetwork) as err:
        print(err, file=sys.stderr)
        return 2
    raise ValueError(f"unknown models action {args.models_command!r}")

