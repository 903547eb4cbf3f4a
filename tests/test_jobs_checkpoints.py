"""Checkpoints through RunContext: atomic writes, a full disk, corruption, optimiser state."""

import errno
import os
import threading

import pytest
import torch

from pipelines import atomic_files
from pipelines.atomic_files import DiskWriteError
from pipelines.checkpoints import (
    CheckpointError,
    list_checkpoints,
    load_optimizer_state,
    optimizer_state,
    verify_latest_checkpoint,
)
from pipelines.context import Cancelled, RunContext


def _ctx(tmp_path, **kwargs):
    return RunContext(tmp_path, seed=3, checkpoint_every_steps=None, checkpoint_every_s=None, **kwargs)


def test_checkpoint_round_trip_and_only_the_newest_are_kept(tmp_path):
    ctx = _ctx(tmp_path)
    assert ctx.last_checkpoint() is None
    for step in (10, 20, 30):
        ctx.checkpoint({"w": torch.full((3, 2), float(step)), "n": torch.tensor([step])}, step, {"note": f"s{step}"})
    assert [p.name for p in list_checkpoints(ctx.checkpoint_dir)] == ["step-00000020.safetensors",
                                                                      "step-00000030.safetensors"]
    ckpt = _ctx(tmp_path).last_checkpoint()
    assert ckpt.step == 30 and ckpt.extra == {"note": "s30"}
    assert torch.equal(ckpt.state["w"], torch.full((3, 2), 30.0)) and ckpt.state["n"].item() == 30


def test_a_failed_write_keeps_the_previous_checkpoint_valid(tmp_path, monkeypatch):
    ctx = _ctx(tmp_path)
    ctx.checkpoint({"w": torch.ones(1000)}, 10)
    real_write = os.write

    def disk_fills_up(fd, data):  # half of the data lands, then the disk is full
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_files.os, "write", disk_fills_up)
    with pytest.raises(DiskWriteError, match="disk is full"):
        ctx.checkpoint({"w": torch.full((1000,), 2.0)}, 20)
    monkeypatch.undo()
    ckpt = ctx.last_checkpoint()
    assert ckpt.step == 10 and torch.equal(ckpt.state["w"], torch.ones(1000))
    assert sorted(p.name for p in ctx.checkpoint_dir.iterdir()) == ["step-00000010.safetensors"]  # no debris


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupt_checkpoint_gives_a_clear_error(tmp_path, damage):
    ctx = _ctx(tmp_path)
    path = ctx.checkpoint({"w": torch.ones(4096)}, 5)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x13" * 64)
    with pytest.raises(CheckpointError, match=r"step-00000005.safetensors' is corrupt .*delete it"):
        ctx.last_checkpoint()
    with pytest.raises(CheckpointError, match="is corrupt"):
        verify_latest_checkpoint(ctx.checkpoint_dir)


def test_checkpoints_are_due_by_steps_time_and_cancel(tmp_path):
    flag = threading.Event()
    ctx = RunContext(tmp_path, cancel=flag, checkpoint_every_steps=5, checkpoint_every_s=None)
    saved = [step for step in range(1, 13) if ctx.checkpoint_if_due(step, lambda: {"x": torch.zeros(1)})]
    assert saved == [5, 10]
    flag.set()
    assert ctx.checkpoint_if_due(12, lambda: {"x": torch.zeros(1)})
    assert not ctx.checkpoint_due(12)  # already saved at this step
    timed = RunContext(tmp_path / "t", checkpoint_every_steps=None, checkpoint_every_s=0.0)
    assert timed.checkpoint_due(1)


def test_step_done_saves_then_stops_when_cancelled(tmp_path):
    flag = threading.Event()
    ctx = RunContext(tmp_path, cancel=flag, checkpoint_every_steps=None, checkpoint_every_s=None)
    ctx.step_done(1, lambda: {"x": torch.zeros(1)})
    assert ctx.last_checkpoint() is None
    flag.set()
    with pytest.raises(Cancelled):
        ctx.step_done(2, lambda: {"x": torch.full((1,), 2.0)})
    assert ctx.last_checkpoint().step == 2


def test_optimizer_state_survives_a_checkpoint_exactly(tmp_path):
    def make():
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(5))
        return p, torch.optim.Adam([p], lr=0.1)

    def step(p, opt, k):
        opt.zero_grad()
        ((p - k) ** 2).sum().backward()
        opt.step()

    p, opt = make()
    for k in range(3):
        step(p, opt, k)
    tensors, meta = optimizer_state(opt)
    _ctx(tmp_path).checkpoint({"p": p, **tensors}, 3, {"optimizer": meta})
    for k in range(3, 6):
        step(p, opt, k)

    q, opt2 = make()
    ckpt = _ctx(tmp_path).last_checkpoint()
    with torch.no_grad():
        q.copy_(ckpt.state["p"])
    load_optimizer_state(opt2, ckpt.state, ckpt.extra["optimizer"])
    for k in range(3, 6):
        step(q, opt2, k)
    assert torch.equal(p, q)
