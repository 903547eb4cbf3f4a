"""The run context a pipeline receives: device, seed, run folder and the cancel flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch


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
    pipelines call :meth:`check_cancelled` once per step.
    """

    run_dir: Path
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cancel: CancelFlag = field(default_factory=_NeverCancelled)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.device = torch.device(self.device)

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    def generator(self, offset: int = 0, device: torch.device | str | None = None) -> torch.Generator:
        """A generator seeded from the run seed; ``offset`` separates independent streams."""
        g = torch.Generator(device=device or "cpu")
        g.manual_seed(self.seed * 1_000_003 + offset)
        return g


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
