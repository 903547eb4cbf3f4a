"""The toy job on a CUDA device: it fits, and a real out-of-memory error names the setting to lower."""

import pytest
import torch

from pipelines.jobs import JobSpec
from pipelines.jobs.run_folder import init_run_folder
from pipelines.jobs.worker import execute_job
from renderers.scene import load_scene

TINY = {"steps": 6, "image_size": 16, "views_per_step": 1, "samples_per_ray": 16, "resolution": 12,
        "preview_every": 3, "preview_size": 16}


@pytest.mark.gpu
def test_toy_job_runs_on_cuda(tmp_path):
    init_run_folder(tmp_path / "run", JobSpec.create("toy-fit", overrides=TINY))
    seen = []
    assert execute_job(tmp_path / "run", emit=seen.append, device="cuda") == "done", seen[-1]
    scene = load_scene(tmp_path / "run" / "result")
    assert torch.isfinite(scene.grid).all()


@pytest.mark.gpu
def test_cuda_out_of_memory_names_the_setting_to_lower(tmp_path):
    # 200k x 200k pixels: one ray tensor alone needs ~480 GB of GPU memory
    init_run_folder(tmp_path / "run", JobSpec.create("toy-fit", overrides={**TINY, "image_size": 200_000}))
    seen = []
    assert execute_job(tmp_path / "run", emit=seen.append, device="cuda") == "failed"
    assert seen[-1].message.startswith("the GPU ran out of memory: lower 'image_size'")
