"""Shared fixtures and marker handling. Markers (slow, gpu, qt) are registered in pyproject.toml."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is present on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    """Tests never touch the user's real data folder."""
    monkeypatch.setenv("FOURD_HOME", str(tmp_path_factory.mktemp("fourd_home")))


@pytest.fixture
def make_studio_model(tmp_path, monkeypatch):
    """``make(runner=None, viewer=True)``: a Qt-free studio model on the in-process jobs stand-in (runs under
    ``tmp_path / "runs"``) with a recording viewer; the user data folder is ``tmp_path / "home"``."""
    from studio_jobs_standin import REGISTRY, JobRunner, RecordingViewer, ensure_jobs_module

    from studio.model import StudioModel

    ensure_jobs_module(monkeypatch)
    monkeypatch.setenv("FOURD_HOME", str(tmp_path / "home"))

    def make(runner=None, viewer: bool = True):
        return StudioModel(viewer=RecordingViewer() if viewer else None,
                           runner=runner if runner is not None else JobRunner(tmp_path / "runs"), registry=REGISTRY)

    return make
