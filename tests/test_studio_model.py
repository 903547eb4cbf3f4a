"""The studio's Qt-free model: timeline, create form validation, jobs lifecycle, scenes, export."""

from __future__ import annotations

import numpy as np
import pytest
from studio_jobs_standin import poll_until

from studio.demo_scene import BouncingBall
from studio.model import StudioError, StudioModel, Timeline, check_image


@pytest.fixture
def model(make_studio_model):
    return make_studio_model()


def test_timeline_plays_loops_and_stops():
    timeline = Timeline(frames=3, time_range=(0.0, 1.0))
    assert not timeline.tick()  # paused
    timeline.playing = True
    assert timeline.tick() and timeline.t == 0.5
    assert timeline.tick() and timeline.t == 1.0
    assert timeline.tick() and timeline.frame == 0  # loops
    timeline.loop = False
    timeline.set_frame(2)
    assert not timeline.tick() and not timeline.playing
    assert timeline.set_time(0.3) and timeline.frame == 1
    assert not timeline.set_frame(99) or timeline.frame == 2
    assert "frame 3/3" in timeline.readout()


def test_scrubbing_moves_the_viewer_time(model):
    model.set_scene(BouncingBall(count=50), "demo")
    model.set_frame(12)
    assert model.viewer.times[-1] == pytest.approx(12 / 47)
    seen = []
    model.time_changed.connect(seen.append)
    model.set_time(1.0)
    assert seen == [1.0] and model.viewer.times[-1] == 1.0


def test_playback_advances_only_with_a_scene(model):
    model.set_playing(True)
    assert not model.timeline.playing
    model.set_scene(BouncingBall(count=50))
    model.set_playing(True)
    model.tick()
    model.tick()
    assert model.timeline.frame == 2 and len(model.viewer.times) == 2


def test_the_form_names_what_is_missing(model, tmp_path):
    assert [p.name for p in model.pipelines()] == ["ball", "ball-image", "ball-video"]
    model.form.pipeline, model.form.prompt = "ball", "   "
    with pytest.raises(StudioError, match="needs a prompt"):
        model.build_spec()
    model.form.pipeline = "nope"
    with pytest.raises(StudioError, match="Unknown method 'nope'"):
        model.build_spec()
    model.form.pipeline, model.form.prompt, model.form.preset = "ball", "a ball", "gigantic"
    with pytest.raises(StudioError, match="gigantic"):
        model.build_spec()
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"this is not a png")
    model.form.pipeline, model.form.preset, model.form.inputs = "ball-image", "preview", {"image": str(bad)}
    with pytest.raises(StudioError, match="not an image the studio can read"):
        model.build_spec()


def test_check_image_accepts_a_real_picture(tmp_path):
    import imageio.v3 as iio

    path = tmp_path / "ok.png"
    iio.imwrite(path, np.zeros((32, 24, 4), np.uint8))
    assert check_image(path).shape == (32, 24, 3)
    with pytest.raises(StudioError, match="does not exist"):
        check_image(tmp_path / "missing.png")


def test_a_job_runs_from_the_form_to_a_scene_in_the_viewer(model):
    changes = []
    model.jobs_changed.connect(lambda: changes.append(1))
    model.form.pipeline, model.form.prompt, model.form.preset = "ball", "a red ball", "preview"
    view = model.generate()
    assert poll_until(model, lambda: view.status == "done")
    assert view.fraction == 1.0 and view.stage == "fit"
    assert view.loss_history[-1] == pytest.approx(1 / 6)
    assert view.preview.shape == (16, 32, 3) and view.preview_grid == (1, 2)
    assert model.scene is not None and model.scene.kind == "demo-ball"
    assert model.viewer.shown[-1][0] is model.scene
    assert changes


def test_cancel_then_resume_finishes_from_the_checkpoint(model):
    model.form.pipeline, model.form.prompt, model.form.preset = "ball", "a ball", "standard"
    view = model.generate()
    assert poll_until(model, lambda: view.fraction > 0.1)
    model.cancel(view)
    assert poll_until(model, lambda: view.status == "cancelled")
    assert view.resumable and view.fraction < 1.0
    done_before = int((view.job.run_dir / "checkpoint.txt").read_text())
    model.resume(view)
    assert poll_until(model, lambda: view.status == "done")
    assert done_before > 0 and view.fraction == 1.0
    with pytest.raises(StudioError, match="only cancelled or interrupted"):
        model.resume(view)


def test_opening_a_folder_that_is_not_a_scene_is_a_sentence(model, tmp_path):
    with pytest.raises(StudioError, match="not a saved scene"):
        model.open_scene(tmp_path)
    BouncingBall(count=30).save(tmp_path / "ball")
    model.open_scene(tmp_path / "ball")
    assert model.scene.count == 30


def test_export_is_unavailable_until_the_exporters_land(model):
    model.set_scene(BouncingBall(count=30))
    if StudioModel.export_available():
        pytest.skip("renderers.export exists; the Qt export test covers it")
    from studio.model import ExportRequest

    with pytest.raises(StudioError, match="not available"):
        model.export(ExportRequest(path="x.glb"))


def test_camera_presets_go_to_the_viewer(model):
    model.set_camera("top")
    assert model.viewer.cameras == ["top"]


def test_advanced_overrides_reach_the_config(model):
    fields = dict((key, value) for key, value, _ in model.advanced_fields("ball", "standard"))
    assert fields == {"steps": 40, "step_s": 0.05}
    model.form.pipeline, model.form.prompt, model.form.preset = "ball", "a ball", "standard"
    model.form.overrides = {"steps": "3", "step_s": " "}
    spec = model.build_spec()
    assert spec.config.steps == 3 and spec.config.step_s == 0.05
    model.form.overrides = {"steps": "many"}
    with pytest.raises(StudioError, match="'steps' must be an integer"):
        model.build_spec()


def test_video_inputs_are_checked_and_give_a_first_frame(model, tmp_path):
    import imageio.v3 as iio

    from studio.model import check_video, example_inputs

    clip = tmp_path / "clip.gif"
    iio.imwrite(clip, np.stack([np.full((16, 16, 3), 30 * i, np.uint8) for i in range(4)]))
    assert check_video(clip).shape == (16, 16, 3)
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(StudioError, match="not a video the studio can read"):
        check_video(bad)
    model.form.pipeline, model.form.inputs = "ball-video", {"video": str(clip)}
    assert model.build_spec().inputs == {"video": str(clip)}
    for path in example_inputs("video"):
        assert path.suffix in (".mp4", ".gif", ".webm", ".mov", ".avi")


class HeldFile:
    """A file (a named pipe) whose bytes arrive only when the test releases them: whoever reads it waits
    until then. If a reader holds up the test itself, the bytes come after ``give_up_s`` anyway and
    :attr:`written` tells that the test's next step came too late."""

    def __init__(self, path, data: bytes, give_up_s: float = 10.0) -> None:
        import os
        import threading

        os.mkfifo(path)
        self.written = threading.Event()
        self._release = threading.Event()

        def write():
            self._release.wait(give_up_s)
            with open(path, "wb") as pipe:
                pipe.write(data)
            self.written.set()

        threading.Thread(target=write, daemon=True).start()

    def release(self) -> None:
        self._release.set()


class FeedingRunner:
    """Jobs whose events the test sends itself (it plays the worker process)."""

    def __init__(self, runs_root) -> None:
        self.runs_root = runs_root

    def submit(self, spec, run_dir=None):
        from studio_jobs_standin import Job

        return Job(self.runs_root / "run-000", spec, status="running")

    def shutdown(self, cancel_running=True):
        pass


def test_a_preview_file_is_decoded_in_the_background_and_shows_at_a_later_poll(make_studio_model, tmp_path):
    import imageio.v3 as iio

    from pipelines.events import Preview

    model = make_studio_model(runner=FeedingRunner(tmp_path))
    model.form.pipeline, model.form.prompt = "ball", "a ball"
    view = model.generate()
    image = np.full((16, 32, 3), 7, np.uint8)
    png = HeldFile(tmp_path / "preview.png", iio.imwrite("<bytes>", image, extension=".png"))
    view.job._events.put(Preview("views", path=str(tmp_path / "preview.png"), grid=(1, 2), step=1))
    model.poll_jobs()
    assert not png.written.is_set()  # the poll returned while the PNG was still unreadable
    assert view.preview is None
    png.release()
    assert poll_until(model, lambda: view.preview is not None)
    assert view.preview.shape == (16, 32, 3) and view.preview_grid == (1, 2)
    # a preview that arrives as an image shows at once, and an older file decoded after it does not replace it
    slow = HeldFile(tmp_path / "older.png", iio.imwrite("<bytes>", np.zeros((8, 8, 3), np.uint8), extension=".png"))
    view.job._events.put(Preview("views", path=str(tmp_path / "older.png"), step=2))
    view.job._events.put(Preview("views", image=np.full((4, 4, 3), 9, np.uint8), step=3))
    model.poll_jobs()
    assert view.preview.shape == (4, 4, 3)
    slow.release()
    assert model.background.wait()
    assert view.preview.shape == (4, 4, 3)


def test_the_library_is_scanned_in_the_background(model):
    import imageio.v3 as iio

    runs = model.runner.runs_root
    (runs / "run-a" / "previews").mkdir(parents=True)
    (runs / "run-a" / "status.json").write_text('{"status": "cancelled"}')
    iio.imwrite(runs / "run-a" / "previews" / "0001.png", np.full((12, 18, 3), 200, np.uint8))
    (runs / "run-b").mkdir()
    status = HeldFile(runs / "run-b" / "status.json", b'{"status": "done"}')
    changes = []
    model.library_changed.connect(lambda: changes.append(1))
    model.refresh_library()
    assert not status.written.is_set() and not changes  # returned while a run folder was still unreadable
    status.release()
    assert poll_until(model, lambda: changes)
    assert sorted((run.run_dir.name, run.status) for run in model.library_runs) == [("run-a", "cancelled"),
                                                                                    ("run-b", "done")]
    assert model.library_thumbnails[runs / "run-a"].shape == (12, 18, 3)
    assert runs / "run-b" not in model.library_thumbnails
