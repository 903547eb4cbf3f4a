"""Job runner overhead and start latency, against running the same pipeline in-process.

Targets (jobs issue): the runner adds under 5 % to a pipeline's wall time, and a job starts (its
first event arrives) under 1 s after ``submit`` when a warm worker is ready. The cold start (a
fresh worker importing torch) is reported for reference.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import parse_args, report

_IN_PROCESS = """
import sys, time, tempfile
from pipelines.jobs.worker import _warm_up
_warm_up()  # the same imports a warm worker has done before its job arrives
from pipelines.context import RunContext
from pipelines.jobs import JobSpec
from pipelines.registry import get_pipeline, resolve
spec = JobSpec.load(sys.argv[1])
run = resolve(get_pipeline(spec.pipeline).entry)
context = RunContext(tempfile.mkdtemp(dir=sys.argv[2]), spec.seed, "cpu")
start, cpu = time.perf_counter(), time.process_time()
for _ in run(dict(spec.inputs), spec.config, context):
    pass
print(time.perf_counter() - start, time.process_time() - cpu)
"""


def _in_process(spec, root: Path) -> tuple[float, float]:
    """The pipeline called directly in a fresh process (as a script would), timed from its first step:
    (wall, CPU) seconds."""
    path = spec.save(Path(tempfile.mkdtemp(dir=root)) / "spec.toml")
    out = subprocess.run([sys.executable, "-c", _IN_PROCESS, str(path), str(root)], capture_output=True, text=True,
                         check=True)
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def _through_runner(spec, root: Path, warm: bool) -> tuple[float, float, float, float]:
    """(wall time from submit to the job's end, seconds to the 'running' status, to the first progress,
    CPU seconds of the worker's job plus the runner's own)."""
    from pipelines.events import Progress, Status
    from pipelines.jobs import JobRunner
    from pipelines.jobs.run_folder import read_status

    with JobRunner(root, warm_workers=int(warm), device="cpu") as runner:
        runner.wait_ready()
        start, cpu = time.perf_counter(), time.process_time()
        job = runner.submit(spec)
        running = first = None
        for event in job.events():
            now = time.perf_counter() - start
            if running is None and isinstance(event, Status) and event.status == "running":
                running = now
            if first is None and isinstance(event, Progress):
                first = now
        job.wait()
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert job.status == "done", job.message
    return total, running, first, cpu + read_status(job.run_dir)["cpu_s"]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    from pipelines.jobs import JobSpec

    steps = 20 if args.quick else 60
    repeats = 1 if args.quick else 3
    spec = JobSpec.create("toy-fit", "preview", overrides={"steps": steps})
    root = Path(tempfile.mkdtemp(prefix="fourd-bench-jobs-"))
    inproc, inproc_cpu, runner, runner_cpu, running, first = [], [], [], [], [], []
    for _ in range(repeats):  # interleaved, so that load drifting on a shared machine hits both alike
        wall, cpu = _in_process(spec, root)
        inproc.append(wall)
        inproc_cpu.append(cpu)
        total, to_running, to_first, cpu = _through_runner(spec, root, warm=True)
        runner.append(total)
        runner_cpu.append(cpu)
        running.append(to_running)
        first.append(to_first)
    _, cold_running, _, _ = _through_runner(JobSpec.create("toy-fit", overrides={"steps": 2}), root, warm=False)
    t_in, t_run = statistics.median(inproc), statistics.median(runner)
    c_in, c_run = statistics.median(inproc_cpu), statistics.median(runner_cpu)
    figures = {
        "in_process_s": t_in,
        "runner_s": t_run,
        "runner_overhead_pct": 100 * (t_run - t_in) / t_in,
        # CPU time is far less disturbed than wall time when other work shares the cores
        "runner_cpu_overhead_pct": 100 * (c_run - c_in) / c_in,
        "warm_start_to_running_s": statistics.median(running),
        "warm_start_to_first_progress_s": statistics.median(first),
        "in_process_step_s": t_in / steps,
        "cold_start_to_running_s": cold_running,
    }
    targets = {"runner_overhead_pct": ("<", 5.0), "runner_cpu_overhead_pct": ("<", 5.0),
               "warm_start_to_running_s": ("<", 1.0)}
    report("jobs", figures, targets, args.json)


if __name__ == "__main__":
    main()
