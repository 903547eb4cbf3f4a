"""`fourd generate | run | resume | runs`: jobs from the command line.

Exit codes: 0 done, 1 failed, 2 bad input (nothing was started), 130 cancelled with Ctrl-C (the
run checkpoints first and can be resumed). ``--json`` prints the event stream as JSON lines.
This module is imported to build the parser, so it imports nothing heavy at module level.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

EXIT_DONE, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


def add_parser(subparsers) -> None:
    from pipelines.config import PRESET_NAMES
    from pipelines.registry import pipeline_names

    generate = subparsers.add_parser("generate", help="start a new run of a pipeline",
                                     description="Start a new run of a pipeline and follow its progress.")
    pipelines = generate.add_subparsers(dest="pipeline", metavar="PIPELINE", required=True)
    for name in pipeline_names():
        p = pipelines.add_parser(name, help=f"run '{name}'",
                                 description=f"Run '{name}'. Inputs are given in the pipeline's order "
                                             "(a prompt, an image file, ...).")
        p.add_argument("inputs", nargs="*", metavar="INPUT", help="the pipeline's inputs, in order")
        p.add_argument("--preset", default="preview", help=f"config preset ({', '.join(PRESET_NAMES)})")
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument("--prior", action="append", default=[], metavar="ROLE=NAME",
                       help="use registry model NAME for the prior ROLE (repeatable)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="override a config value, e.g. --set steps=200 (repeatable)")
        p.add_argument("--settings", action="store_true", help="list the config keys and their defaults, then exit")
        _add_run_options(p)

    run = subparsers.add_parser("run", help="run a saved spec file (spec.toml of an earlier run, or hand-written)")
    run.add_argument("spec", type=Path, help="path to a spec TOML file")
    _add_run_options(run)

    resume = subparsers.add_parser("resume", help="continue an interrupted, cancelled or failed run")
    resume.add_argument("run", help="run folder, or the name of a run in the runs folder")
    _add_run_options(resume, out=False)

    runs = subparsers.add_parser("runs", help="list runs with their status")
    runs.add_argument("--root", type=Path, help="runs folder (default: the user's runs folder)")
    runs.add_argument("--json", action="store_true", help="print one JSON object per run")


def _add_run_options(p: argparse.ArgumentParser, out: bool = True) -> None:
    if out:
        p.add_argument("--out", type=Path, metavar="DIR",
                       help="folder to create the run folder in (default: the user's runs folder)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where to compute (default: CUDA when present)")
    p.add_argument("--json", action="store_true", help="print the event stream as JSON lines instead of bars")


def run(args: argparse.Namespace) -> int:
    return {"generate": _generate, "run": _run_spec, "resume": _resume, "runs": _list}[args.command](args)


# -------------------------------------------------------------------- commands
def _generate(args) -> int:
    from pipelines.config import ConfigError, parse_overrides
    from pipelines.jobs.spec import JobSpec
    from pipelines.registry import get_pipeline

    try:
        info = get_pipeline(args.pipeline)
        if args.settings:
            return _print_settings(info)
        if len(args.inputs) != len(info.inputs):
            wanted = " ".join(n.upper() for n in info.inputs) or "no inputs"
            raise ConfigError(f"'{info.name}' takes {wanted}, got {len(args.inputs)} input(s).")
        spec = JobSpec.create(info.name, args.preset, inputs=dict(zip(info.inputs, args.inputs)), seed=args.seed,
                              priors=_pairs(args.prior, "--prior", "ROLE=NAME"),
                              overrides=parse_overrides(args.overrides))
    except (ConfigError, ValueError, KeyError) as err:
        return _bad_input(err)
    return _follow(lambda runner: runner.submit(spec), args)


def _run_spec(args) -> int:
    from pipelines.config import ConfigError
    from pipelines.jobs.spec import JobSpec

    try:
        spec = JobSpec.load(args.spec)
    except ConfigError as err:
        return _bad_input(err)
    return _follow(lambda runner: runner.submit(spec), args)


def _resume(args) -> int:
    from pipelines.paths import runs_dir

    path = Path(args.run)
    if not path.exists() and (runs_dir() / args.run).exists():
        path = runs_dir() / args.run
    args.out = path.parent
    return _follow(lambda runner: runner.resume(path), args)


def _list(args) -> int:
    from pipelines.jobs.run_folder import list_runs

    runs = list_runs(args.root)
    if args.json:
        for r in runs:
            print(json.dumps({"run_dir": str(r.run_dir), "status": r.status, "created": r.created,
                              "pipeline": r.spec.pipeline if r.spec else None,
                              "preset": r.spec.preset if r.spec else None, "seed": r.spec.seed if r.spec else None,
                              "result_dir": str(r.result_dir) if r.result_dir else None, "message": r.message}))
        return EXIT_DONE
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs ({len(runs)})")
    # the run's name (time-pipeline-seed) is what `fourd resume` / `fourd export` take: never cut it
    table.add_column("run", no_wrap=True, min_width=max((len(r.name) for r in runs), default=3))
    for column in ("pipeline", "preset", "seed"):
        table.add_column(column)
    table.add_column("status", no_wrap=True)
    styles = {"done": "green", "failed": "red", "failed-resumable": "yellow", "cancelled": "yellow",
              "running": "cyan"}
    for r in runs:
        table.add_row(r.name, r.spec.pipeline if r.spec else "?", r.spec.preset if r.spec else "?",
                      str(r.spec.seed) if r.spec else "?", f"[{styles.get(r.status, '')}]{r.status}[/]")
    Console().print(table)
    return EXIT_DONE


# -------------------------------------------------------------------- following a job
def _follow(start, args) -> int:
    """Start a job with ``start(runner)``, show its events until it ends, map its status to an
    exit code. Ctrl-C cancels (the run checkpoints); a second Ctrl-C stops it at once."""
    from pipelines.config import ConfigError
    from pipelines.jobs.runner import JobRunner

    runner = JobRunner(getattr(args, "out", None), warm_workers=0, device=args.device)
    try:
        try:
            job = start(runner)
        except (ConfigError, ValueError, OSError) as err:
            return _bad_input(err)
        show = _JsonPrinter() if args.json else _Bars(job)
        # Ctrl-C is counted by a handler and acted on between events, never raised as KeyboardInterrupt in
        # the middle of reading the event queue or printing (which could lose the job's last events).
        presses = [0]
        previous = signal.signal(signal.SIGINT, lambda signum, frame: presses.__setitem__(0, presses[0] + 1))
        handled = 0
        try:
            with show:
                while True:
                    try:
                        for event in job.events(timeout=0.2):
                            show(event)
                        break
                    except TimeoutError:
                        pass
                    if presses[0] > handled:
                        handled = presses[0]
                        if handled == 1:
                            show.note("cancelling: saving a checkpoint (Ctrl-C again to stop at once)")
                            job.cancel()
                        else:
                            job.cancel(force=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        interrupted = handled > 0
        job.wait()
        if not args.json:
            _print_outcome(job)
        if job.status == "done":
            return EXIT_DONE
        if job.status == "cancelled" and interrupted:
            return EXIT_CANCELLED
        return EXIT_FAILED
    finally:
        runner.shutdown()


def _print_outcome(job) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    if job.status == "done":
        console.print(f"[green]done[/]: {job.run_dir}" + (f"\nscene: {job.result_dir}" if job.result_dir else ""))
    elif job.status == "cancelled":
        console.print(f"[yellow]cancelled[/]: resume with `fourd resume {job.run_dir}`")
    else:
        console.print(f"[red]{job.status}[/]: {job.message}")
        if job.status == "failed-resumable":
            console.print(f"resume with `fourd resume {job.run_dir}`")


class _JsonPrinter:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __call__(self, event) -> None:
        print(json.dumps(event.to_record()), flush=True)

    def note(self, message: str) -> None:
        print(json.dumps({"type": "log", "time": time.time(), "message": message, "level": "info"}), flush=True)


class _Bars:
    """Rich progress bars: one per stage with step, metrics and ETA; logs printed above them."""

    def __init__(self, job) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.job = job
        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[metrics]}"), TextColumn("ETA {task.fields[eta]}"),
                                 TimeElapsedColumn(), console=self.console)
        self.tasks: dict[str, int] = {}
        self.console.print(f"run folder: {job.run_dir}")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]{message}[/]")

    def __call__(self, event) -> None:
        from pipelines.events import Artifact, Log, Progress

        if isinstance(event, Progress):
            metrics = "  ".join(f"{k} {v:.4g}" for k, v in event.metrics.items())
            eta = _duration(event.eta_s)
            if event.stage not in self.tasks:
                self.tasks[event.stage] = self.progress.add_task(event.stage, total=event.total, metrics=metrics,
                                                                 eta=eta)
            self.progress.update(self.tasks[event.stage], completed=event.step, total=event.total, metrics=metrics,
                                 eta=eta)
        elif isinstance(event, Log) and event.level != "debug":
            self.progress.console.print(f"[dim]{event.level}[/] {event.message}")
        elif isinstance(event, Artifact):
            self.progress.console.print(f"[dim]{event.kind}[/] {event.path}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


# -------------------------------------------------------------------- argument helpers
def _pairs(items: list[str], flag: str, form: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects {form}, got '{item}'.")
        out[key.strip()] = value.strip()
    return out


def _print_settings(info) -> int:
    from pipelines.config import config_fields

    print(f"{info.name}: {info.title}\ninputs: {', '.join(info.inputs) or 'none'}\n"
          f"presets: {', '.join(info.config_cls.presets)}\n")
    for name, tp, default, help_text in config_fields(info.config_cls):
        print(f"  {name:<24} {getattr(tp, '__name__', str(tp)):<8} {default!r:<10} {help_text}")
    return EXIT_DONE


def _bad_input(err: BaseException) -> int:
    print(f"fourd: {err}", file=sys.stderr)
    return EXIT_BAD_INPUT
