"""3D Gaussian Splatting PLY files: one time, or a numbered sequence over a time range.

The layout is the one the original 3DGS code writes and splat viewers read by name and order
(shared/notes/formats.md): ``x y z nx ny nz f_dc_0..2 f_rest_0..M opacity scale_0..2 rot_0..3``,
float32, binary little-endian, raw parameters (log-scales, opacity logits, unnormalised wxyz
quaternions). ``f_rest`` is channel-major: all of red's higher-order coefficients, then green's,
then blue's. Positions stay in the studio's world axes (+Z up), like a 3DGS capture's.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from renderers.export.animation import frame_times
from renderers.export.files import ExportError, atomic_files, atomic_folder, check_file_target, check_folder_target
from renderers.export.meshes import check_time
from renderers.scene import SplatScene
from renderers.splats import GaussianSet

SEQUENCE_INDEX = "sequence.json"


def gaussian_ply_properties(sh_degree: int) -> list[str]:
    rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def gaussian_ply_records(gaussians: GaussianSet) -> np.ndarray:
    """The PLY vertex records ``[N]`` (one float32 field per property, in file order)."""
    g = gaussians.detach().to("cpu")
    n = len(g)
    names = gaussian_ply_properties(g.sh_degree)
    records = np.zeros(n, dtype=[(name, "<f4") for name in names])
    table = records.view("<f4").reshape(n, len(names))  # columns filled in place: no concatenated copy
    sh = g.sh.float().numpy()
    k = sh.shape[1]
    table[:, 0:3] = g.means.float().numpy()  # normals (3:6) stay zero
    table[:, 6:9] = sh[:, 0]
    # f_rest is channel-major, as 3DGS writes it: [N, K-1, 3] -> [N, 3, K-1].
    table[:, 9:9 + 3 * (k - 1)] = sh[:, 1:].transpose(0, 2, 1).reshape(n, -1)
    end = 9 + 3 * (k - 1)
    table[:, end] = g.opacity_logits.float().numpy()
    table[:, end + 1:end + 4] = g.log_scales.float().numpy()
    table[:, end + 4:end + 8] = g.quats.float().numpy()
    return records


def write_gaussian_records(records: np.ndarray, stream) -> None:
    from plyfile import PlyData, PlyElement

    PlyData([PlyElement.describe(records, "vertex")], text=False, byte_order="<",
            comments=["fourd-studio 3DGS"]).write(stream)


def gaussian_ply_bytes(gaussians: GaussianSet) -> bytes:
    """The 3DGS PLY file of ``gaussians`` as bytes."""
    out = io.BytesIO()
    write_gaussian_records(gaussian_ply_records(gaussians), out)
    return out.getvalue()


def write_gaussian_ply(gaussians: GaussianSet, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``gaussians`` as a 3DGS PLY file (written whole or not at all)."""
    path = check_file_target(path, overwrite, (".ply",))
    if len(gaussians) == 0:
        raise ExportError("the scene has no Gaussians at this time, so there is nothing to export.")
    with atomic_files([path]) as (tmp,), tmp.open("wb") as stream:
        write_gaussian_records(gaussian_ply_records(gaussians), stream)
    return path


def read_gaussian_ply(path: str | Path) -> GaussianSet:
    """Read a 3DGS PLY file (ours or another tool's) with plyfile, by property name."""
    from plyfile import PlyData

    vertex = PlyData.read(str(path))["vertex"]
    names = {p.name for p in vertex.properties}
    missing = [n for n in ("x", "y", "z", "f_dc_0", "opacity", "scale_0", "rot_0") if n not in names]
    if missing:
        raise ValueError(f"'{path}' is not a 3D Gaussian Splatting PLY: it has no {', '.join(missing)} property.")

    def cols(prefix: str, count: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(vertex[f"{prefix}{i}"], np.float32) for i in range(count)], 1))

    rest_count = sum(1 for n in names if n.startswith("f_rest_"))
    k = 1 + rest_count // 3
    n = len(vertex.data)
    rest = cols("f_rest_", rest_count).reshape(n, 3, k - 1).transpose(1, 2) if rest_count else torch.zeros(n, 0, 3)
    sh = torch.cat([cols("f_dc_", 3)[:, None], rest], 1)
    means = torch.from_numpy(np.stack([np.asarray(vertex[a], np.float32) for a in "xyz"], 1))
    return GaussianSet(means, cols("rot_", 4), cols("scale_", 3), torch.from_numpy(np.asarray(vertex["opacity"],
                                                                                             np.float32)), sh)


def _require_splats(scene) -> None:
    if not isinstance(scene, SplatScene):
        raise ExportError(f"a {type(scene).__name__} cannot be exported as Gaussian splats (only Gaussian scenes "
                          f"can); export a mesh or a video instead.")


def export_gaussian_ply(scene, path: str | Path, *, t: float | None = None, overwrite: bool = False) -> Path:
    """The scene's Gaussians at time ``t`` as one 3DGS PLY file."""
    _require_splats(scene)
    check_file_target(path, overwrite, (".ply",))
    t = check_time(scene, t)
    with torch.no_grad():
        gaussians = scene.gaussians_at(t)
    return write_gaussian_ply(gaussians, path, overwrite=overwrite)


def export_gaussian_sequence(scene, folder: str | Path, *, frames: int = 24, fps: float = 24.0,
                             time_range: tuple[float, float] | None = None, loop: bool = True,
                             overwrite: bool = False) -> Path:
    """A folder of ``frame_0000.ply`` ... for ``frames`` times over ``time_range`` and a ``sequence.json`` index:
    ``{"format", "fps", "loop", "frames": [{"file", "t", "time_s", "count"}], "time_range", "sh_degree"}``."""
    _require_splats(scene)
    folder = check_folder_target(folder, overwrite, marker=SEQUENCE_INDEX)
    if not fps > 0:
        raise ExportError(f"frames per second must be positive, got {fps}.")
    times = frame_times(scene, frames, time_range)
    entries = []

    def write_frame(path: Path, gaussians: GaussianSet) -> None:
        with path.open("wb") as stream:
            write_gaussian_records(gaussian_ply_records(gaussians), stream)

    # The scene computes frame k + 1 while a writer thread packs and writes frame k (numpy and file I/O
    # release the GIL); the scene itself is only ever called from this thread.
    with atomic_folder(folder) as tmp, ThreadPoolExecutor(max_workers=1) as writer:
        degree, pending = 0, None
        for k, t in enumerate(times):
            with torch.no_grad():
                gaussians = scene.gaussians_at(float(t))
            if len(gaussians) == 0:
                raise ExportError(f"the scene has no Gaussians at t={t:g}, so there is nothing to export.")
            if pending is not None:
                pending.result()
            name = f"frame_{k:04d}.ply"
            pending = writer.submit(write_frame, tmp / name, gaussians)
            degree = gaussians.sh_degree
            entries.append({"file": name, "t": float(t), "time_s": k / fps, "count": len(gaussians)})
        pending.result()
        index = {"format": "3dgs-ply-sequence", "version": 1, "fps": fps, "loop": loop, "sh_degree": degree,
                 "time_range": [float(times[0]), float(times[-1])], "up": "+Z", "frames": entries}
        (tmp / SEQUENCE_INDEX).write_text(json.dumps(index, indent=2))
    return folder
