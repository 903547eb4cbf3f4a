"""The main window, offscreen: it opens, scrubbing moves the viewer, jobs run from the create panel,
and bad input shows an error dialog instead of crashing."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6.QtWebEngineWidgets")

from studio.webengine import apply_chromium_flags  # noqa: E402

apply_chromium_flags()  # before pytest-qt creates the QApplication

import PySide6.QtWebEngineWidgets  # noqa: E402, F401  (must load before the QApplication exists)
from PySide6.QtCore import Qt  # noqa: E402
from studio_jobs_standin import REGISTRY, JobRunner, ensure_jobs_module  # noqa: E402

from studio.demo_scene import BouncingBall  # noqa: E402
from studio.model import StudioModel  # noqa: E402
from studio.viewer import Viewer  # noqa: E402

pytestmark = pytest.mark.qt


@pytest.fixture(scope="module")
def viewer():
    v = Viewer()
    yield v
    v.close()


@pytest.fixture
def window(qtbot, viewer, tmp_path, monkeypatch):
    from studio.window import MainWindow

    ensure_jobs_module(monkeypatch)
    model = StudioModel(viewer=viewer, runner=JobRunner(tmp_path / "runs"), registry=REGISTRY)
    win = MainWindow(model, viewer.url)
    win.confirm_on_close = False  # tests that leave jobs or edits behind are not asked about them on teardown
    qtbot.addWidget(win)
    win.show()
    model.set_scene(BouncingBall(count=300), "demo")
    yield win
    win.close()


def test_the_window_opens_with_its_panels_and_loads_the_viewer(qtbot, viewer):
    from studio.window import MainWindow

    model = StudioModel(viewer=viewer)
    win = MainWindow(model, viewer.url)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.view.loadFinished, timeout=60_000) as loaded:
        win.show()
    assert loaded.args == [True]
    assert win.view.url().toString().rstrip("/") == viewer.url
    assert win.create_panel.isVisible() and win.jobs_panel.isVisible() and win.timeline_bar.isVisible()
    # without the exporters the export action is off and says why
    if not model.export_available():
        assert not win.export_action.isEnabled() and "not available" in win.export_action.toolTip()


def test_scrubbing_the_slider_changes_the_viewer_time(window, viewer):
    slider = window.timeline_bar.slider
    slider.setValue(30)
    assert window.model.timeline.frame == 30
    assert viewer.wait_idle()
    assert viewer.displayed_time == pytest.approx(30 / 47)
    assert "frame 31/48" in window.timeline_bar.readout.text()
    slider.setValue(0)
    assert viewer.wait_idle() and viewer.displayed_time == 0.0


def test_play_advances_frames(window, qtbot):
    window.set_fps(100)
    window.timeline_bar.play.setChecked(True)
    qtbot.waitUntil(lambda: window.model.timeline.frame >= 5, timeout=5000)
    window.timeline_bar.play.setChecked(False)
    assert not window.model.timeline.playing


def test_a_bad_image_shows_an_error_dialog_not_a_crash(window, tmp_path):
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"\x00\x01 not a jpeg at all")
    assert window.set_input_image(str(bad)) is False
    assert window.error_box is not None and window.error_box.isVisible()
    assert "holiday.jpg" in window.errors[-1] and "not an image" in window.errors[-1]
    window.error_box.close()
    assert window.set_input_file(str(tmp_path / "missing.mp4")) is False  # routed to the video picker
    assert "does not exist" in window.errors[-1]
    assert window.open_scene(str(tmp_path)) is False  # a folder that is not a scene
    assert "not a saved scene" in window.errors[-1]
    assert window.isVisible()


def test_generate_runs_a_job_into_the_viewer_and_cancel_resume_work(window, viewer, qtbot):
    panel = window.create_panel
    assert panel.generate.isEnabled()
    panel.prompt.setPlainText("a blue ball")
    panel.preset.setCurrentText("standard")
    qtbot.mouseClick(panel.generate, Qt.MouseButton.LeftButton)
    assert len(window.model.jobs) == 1
    view = window.model.jobs[0]
    qtbot.waitUntil(lambda: view.fraction > 0.1, timeout=10_000)
    card = window.jobs_panel.cards[id(view)]
    qtbot.mouseClick(card.cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.status == "cancelled", timeout=10_000)
    qtbot.waitUntil(lambda: card.resume.isVisible(), timeout=2000)
    qtbot.mouseClick(card.resume, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.status == "done", timeout=20_000)
    qtbot.waitUntil(lambda: window.model.scene_source == view.scene_path, timeout=5000)
    assert card.progress.value() == 1000 and card.preview.pixmap() is not None
    assert viewer.wait_idle() and viewer.scene is window.model.scene and viewer.error is None


def test_input_pickers_follow_the_method_and_show_a_thumbnail(window, tmp_path):
    import imageio.v3 as iio
    import numpy as np

    panel = window.create_panel
    image_picker, video_picker = panel.pickers["image"], panel.pickers["video"]
    panel.method.setCurrentIndex(panel.method.findData("ball-video"))
    assert video_picker.isVisibleTo(window) and not image_picker.isVisibleTo(window)
    clip = tmp_path / "wave.gif"
    iio.imwrite(clip, np.stack([np.full((24, 24, 3), 60 * i, np.uint8) for i in range(3)]))
    assert window.set_input_file(str(clip))
    assert video_picker.thumbnail.isVisibleTo(window) and window.model.form.inputs["video"] == str(clip)
    panel.method.setCurrentIndex(panel.method.findData("ball-image"))
    assert image_picker.isVisibleTo(window) and not video_picker.isVisibleTo(window)


def test_an_empty_prompt_is_an_error_dialog(window):
    window.create_panel.prompt.setPlainText("")
    window.generate()
    assert "needs a prompt" in window.errors[-1] and not window.model.jobs


def test_advanced_fields_come_from_the_config_and_override_it(window, qtbot):
    panel = window.create_panel
    panel.preset.setCurrentText("standard")
    assert set(panel.advanced_edits) == {"steps", "step_s"}
    assert panel.advanced_edits["steps"].placeholderText() == "40"
    panel.advanced.setChecked(True)
    panel.advanced_edits["steps"].setText("2")
    panel.prompt.setPlainText("a ball")
    window.generate()
    view = window.model.jobs[-1]
    assert view.job.spec.config.steps == 2
    qtbot.waitUntil(lambda: view.status == "done", timeout=20_000)
    card = window.jobs_panel.cards[id(view)]
    qtbot.waitUntil(lambda: card.loss.isVisible(), timeout=5000)


def test_sparkline_draws_the_curve(qapp):
    import numpy as np

    from studio.screenshots import colourful_pixels
    from studio.window import sparkline

    def drawn(values):
        image = sparkline(values).toImage()
        from PySide6.QtGui import QImage

        image = image.convertToFormat(QImage.Format.Format_RGB888)
        data = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * image.height())
        rows = data.reshape(image.height(), image.bytesPerLine())[:, : image.width() * 3]
        return colourful_pixels(rows.reshape(image.height(), image.width(), 3))

    assert drawn([1.0, 0.5, 0.1, 0.05]) > 20
    assert drawn([]) == 0


def test_export_writes_a_glb_that_trimesh_reads(window, qtbot, tmp_path):
    if not window.model.export_available():
        pytest.skip("renderers.export is not installed yet")
    import trimesh

    assert window.export_action.isEnabled()
    dialog = window.export()
    dialog.format.setCurrentText("glb")
    dialog.resolution.setValue(32)
    dialog.path.setText(str(tmp_path / "ball.glb"))
    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.written is not None or len(window.errors) > 0, timeout=60_000)
    assert not window.errors, window.errors
    assert dialog.written == tmp_path / "ball.glb" and dialog.open_folder.isEnabled()
    mesh = trimesh.load(dialog.written, force="mesh")
    assert len(mesh.vertices) > 100
    # exporting again without "replace" is refused with a sentence, and leaves the file alone
    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(window.errors) > 0, timeout=60_000)
    assert (tmp_path / "ball.glb").stat().st_size > 0
    dialog.close()


class MeshBall:
    """The demo ball without splats: the viewer shows its mesh proxy, then its own render at rest."""

    kind = "test-mesh-ball"
    time_range = (0.0, 1.0)

    def __init__(self) -> None:
        self.ball = BouncingBall(count=10)
        self.renders: list[float] = []

    def to_mesh(self, t, resolution=128):
        return self.ball.to_mesh(t, resolution)

    def render(self, cameras, t):
        self.renders.append(t)
        return self.ball.render(cameras, t)

    def save(self, directory):  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def load(cls, directory):  # pragma: no cover
        raise NotImplementedError


def test_a_scene_without_splats_is_rendered_at_the_resting_camera(window, viewer, qtbot):
    qtbot.waitUntil(lambda: viewer.client_count > 0, timeout=60_000)
    scene = MeshBall()
    window.model.set_scene(scene)
    qtbot.waitUntil(lambda: viewer.rest_render is not None, timeout=30_000)
    assert viewer.rest_render[0] == window.model.timeline.t and scene.renders
    assert viewer._handle is not None and viewer._handle.visible is False  # the proxy steps aside
    window.timeline_bar.slider.setValue(40)  # scrubbing brings the proxy back, then renders the new time
    qtbot.waitUntil(lambda: viewer.rest_render is not None and viewer.rest_render[0] == pytest.approx(40 / 47),
                    timeout=30_000)
    window.model.set_scene(BouncingBall(count=100))  # splat scenes need no full render
    assert viewer.wait_idle()
    assert viewer.rest_render is None and viewer._handle.visible


def test_the_prompt_box_warns_about_unknown_words_without_blocking(window):
    panel = window.create_panel
    panel.prompt.setPlainText("a red ball bouncing")
    assert not panel.prompt_warning.isVisibleTo(window)
    panel.prompt.setPlainText("a red dragon bouncing")
    assert panel.prompt_warning.isVisibleTo(window) and "'dragon'" in panel.prompt_warning.text()
    assert panel.generate.isEnabled()
    assert "torus (ring, donut)" in panel.prompt.toolTip()  # what it does know, on hover
    panel.prompt.setPlainText("a red ball that orbits")  # a weak motion, but the stand-in samples no field prior
    assert not panel.prompt_warning.isVisibleTo(window)


def test_projects_save_open_and_list_recent_from_the_file_menu(window, tmp_path, monkeypatch):
    monkeypatch.setenv("FOURD_HOME", str(tmp_path / "home"))
    panel, bar = window.create_panel, window.timeline_bar
    panel.prompt.setPlainText("a green cube spinning")
    panel.seed.setValue(11)
    bar.fps.setValue(12)
    bar.loop.setChecked(False)
    bar.slider.setValue(20)
    assert window.save_project_as(str(tmp_path / "spinning cube"))
    assert window.windowTitle().startswith("spinning cube")

    window.file_actions["new"].trigger()
    assert panel.prompt.toPlainText() == "" and window.windowTitle() == "fourd studio"
    window._fill_recent_menu()
    recent = [a for a in window.recent_menu.actions() if a.data()]
    assert [a.text() for a in recent] == ["spinning cube"]
    recent[0].trigger()
    assert panel.prompt.toPlainText() == "a green cube spinning" and panel.seed.value() == 11
    assert bar.fps.value() == 12 and not bar.loop.isChecked() and bar.slider.value() == 20


def test_a_folder_that_is_not_a_project_is_an_error_dialog(window, tmp_path, monkeypatch):
    monkeypatch.setenv("FOURD_HOME", str(tmp_path / "home"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "project.toml").write_text("[[[ broken")
    assert window.open_project(str(tmp_path / "notes")) is False
    assert window.error_box.isVisible() and window.errors[-1] == (
        "The project file in 'notes' is damaged and cannot be read.")


def test_the_turntable_button_orbits_and_toggles_off(window, viewer):
    action = window.camera_actions["turntable"]
    action.trigger()
    assert action.isChecked() and viewer.turntable_on and window.model.camera == "turntable"
    action.trigger()
    assert not action.isChecked() and not viewer.turntable_on and window.model.camera == "reset"


def answer_dialogs(monkeypatch, answers: list[str]) -> list[str]:
    """Make each QMessageBox.exec click the button with the next text in ``answers``; the questions asked."""
    from PySide6.QtWidgets import QMessageBox

    asked = []

    def exec_(box):
        asked.append(box.text())
        wanted = answers.pop(0)
        button = next(b for b in box.buttons() if b.text().replace("&", "") == wanted)
        button.click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    return asked


def test_closing_asks_to_save_and_about_running_jobs(window, qtbot, monkeypatch, tmp_path):
    monkeypatch.setenv("FOURD_HOME", str(tmp_path / "home"))
    panel = window.create_panel
    panel.prompt.setPlainText("a blue ball")
    panel.preset.setCurrentText("standard")  # 40 steps of 50 ms: still running when the window closes
    window.generate()
    window.confirm_on_close = True
    asked = answer_dialogs(monkeypatch, ["Cancel"])
    assert not window.close() and window.isVisible()  # cancelled at the first question
    assert asked == ["Save this project before closing?"]

    asked = answer_dialogs(monkeypatch, ["Save", "Keep running"])
    monkeypatch.setattr("studio.window.QFileDialog.getExistingDirectory", lambda *a: str(tmp_path / "kept"))
    assert window.close() and not window.isVisible()
    assert asked == ["Save this project before closing?", "1 job is still running."]
    assert (tmp_path / "kept" / "project.toml").is_file() and window.model.keep_jobs_on_exit
    assert window.model.jobs[0].status in ("queued", "running")  # not cancelled: it runs in the background
    window.model.shutdown()  # what the app does after the window closes: waits for the kept job
    qtbot.waitUntil(lambda: window.model.jobs[0].status == "done", timeout=20_000)
    window.confirm_on_close = False


def test_closing_a_saved_project_with_a_job_can_cancel_it(window, qtbot, monkeypatch, tmp_path):
    monkeypatch.setenv("FOURD_HOME", str(tmp_path / "home"))
    panel = window.create_panel
    panel.prompt.setPlainText("a blue ball")
    panel.preset.setCurrentText("standard")
    window.generate()
    assert window.save_project_as(str(tmp_path / "p"))
    window.confirm_on_close = True
    asked = answer_dialogs(monkeypatch, ["Cancel jobs"])
    assert window.close()
    assert asked == ["1 job is still running."]  # saved: nothing to save
    assert not window.model.keep_jobs_on_exit  # the app's shutdown cancels it (test_studio_close checks that)
    window.model.cancel(window.model.jobs[0])
    qtbot.waitUntil(lambda: window.model.jobs[0].status == "cancelled", timeout=20_000)
    window.confirm_on_close = False
