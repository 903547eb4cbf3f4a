"""Studio responsiveness: scrubbing a 50k-splat Gaussian scene, and Qt event-loop stalls during playback.

Figures:
- ``scrub_50k_ms``: median time from ``Viewer.set_time`` to the frame being computed and handed to
  viser (splats at the new time: means, covariances, colours), for a 50k-splat scene on CPU.
  It does not include the browser's upload and sort of the splats.
- ``event_loop_max_gap_ms``: the longest gap between 5 ms Qt timer ticks while the offscreen main
  window plays that scene (and, when the jobs layer is installed, while a ``toy-fit`` job runs).

Run: ``python -m benchmarks.studio [--quick] [--json PATH]``.
"""

from __future__ import annotations

import os
import time

from benchmarks import median_time, parse_args, report


def scrub_time(viewer, scene, frames: int) -> float:
    """Median seconds per scrubbed frame (set_time -> drawn)."""
    viewer.show(scene, 0.0)
    viewer.wait_idle(120)
    times = iter([i / max(1, frames - 1) for i in range(frames)] * 100)

    def one_frame():
        viewer.set_time(next(times))
        viewer.wait_idle(120)

    return median_time(one_frame, repeats=frames, warmup=2)


def event_loop_gaps(model, window, seconds: float) -> float:
    """Longest gap (s) between ticks of a 5 ms timer while the timeline plays."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    stamps: list[float] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    model.set_playing(True)
    timer.start()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    model.set_playing(False)
    return max(b - a for a, b in zip(stamps, stamps[1:])) if len(stamps) > 1 else float("inf")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from studio.webengine import apply_chromium_flags

    apply_chromium_flags()
    import PySide6.QtWebEngineWidgets  # noqa: F401
    from PySide6.QtWidgets import QApplication

    from studio.demo_scene import BouncingBall
    from studio.model import StudioModel
    from studio.viewer import Viewer
    from studio.window import MainWindow

    count = 50_000
    scene = BouncingBall(count=count)
    app = QApplication.instance() or QApplication([])
    viewer = Viewer()
    model = StudioModel(viewer=viewer)
    window = MainWindow(model, viewer.url)
    window.confirm_on_close = False  # no "cancel the running job?" dialog at the end of an unattended run
    window.show()
    figures = {}
    try:
        figures["scrub_50k_ms"] = 1000 * scrub_time(viewer, scene, frames=6 if args.quick else 24)
        model.set_scene(scene)
        deadline = time.monotonic() + 30
        while viewer.client_count == 0 and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.02)
        job = None
        if "toy-fit" in {p.name for p in model.pipelines()}:
            model.form.pipeline, model.form.preset = "toy-fit", "preview"
            job = model.generate()
        figures["event_loop_max_gap_ms"] = 1000 * event_loop_gaps(model, window, 2.0 if args.quick else 8.0)
        figures["job_running"] = float(job is not None and not job.finished)
    finally:
        window.close()
        model.shutdown()
        viewer.close()
    report("studio", figures, {"scrub_50k_ms": ("<", 100.0), "event_loop_max_gap_ms": ("<", 50.0)}, args.json)


if __name__ == "__main__":
    main()
