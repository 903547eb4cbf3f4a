"""`fourd train prior`: train (or continue training) the in-house field prior on the procedural world.

    fourd train prior --preset cpu --out ~/prior-run               # resumes if ~/prior-run has a checkpoint
    fourd train prior --config prior.toml --set steps=6000 --out ~/prior-run
    fourd train prior --out ~/prior-run --export assets/checkpoints/inhouse-field-prior   # export only
    torchrun --nproc-per-node 2 -m pipelines.models.cli_train --preset gpu --set device=cuda --out ~/prior-run

Also runs standalone: ``python -m pipelines.models.cli_train --preset cpu --out DIR``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", type=Path, help="a TOML file written by config_to_toml (section [config])")
    parser.add_argument("--preset", default="cpu", help="tiny | cpu (the bundled model) | gpu (default: cpu)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, e.g. --set steps=6000 (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, state.json, train.log)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    parser.add_argument("--stop-after", type=int, default=None, help="end this sitting after N steps")
    parser.add_argument("--export", type=Path, default=None,
                        help="write the newest checkpoint's EMA weights (fp16) + config.json to this folder and exit")
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``fourd train prior`` to the ``fourd`` sub-parser collection."""
    from pipelines.autodecoder import cli_train as autodecoder_cli

    train = subparsers.add_parser("train", help="train the bundled models (in-house field prior, text-to-3d model)")
    models = train.add_subparsers(dest="train_command", metavar="MODEL", required=True)
    parser = _configure(models.add_parser("prior", help="train the in-house field diffusion prior"))
    autodecoder_cli.add_parsers(models)
    return parser


def _init_distributed() -> None:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPUs); nothing when run alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``train ...`` command; 0 on success, 2 on a config the user can fix."""
    if getattr(args, "train_command", "prior") != "prior":
        from pipelines.autodecoder import cli_train as autodecoder_cli

        return autodecoder_cli.run(args)
    from pipelines.config import ConfigError, config_from_toml, parse_overrides
    from pipelines.models.training import TrainPriorConfig, export_prior, train_prior

    try:
        if args.export is not None:
            dest = export_prior(args.out, args.export)
            print(f"exported {args.out} -> {dest}")
            return 0
        config = (config_from_toml(TrainPriorConfig, args.config.read_text()) if args.config
                  else TrainPriorConfig.preset(args.preset))
        overrides = parse_overrides(args.set)
        if overrides:
            config = config.override(overrides)
        _init_distributed()
        if config.device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            config = config.replace(device=f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
        summary = train_prior(config, args.out, resume=not args.no_resume, stop_after=args.stop_after,
                              log=lambda line: print(line, flush=True))
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"trained to step {summary['step']} in {summary['train_seconds'] / 60:.1f} min; checkpoints in {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _configure(argparse.ArgumentParser(prog="python -m pipelines.models.cli_train",
                                                description="train the in-house field diffusion prior"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
