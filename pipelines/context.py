"""The run context a pipeline receives: device, seed, run folder, cancel flag and checkpoints.

A pipeline that can be resumed saves its state between steps and starts from the last one:

    start = 0
    if (ckpt := context.last_checkpoint()) is not None:
        model.load_state_dict(ckpt.state); start = ckpt.step
    for step in range(start, total):
        ...one step...
        context.step_done(step + 1, lambda: model.state_dict())   # checkpoints when due, stops on cancel

Randomness that must repeat on resume is drawn from ``context.generator(offset=step)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from pipelines.checkpoints import Checkpoint, latest_checkpoint, save_checkpoint


class Cancelled(Exception):
    """Raised inside a pipeline when the user asked to stop; the runner checkpoints and exits."""


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


class _NeverCancelled:
    def is_set(self) -> bool:
        return False


@dataclass
class RunContext:
    """Everything a pipeline needs from the outside world.

    ``cancel`` is any object with ``is_set()`` (a ``threading.Event`` or ``multiprocessing.Event``);
    pipelines call :meth:`check_cancelled` once per step. ``priors`` maps a prior role to the
    registry model chosen for it (``--prior ROLE=NAME``). Checkpoints are due every
    ``checkpoint_every_steps`` steps or ``checkpoint_every_s`` seconds, whichever comes first,
    and when cancel is requested.
    """

    run_dir: Path
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cancel: CancelFlag = field(default_factory=_NeverCancelled)
    priors: dict[str, str] = field(default_factory=dict)
    checkpoint_every_steps: int | None = 100
    checkpoint_every_s: float | None = 60.0
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.device = torch.device(self.device)
        self._last_save_time = time.monotonic()
        self._last_save_step: int | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def result_dir(self) -> Path:
        """Where the final scene goes (the runner saves a scene the pipeline returns here)."""
        return self.run_dir / "result"

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    # ---------------------------------------------------------------- checkpoints
    def checkpoint(self, state: dict[str, Tensor], step: int, extra: dict[str, Any] | None = None) -> Path:
        """Save the state after ``step`` steps atomically (safetensors; ``extra`` as JSON metadata).

        A failed write (full disk) raises :class:`pipelines.atomic_files.DiskWriteError` and leaves
        the previous checkpoint valid.
        """
        path = save_checkpoint(self.checkpoint_dir, state, step, extra, keep=self.keep_checkpoints)
        self._last_save_time = time.monotonic()
        self._last_save_step = step
        return path

    def last_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint of this run (tensors on CPU), None for a fresh run; raises
        :class:`pipelines.checkpoints.CheckpointError` with a clear message when it is corrupt."""
        ckpt = latest_checkpoint(self.checkpoint_dir)
        if ckpt is not None:
            self._last_save_step = ckpt.step
        return ckpt

    def checkpoint_due(self, step: int, cancelled: bool | None = None) -> bool:
        if step == self._last_save_step:
            return False
        if self.cancel.is_set() if cancelled is None else cancelled:
            return True
        if self.checkpoint_every_steps and step % self.checkpoint_every_steps == 0:
            return True
        return bool(self.checkpoint_every_s is not None
                    and time.monotonic() - self._last_save_time >= self.checkpoint_every_s)

    def checkpoint_if_due(self, step: int, state: Callable[[], dict[str, Tensor]],
                          extra: Callable[[], dict[str, Any]] | None = None) -> bool:
        """Call after each step with the steps completed; saves when due or when cancel was asked.
        ``state`` and ``extra`` are called only when a save happens."""
        if not self.checkpoint_due(step):
            return False
        self.checkpoint(state(), step, extra() if extra else None)
        return True

    def step_done(self, step: int, state: Callable[[], dict[str, Tensor]],
                  extra: Callable[[], dict[str, Any]] | None = None) -> None:
        """Call after each step with the steps completed: saves a checkpoint when one is due, and
        when cancel was asked saves one and raises :class:`Cancelled`. The flag is read once, so a
        cancel never slips in between the save and the stop."""
        cancelled = self.cancel.is_set()
        if self.checkpoint_due(step, cancelled):
            self.checkpoint(state(), step, extra() if extra else None)
        if cancelled:
            raise Cancelled()

    def generator(self, offset: int = 0, device: torch.device | str | None = None) -> torch.Generator:
        """A generator seeded from the run seed; ``offset`` separates independent streams."""
        g = torch.Generator(device=device or "cpu")
        g.manual_seed(self.seed * 1_000_003 + offset)
        return g


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
