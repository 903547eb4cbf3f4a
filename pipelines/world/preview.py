"""Contact sheets of world samples: look at what the renderer makes (rows: seeds, columns: times)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pipelines.world.grammar import sample_spec
from pipelines.world.render import render_world
from renderers.cameras import Cameras, orbit_cameras


def contact_sheet(path: str | Path, seeds: Sequence[int], frames: int = 6, resolution: int = 96,
                  background: float = 0.85) -> np.ndarray:
    """Render ``seeds`` at ``frames`` times from one camera each, save a PNG grid to ``path``, return it
    ``[rows * R, frames * R, 3]`` uint8."""
    import imageio.v3 as iio

    rows = []
    for seed in seeds:
        spec = sample_spec(seed)
        cam = orbit_cameras(2.7, 15.0, 30.0, 40.0, resolution, resolution)
        cams = Cameras(cam.c2w.expand(frames, 4, 4), cam.K.expand(frames, 3, 3), resolution, resolution)
        out = render_world(spec, cams, torch.arange(frames) / frames)
        rows.append(torch.cat(list(out.composite(background)), 1))
    sheet = (torch.cat(rows, 0).clamp(0, 1) * 255).round().byte().numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, sheet)
    return sheet
