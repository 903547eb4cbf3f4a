"""Save screenshots of the studio's main states: ``python -m studio.screenshots OUTDIR``.

Runs the real window offscreen (software WebGL), waits until the viewer's canvas has drawn the
scene and stopped changing, and saves ``window.grab()`` PNGs: the result view, the camera presets,
a scrubbed frame, the prompt check, a job running with its previews (when a pipeline is installed) and the export
dialog (when the exporters are installed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def grab_array(widget) -> np.ndarray:
    """The widget as it looks now, ``[H, W, 3]`` uint8."""
    from PySide6.QtGui import QImage

    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height, stride = image.width(), image.height(), image.bytesPerLine()
    data = np.frombuffer(image.constBits(), np.uint8, count=stride * height).reshape(height, stride)
    return data[:, : width * 3].reshape(height, width, 3).copy()


def colourful_pixels(image: np.ndarray) -> int:
    """Pixels with clear colour (the scene), not the white page, grey grid or text."""
    return int((image.max(-1).astype(int) - image.min(-1) > 60).sum())


def wait_for_frame(app, view, min_pixels: int = 500, timeout: float = 60.0, settle: float = 0.6) -> np.ndarray:
    """Process events until ``view`` shows coloured content that stays the same for ``settle`` seconds."""
    deadline = time.monotonic() + timeout
    previous, stable_since = None, None
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.05)
        image = grab_array(view)
        if colourful_pixels(image) < max(min_pixels, 1) and min_pixels > 0:
            previous, stable_since = None, None
            continue
        if previous is not None and np.array_equal(image, previous):
            if stable_since is None:
                stable_since = time.monotonic()
            elif time.monotonic() - stable_since >= settle:
                return image
        else:
            stable_since = None
        previous = image
    raise TimeoutError("The viewer showed no stable 3D content in time (is WebGL working?).")


def pump(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--scene", default=None, help="a saved scene folder (default: the example scene)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from studio.webengine import apply_chromium_flags

    software_gl = apply_chromium_flags() is not None
    import PySide6.QtWebEngineWidgets  # noqa: F401  (before the QApplication)
    from PySide6.QtWidgets import QApplication

    from studio.app import initial_scene
    from studio.model import StudioModel
    from studio.viewer import Viewer
    from studio.window import MainWindow

    args.outdir.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    viewer = Viewer()
    viewer.minimize_controls()
    model = StudioModel(viewer=viewer)
    window = MainWindow(model, viewer.url, hide_browser_notices=software_gl)
    window.resize(1400, 860)
    saved = []

    def save(name: str, min_pixels: int = 500) -> None:
        viewer.wait_idle()
        wait_for_frame(app, window.view, min_pixels=min_pixels)
        path = args.outdir / f"{name}.png"
        window.grab().save(str(path))
        saved.append(path)
        print(f"saved {path}", flush=True)

    try:
        window.show()
        deadline = time.monotonic() + 60
        while viewer.client_count == 0 and time.monotonic() < deadline:
            pump(app, 0.1)
        pump(app, 2.5)  # the client draws its first state after connecting (the grid fades in)
        save("empty", min_pixels=0)
        initial_scene(model, args.scene)
        window.create_panel.write_form()  # the first-start example's method, prompt and preset
        model.set_frame(0)
        pump(app, 0.5)
        save("result")
        model.set_frame(int(model.timeline.frames * 0.45))
        save("scrubbed")
        for preset in ("front", "top"):
            model.set_camera(preset)
            pump(app, 0.5)
            save(f"camera-{preset}")
        model.set_camera("reset")
        _prompt_check(app, model, window, save)
        _export_dialog(app, model, window, args.outdir, saved)  # on the example scene
        _running_job(app, model, window, save)  # last: the job's scene replaces the example
    finally:
        model.shutdown(cancel_running=True)
        window.confirm_on_close = False
        window.close()
        viewer.close()
    print(f"{len(saved)} screenshots in {args.outdir}")
    return 0


def _prompt_check(app, model, window, save) -> None:
    """The create panel's inline warning about words the bundled prior does not know, and a motion it draws badly."""
    prompted = [p for p in model.pipelines() if "prompt" in p.inputs]
    info = next((p for p in prompted if p.name == "text-to-4d"), prompted[0] if prompted else None)
    if info is None:
        print("no text-to-4D method installed: skipping the prompt-check screenshot", flush=True)
        return
    panel = window.create_panel
    panel.method.setCurrentIndex(panel.method.findData(info.name))
    panel.prompt.setPlainText("a red dragon that orbits")
    pump(app, 0.3)
    save("prompt-check")
    panel.prompt.setPlainText("")


def _running_job(app, model, window, save) -> None:
    """A job with live previews, when a pipeline and the job runner are installed."""
    pipelines = model.pipelines()
    if not pipelines:
        print("no pipelines installed: skipping the running-job screenshot", flush=True)
        return
    info = next((p for p in pipelines if p.name == "toy-fit"), pipelines[0])
    panel = window.create_panel
    panel.method.setCurrentIndex(panel.method.findData(info.name))
    panel.prompt.setPlainText("a red ball bouncing")
    # Previews early, so the shot shows them without waiting for a whole stage.
    keys = {key for key, _, _ in model.advanced_fields(info.name, "preview")}
    for key in ("preview_every", "scene_every"):
        if key in panel.advanced_edits and key in keys:
            panel.advanced_edits[key].setText("5")
    window.generate()
    if not model.jobs:
        print(f"could not start {info.name}: {window.errors[-1] if window.errors else '?'}", flush=True)
        return
    job = model.jobs[-1]
    # Far enough into the fit that the viewer has a shape to show, with previews in the panel.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (job.preview is None or job.fraction < 0.6) and not job.finished:
        pump(app, 0.2)
    # Freeze the panel's state for the shot: no new events while the viewer catches up with the last one.
    window.poll_timer.stop()
    model.viewer.wait_idle(120)
    pump(app, 3.0)  # the browser draws the new proxy, then the full render at rest
    save("running", min_pixels=0)  # early in a fit the viewer may rightly show nothing yet
    window.poll_timer.start()


def _export_dialog(app, model, window, outdir: Path, saved: list) -> None:
    if not model.export_available():
        print("renderers.export is not installed: skipping the export-dialog screenshot", flush=True)
        return
    from PySide6.QtGui import QColor, QPainter

    dialog = window.export()
    pump(app, 0.5)
    # Offscreen, a dialog is its own top-level surface: paint it over the window where it would sit.
    shot = window.grab()
    painter = QPainter(shot)
    painter.fillRect(shot.rect(), QColor(0, 0, 0, 60))
    panel = dialog.grab()
    painter.drawPixmap(24, shot.height() - panel.height() - 60, panel)  # beside the 3D view, not over it
    painter.end()
    path = outdir / "export-dialog.png"
    shot.save(str(path))
    dialog.close()
    saved.append(path)
    print(f"saved {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
