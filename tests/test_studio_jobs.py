"""The studio drives the real job runner: `toy-fit` from the create form to a voxel scene in the viewer.

Skips until the jobs layer (`pipelines.jobs`, `pipelines.registry`, `toy-fit`) is installed.
"""

from __future__ import annotations

import time

import pytest

from studio.model import StudioModel

pytestmark = pytest.mark.slow


def test_toy_fit_runs_from_the_form_to_the_viewer(tmp_path):
    jobs = pytest.importorskip("pipelines.jobs")
    registry = pytest.importorskip("pipelines.registry")
    if "toy-fit" not in {p.name for p in registry.list_pipelines()}:
        pytest.skip("the toy-fit pipeline is not installed")
    from studio.viewer import Viewer

    viewer = Viewer()
    runner = jobs.JobRunner(tmp_path / "runs")
    model = StudioModel(viewer=viewer, runner=runner)
    try:
        model.form.pipeline, model.form.preset = "toy-fit", "preview"
        model.form.overrides = {"steps": "12", "preview_every": "5", "scene_every": "6"}  # a reduced config
        start = time.monotonic()
        view = model.generate()
        deadline = time.monotonic() + 300
        while not view.finished and time.monotonic() < deadline:
            model.poll_jobs()
            time.sleep(0.1)
        model.poll_jobs()
        job_s = time.monotonic() - start
        assert view.status == "done", view.messages
        assert view.fraction == 1.0 and view.preview is not None
        assert model.scene is not None and model.scene.kind == "voxels"
        assert viewer.wait_idle(120) and viewer.error is None and viewer.scene is model.scene
        print(f"job {job_s:.1f} s, viewer frame {viewer.last_update_s:.2f} s")
        runs = model.library()
        assert [run.status for run in runs] == ["done"]
        model.set_scene(None)
        model.open_run(runs[0])
        assert model.scene is not None and model.scene.kind == "voxels"
    finally:
        model.shutdown()
        viewer.close()
