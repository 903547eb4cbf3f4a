"""`fourd eval SUITE --pipeline NAME --preset P`: run a pipeline over an evaluation suite and write a report.

Exit codes: 0 every case scored, 1 some case failed (the report says which and why), 2 bad input
(nothing was started), 130 interrupted (the report holds the cases finished so far).
Imports nothing heavy at module level (it is imported to build the parser).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    from pipelines.config import PRESET_NAMES

    p = subparsers.add_parser(
        "eval", help="run a pipeline over a suite of world scenes and score it against the ground truth",
        description="Run a pipeline on every case of an evaluation suite (bundled: smoke, standard; or a .toml "
                    "file), score each result against the world's ground truth (PSNR, SSIM, mask IoU on "
                    "held-out views and times; attribute accuracy by the classifier) and write report.json, "
                    "report.md and contact_sheet.png.")
    p.add_argument("suite", help="suite name (smoke, standard) or path to a suite .toml file")
    p.add_argument("--pipeline", required=True, help="pipeline to evaluate (see `fourd generate --help`; "
                                                     "world-oracle gives the ceiling)")
    p.add_argument("--preset", default="preview", help=f"config preset ({', '.join(PRESET_NAMES)})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config value for every case, e.g. --set steps=20 (repeatable)")
    p.add_argument("--limit", type=int, metavar="N", help="run only the first N cases")
    p.add_argument("--out", type=Path, metavar="DIR", help="report folder (default: <runs>/eval/<time>-<suite>-...)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where to compute (default: CUDA when present)")
    p.add_argument("--in-process", action="store_true",
                   help="run the pipeline in this process instead of a job worker (for debugging)")


def run(args: argparse.Namespace) -> int:
    from pipelines.config import ConfigError, parse_overrides
    from pipelines.jobs.commands import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_DONE, EXIT_FAILED
    from pipelines.registry import UnknownPipelineError
    from pipelines.world.suites import SuiteError, load_suite

    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {args.limit}.")
        suite = load_suite(args.suite)
        overrides = parse_overrides(args.overrides)
        from pipelines.world.evaluate import evaluate_suite

        report = evaluate_suite(suite, args.pipeline, args.preset, out_dir=args.out, overrides=overrides,
                                limit=args.limit, device=args.device, in_process=args.in_process,
                                log=lambda line: print(line, flush=True))
    except (SuiteError, ConfigError, UnknownPipelineError, ValueError) as err:
        print(f"fourd: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if report["interrupted"]:
        return EXIT_CANCELLED
    return EXIT_DONE if report["mean"]["failed"] == 0 else EXIT_FAILED
