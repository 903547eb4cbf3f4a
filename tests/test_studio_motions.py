"""Motion picking (Diffusion²): candidate clips drawn off the UI thread, and the pick starts the full job."""

from __future__ import annotations

import numpy as np
import pytest
from studio_jobs_standin import RecordingRunner

from assets import asset_path
from studio.model import StudioError, StudioModel

TINY = {"sampling.frames": "3", "sampling.reference_steps": "2", "sampling.rollback_steps": "1"}


@pytest.fixture
def model():
    model = StudioModel(runner=RecordingRunner())
    model.form.pipeline, model.form.seed = "image-to-4d", 5
    model.form.inputs = {"image": str(asset_path("examples", "red_ball.png"))}
    model.form.overrides = dict(TINY)
    return model


def test_only_diffusion2_image_and_text_methods_offer_motions(model):
    assert model.motion_kind("image-to-4d") == "image"
    assert model.motion_kind("text-to-4d-d2") == "prompt"
    assert model.motion_kind("video-to-4d") is None  # a video brings its own motion
    assert model.motion_kind("text-to-4d") is None
    model.form.pipeline = "text-to-4d"
    with pytest.raises(StudioError, match="no motions to pick"):
        model.find_motions()


def test_candidates_arrive_in_the_background_and_the_pick_starts_the_job(model):
    search = model.find_motions(count=2)
    assert search.seeds == [5 * 7 + 2, 5 * 7 + 2 + 1000]  # the first is the motion the run takes unpicked
    assert search.wait(120) == "done", search.error
    assert [c.seed for c in search.candidates] == search.seeds
    first, second = (c.clip for c in search.candidates)
    assert first.shape == (3, 32, 32, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)  # different seeds, different motions
    assert np.abs(first[0].astype(int) - first[-1].astype(int)).mean() > 0  # a clip, not a still
    model.form.seed = 9  # edits after the search do not change the job the candidates were drawn for
    view = model.pick_motion(search.seeds[1])
    spec = model.runner.specs[-1]
    assert spec.seed == 5 and spec.inputs == search.spec.inputs
    assert spec.config.motion_seed == search.seeds[1] and spec.config.sampling.frames == 3
    assert model.jobs[-1] is view and model.form.overrides["motion_seed"] == str(search.seeds[1])


def test_a_search_can_be_cancelled_and_errors_are_a_sentence(model, tmp_path):
    search = model.find_motions(count=3)
    search.cancel()
    assert search.wait(120) in ("cancelled", "done")  # may finish a clip that was under way
    assert len(search.candidates) < 3 or search.status == "done"
    model.form.overrides = {**TINY, "video_prior": "no-such-prior"}
    failed = model.find_motions(count=1)
    assert failed.wait(60) == "failed" and "no-such-prior" in failed.error and not failed.candidates


@pytest.mark.qt
def test_the_gallery_shows_clips_and_a_pick_starts_the_job(qtbot):
    pytest.importorskip("PySide6.QtWebEngineWidgets")
    from studio.webengine import apply_chromium_flags

    apply_chromium_flags()  # as the other Qt tests: the web engine must load before the QApplication
    import PySide6.QtWebEngineWidgets  # noqa: F401
    from PySide6.QtCore import Qt

    from studio.window import MainWindow

    model = StudioModel(runner=RecordingRunner())
    window = MainWindow(model, None)
    window.confirm_on_close = False
    qtbot.addWidget(window)
    panel = window.create_panel
    panel.method.setCurrentIndex(panel.method.findData("text-to-4d"))
    assert not panel.motions.isVisibleTo(window)  # 4D-fy has no motion to pick
    panel.method.setCurrentIndex(panel.method.findData("image-to-4d"))
    assert panel.motions.isVisibleTo(window)
    assert panel.pickers["image"].choose(str(asset_path("examples", "red_ball.png")))
    panel.advanced.setChecked(True)
    for key, text in TINY.items():
        panel.advanced_edits[key].setText(text)
    qtbot.mouseClick(panel.motions, Qt.MouseButton.LeftButton)
    gallery = window.motion_gallery
    qtbot.waitUntil(lambda: len(gallery.cards) == 4 and gallery.search.finished, timeout=120_000)
    # The status line follows at the gallery's next tick (the search can end just after one).
    qtbot.waitUntil(lambda: "pick one" in gallery.status.text(), timeout=2000)
    label, frames, pick = gallery.cards[2]
    assert len(frames) == 3 and not label.pixmap().isNull()
    first = label.pixmap().toImage()
    qtbot.waitUntil(lambda: label.pixmap().toImage() != first, timeout=10_000)  # the clip plays
    qtbot.mouseClick(pick, Qt.MouseButton.LeftButton)
    seed = gallery.search.seeds[2]
    assert model.runner.specs[-1].config.motion_seed == seed and not gallery.isVisible()
    assert panel.advanced_edits["motion_seed"].text() == str(seed)
