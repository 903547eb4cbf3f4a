"""Shared fixtures and marker handling. Markers (slow, gpu, qt) are registered in pyproject.toml."""

from __future__ import annotations

import os

import pytest

from renderers.allocator import set_openmp_wait_policy

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
set_openmp_wait_policy()  # as the entry points do; the test run's job workers compete with it for 2 cores


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


_SESSION_THREADS: list[int] = []


@pytest.fixture(autouse=True)
def _torch_threads_restored(request):
    """Every test starts with the session's intra-op thread count: a test (or code under test) that leaves
    torch on one thread would otherwise change the float summation order, and so the results, of every test
    after it (the Gaussian fitting test scores 24 dB instead of 32 on one thread)."""
    import torch

    if not _SESSION_THREADS:
        _SESSION_THREADS.append(torch.get_num_threads())
    torch.set_num_threads(_SESSION_THREADS[0])
    yield
    if torch.get_num_threads() != _SESSION_THREADS[0]:
        print(f"\n{request.node.nodeid} left torch on {torch.get_num_threads()} thread(s)")
        torch.set_num_threads(_SESSION_THREADS[0])


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
