"""Bundled data: prior checkpoints (safetensors + JSON config) and example inputs.

Files are found through :func:`asset_path`, which works from a source checkout, an editable
install and an installed wheel alike.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def asset_path(*parts: str) -> Path:
    """Path of a bundled file or folder, e.g. ``asset_path("examples", "red_ball.png")``.

    Raises ``FileNotFoundError`` naming the asset when it is not bundled.
    """
    root = resources.files(__name__)
    target = root.joinpath(*parts)
    if not target.is_file() and not target.is_dir():
        raise FileNotFoundError(f"bundled asset '{'/'.join(parts)}' is missing from this installation")
    return Path(str(target))


def bundled_checkpoints() -> list[Path]:
    """Every bundled checkpoint file (``*.safetensors``) under ``assets/checkpoints``."""
    try:
        folder = asset_path("checkpoints")
    except FileNotFoundError:
        return []
    return sorted(folder.rglob("*.safetensors"))


def checkpoint_name(path: Path) -> str:
    """A bundled checkpoint's name: its folder's in a folder-per-model layout
    (``inhouse-field-prior/model.safetensors``), else the file's stem (``text-to-3d-autodecoder.safetensors``)."""
    return path.parent.name if path.stem == "model" else path.stem
