"""Training checkpoints: one safetensors file per save, written atomically, the last few kept.

A checkpoint is a flat ``dict[str, Tensor]`` (weights, optimiser moments, generator states) plus
JSON ``extra`` (hyper-parameters, counters) stored in the file's metadata, so a single rename
publishes both. ``checkpoints/step-00000120.safetensors`` holds the state after 120 steps.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.atomic_files import write_atomic

if TYPE_CHECKING:  # torch is imported by the functions that need it: the job runner does not
    import torch
    from torch import Tensor

FORMAT = "fourd-checkpoint-1"
_NAME = re.compile(r"^step-(\d{8,})\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint cannot be read; the message names the file and what to do."""


@dataclass
class Checkpoint:
    step: int
    state: dict[str, Tensor]
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}.safetensors"


def save_checkpoint(directory: str | Path, state: dict[str, Tensor], step: int,
                    extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write the state after ``step`` steps and delete all but the newest ``keep`` checkpoints.

    Raises :class:`pipelines.atomic_files.DiskWriteError` when the file cannot be written; the
    previous checkpoints are then untouched.
    """
    from safetensors.torch import save

    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in state.items()}
    metadata = {"format": FORMAT, "step": str(int(step)), "extra": json.dumps(extra or {})}
    path = write_atomic(checkpoint_path(directory, step), save(tensors, metadata=metadata))
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files, oldest first (temporary files of interrupted writes are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    advice = "delete it to resume from the checkpoint before it, or start the run again"
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint '{path}' is corrupt ({_first_line(err)}): {advice}.") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a fourd checkpoint (format {metadata.get('format')!r}): {advice}.")
    try:
        step = int(metadata["step"])
        extra = json.loads(metadata.get("extra", "{}"))
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint '{path}' has corrupt metadata ({err}): {advice}.") from None
    return Checkpoint(step, state, extra, path)


def latest_checkpoint(directory: str | Path, device: torch.device | str = "cpu") -> Checkpoint | None:
    """The newest checkpoint, or None when there is none. A corrupt newest file is an error (not a
    silent fallback), so a resumed run never quietly redoes work the user thinks is saved."""
    paths = list_checkpoints(directory)
    return load_checkpoint(paths[-1], device) if paths else None


def verify_latest_checkpoint(directory: str | Path) -> None:
    """Check the newest checkpoint's header and metadata without reading its tensors (cheap, for a
    clear error before a resume starts); raises :class:`CheckpointError`."""
    from safetensors import SafetensorError, safe_open

    paths = list_checkpoints(directory)
    if not paths:
        return
    advice = "delete it to resume from the checkpoint before it, or start the run again"
    try:
        with safe_open(str(paths[-1]), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint '{paths[-1]}' is corrupt ({_first_line(err)}): {advice}.") from None
    if metadata.get("format") != FORMAT or "step" not in metadata:
        raise CheckpointError(f"'{paths[-1]}' is not a fourd checkpoint: {advice}.")


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# -------------------------------------------------------------------- optimiser state as tensors
def optimizer_state(optimizer: torch.optim.Optimizer, prefix: str = "optimizer") -> tuple[dict[str, Tensor], dict]:
    """A torch optimiser's state split into tensors (``{prefix}.{param}.{key}``) and JSON metadata."""
    import torch

    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for param_id, entries in sd["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{param_id}.{key}"] = value
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict,
                         prefix: str = "optimizer") -> None:
    """Inverse of :func:`optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            param_id, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(param_id), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
