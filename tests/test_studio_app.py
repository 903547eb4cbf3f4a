"""Start-up decisions of `fourd-studio`: Chromium flags only where needed, browser mode without a display."""

from __future__ import annotations

import time

import pytest

from studio.app import parse_args
from studio.webengine import ENV_FLAGS, apply_chromium_flags, chromium_flags, has_display


def test_a_gpu_desktop_user_gets_no_software_flags():
    assert chromium_flags({"DISPLAY": ":0"}, is_root=False, gpu=True) == []


def test_root_without_gpu_gets_the_measured_flags():
    flags = chromium_flags({}, is_root=True, gpu=False)
    assert flags == ["--no-sandbox", "--ignore-gpu-blocklist", "--disable-gpu-compositing"]


def test_offscreen_needs_software_compositing_even_with_a_gpu():
    assert "--disable-gpu-compositing" in chromium_flags({"QT_QPA_PLATFORM": "offscreen"}, is_root=False, gpu=True)


def test_flags_from_the_environment_win():
    env = {ENV_FLAGS: "--my-flag"}
    assert apply_chromium_flags(env) == "--my-flag" and env[ENV_FLAGS] == "--my-flag"


def test_display_detection():
    assert not has_display({})
    assert has_display({"DISPLAY": ":1"}) and has_display({"WAYLAND_DISPLAY": "wayland-0"})
    assert has_display({"QT_QPA_PLATFORM": "offscreen"})


def test_arguments_default_to_localhost_and_a_free_port():
    args = parse_args([])
    assert args.host == "127.0.0.1" and args.port is None and not args.browser
    args = parse_args(["--browser", "--host", "0.0.0.0", "--port", "9000"])
    assert args.browser and args.host == "0.0.0.0" and args.port == 9000


def test_browser_controls_drive_the_model(monkeypatch):
    """The viser GUI of browser mode changes the model's time and playback (no browser needed)."""
    from studio.app import initial_scene
    from studio.browser import BrowserControls
    from studio.model import StudioModel
    from studio.viewer import Viewer

    viewer = Viewer()
    try:
        model = StudioModel(viewer=viewer)
        initial_scene(model, None)
        controls = BrowserControls(model, viewer)
        controls.frame.value = 20  # as if dragged in the browser
        deadline = time.monotonic() + 5
        while model.timeline.frame != 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert model.timeline.frame == 20
        assert viewer.wait_idle() and viewer.displayed_time == pytest.approx(model.timeline.t)
        model.set_frame(3)  # and the GUI follows the model
        assert controls.frame.value == 3 and "frame 4/48" in controls.readout.content
        controls.play.value = True
        deadline = time.monotonic() + 5
        while not model.timeline.playing and time.monotonic() < deadline:
            time.sleep(0.02)
        controls.step()
        assert model.timeline.frame == 4
    finally:
        viewer.close()


def test_browser_mode_generates_through_the_same_model(tmp_path, monkeypatch):
    from studio_jobs_standin import REGISTRY, JobRunner, ensure_jobs_module

    from studio.browser import BrowserControls
    from studio.model import StudioModel
    from studio.viewer import Viewer

    ensure_jobs_module(monkeypatch)
    viewer = Viewer()
    try:
        model = StudioModel(viewer=viewer, runner=JobRunner(tmp_path / "runs"), registry=REGISTRY)
        controls = BrowserControls(model, viewer)
        assert not controls.generate.disabled and controls.method.value == "ball"
        controls.prompt.value = ""
        controls._locked(controls._generate, None)  # an empty prompt: a notification, no job
        assert not model.jobs
        controls.prompt.value = "a green ball"
        controls._locked(controls._generate, None)
        assert len(model.jobs) == 1
        deadline = time.monotonic() + 20
        while model.jobs[0].status != "done" and time.monotonic() < deadline:
            controls.step()
            time.sleep(0.02)
        controls.step()
        assert model.scene is not None and "a green ball" in controls.jobs.content
        assert viewer.wait_idle() and viewer.scene is model.scene
    finally:
        viewer.close()
