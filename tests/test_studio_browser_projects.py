"""Projects in browser mode: save, new, open and recent from the viser GUI, through the same model."""

from __future__ import annotations

from studio_jobs_standin import REGISTRY, JobRunner, ensure_jobs_module

from studio.browser import BrowserControls
from studio.demo_scene import BouncingBall
from studio.model import StudioModel
from studio.viewer import Viewer


def test_the_browser_saves_opens_and_lists_projects(tmp_path, monkeypatch):
    ensure_jobs_module(monkeypatch)
    monkeypatch.setenv("FOURD_HOME", str(tmp_path / "home"))
    viewer = Viewer()
    try:
        model = StudioModel(viewer=viewer, runner=JobRunner(tmp_path / "runs"), registry=REGISTRY)
        BouncingBall(count=50).save(tmp_path / "ball")
        model.open_scene(tmp_path / "ball")
        controls = BrowserControls(model, viewer)
        assert controls.recent.value == BrowserControls.NO_RECENT
        assert controls.project_status.content == "Unsaved project."

        controls._locked(controls._save_project, None)  # no folder typed: a sentence, nothing written
        assert "no folder yet" in controls.notes[-1]
        controls.prompt.value, controls.seed.value = "a green ball bouncing", 12
        controls.fps.value = 12
        controls.project_folder.value = str(tmp_path / "bouncing")
        controls._locked(controls._save_project, None)
        assert (tmp_path / "bouncing" / "project.toml").is_file()
        assert controls.project_status.content == "Project: **bouncing**"
        assert controls.recent.options[0] == str((tmp_path / "bouncing").resolve())
        assert not model.has_unsaved_changes()

        controls._locked(controls._new_project, None)
        assert controls.prompt.value == "" and controls.project_folder.value == "" and model.scene is None

        controls.recent.value = controls.recent.options[0]  # as if chosen in the browser
        controls._recent_chosen()
        controls._locked(controls._open_project, None)
        assert controls.prompt.value == "a green ball bouncing" and controls.seed.value == 12
        assert controls.fps.value == 12 and model.scene is not None and model.scene.count == 50

        controls.project_folder.value = str(tmp_path / "ball")  # a scene folder, not a project
        controls._locked(controls._open_project, None)
        assert "is not a fourd studio project" in controls.notes[-1]
    finally:
        viewer.close()
