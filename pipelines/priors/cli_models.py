"""`fourd models list | download NAME | path NAME | words [PROMPT]`: what priors are installed, fetch one, where
one is, and which words the bundled prior knows."""

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
    words = sub.add_parser("words", help="the words the bundled prior knows; with a prompt, what it would ignore or "
                                         "draw badly")
    words.add_argument("prompt", nargs="?", default=None, help="a prompt to check")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``models`` command; 0 on success, 2 when a model is missing or the network is not there."""
    from pipelines.priors.registry import ModelNotFound, NoNetwork, download, find_model, installed_path, list_models

    if args.models_command == "words":
        return _words(args.prompt)
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


def _words(prompt: str | None) -> int:
    """Print the bundled prior's vocabulary, or what it would ignore in ``prompt`` or draw badly."""
    from pipelines.models.vocabulary import describe_vocabulary, prompt_warning

    if prompt is None:
        print("The bundled prior knows these words (each value, then its synonyms):")
        print(describe_vocabulary())
        return 0
    print(prompt_warning(prompt) or "The bundled prior knows every word of this prompt and draws its motion well.")
    return 0
