"""Motion picking in browser mode: the viser panel draws candidates through the model, plays them as
looping images, and a pick starts the job with that motion."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from studio_jobs_standin import RecordingRunner
from test_studio_motions import TINY

from assets import asset_path
from studio.browser import BrowserControls
from studio.model import StudioModel
from studio.viewer import Viewer

pytestmark = pytest.mark.slow  # drawing four candidate clips takes tens of seconds on a loaded CPU


def step_until(controls, predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        controls.step()
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_browser_gallery_draws_plays_and_picks_a_motion():
    viewer = Viewer()
    try:
        model = StudioModel(viewer=viewer, runner=RecordingRunner())
        model.form.overrides = dict(TINY)  # a reduced config (the browser has no advanced panel)
        controls = BrowserControls(model, viewer)
        controls.method.value = "text-to-4d"
        controls._method_changed()
        assert not controls.find_motions.visible and not controls.image.visible  # 4D-fy: no motion to pick
        controls.method.value = "image-to-4d"
        controls._method_changed()
        assert controls.find_motions.visible and controls.image.visible and controls.prompt.disabled
        controls._locked(controls._find_motions, None)  # no image yet: a sentence, no search
        assert "needs an input image" in controls.notes[-1] and controls.search is None
        controls.examples.value = "red ball"  # as if chosen in the browser
        controls._example_chosen()
        assert controls.image.value == str(asset_path("examples", "red_ball.png"))
        controls.seed.value = 5

        controls._locked(controls._find_motions, None)
        search = controls.search
        assert search is model.motion_search and controls.motions_folder.visible
        assert search.seeds == [5 * 7 + 2 + 1000 * i for i in range(4)]
        assert step_until(controls, lambda: search.finished and len(controls.cards) == 4), search.error
        controls.step()
        assert controls.motion_status.content == search.status_text() and "pick one" in search.status_text()
        assert controls.stop_motions.disabled
        card = controls.cards[2]
        assert card.candidate is search.candidates[2] and card.image.label == f"seed {search.seeds[2]} · 3 frames"
        assert card.image.image.shape == (160, 160, 3)  # 32 px clips, enlarged 5 times
        assert any(np.array_equal(card.image.image[::5, ::5], frame) for frame in card.candidate.clip)
        shown = {card.image.image.tobytes()}  # the clip plays: each of its frames shows in turn
        assert step_until(controls, lambda: shown.add(card.image.image.tobytes()) or len(shown) == 3, timeout=10)

        controls._locked(controls._pick_motion, search.seeds[2], None)
        spec = model.runner.specs[-1]
        assert spec.config.motion_seed == search.seeds[2] and spec.inputs["image"] == controls.image.value
        assert model.jobs[-1].title.startswith("image-to-4d") and "motion seed" in controls.notes[-1]
        assert controls.cards == [] and controls.search is None and not controls.motions_folder.visible
        assert model.form.overrides["motion_seed"] == str(search.seeds[2])
    finally:
        viewer.close()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's `chromium` package")
def test_in_headless_chromium_a_click_draws_motions_and_a_pick_starts_the_job(tmp_path):
    from test_studio_browser import DevTools

    from studio.browser import serve

    viewer = Viewer()
    model = StudioModel(viewer=viewer, runner=RecordingRunner())
    model.form.pipeline, model.form.seed = "image-to-4d", 5
    model.form.inputs = {"image": str(asset_path("examples", "red_ball.png"))}
    model.form.overrides = dict(TINY)
    stop = threading.Event()
    loop = threading.Thread(target=serve, args=(model, viewer, stop), daemon=True)
    loop.start()
    browser = DevTools(tmp_path / "chromium")
    buttons = "[...document.querySelectorAll('button')]"

    def page_until(expression, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if browser.evaluate(expression):
                return True
            time.sleep(0.5)
        return False

    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=viewer.url)
        assert page_until(f"{buttons}.some(b => b.textContent.trim() === 'Pick a motion first…')", 90)
        browser.evaluate(f"{buttons}.find(b => b.textContent.trim() === 'Pick a motion first…').click()")
        use = f"{buttons}.filter(b => b.textContent.trim() === 'Use this motion')"
        assert page_until(f"{use}.length === 4 && document.querySelectorAll('img').length >= 4", 180)
        browser.call("Emulation.setDeviceMetricsOverride", width=1100, height=1300, deviceScaleFactor=1, mobile=False)
        browser.evaluate("document.querySelector('img').scrollIntoView({block: 'center'})")
        time.sleep(1.0)
        (tmp_path / "gallery.png").write_bytes(browser.screenshot())
        browser.evaluate(f"{use}[2].click()")
        assert page_until(f"{use}.length === 0", 30)  # the gallery closes once the job starts
    finally:
        browser.close()
        stop.set()
        loop.join(10)
        viewer.close()
    assert model.runner.specs[-1].config.motion_seed == model.motion_search.seeds[2]
    if os.environ.get("STUDIO_BROWSER_SHOTS"):
        out = Path(os.environ["STUDIO_BROWSER_SHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "gallery.png", out / "browser-motions.png")
