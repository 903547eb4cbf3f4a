"""Surface colour from a scene's own renders: vertex colours and UV textures for exported meshes.

The Scene protocol exposes no colour query at a 3D point, only ``render``; so a surface point takes
the colour of the pixels it lands on in views that see it (its depth matches the rendered depth),
weighted by how squarely each view faces it.
"""

from __future__ import annotations

import numpy as np
import torch

from renderers.cameras import Cameras, orbit_cameras


def bake_cameras(size: int = 256, distance: float = 3.2, fovy: float = 40.0) -> Cameras:
    """20 views around the object: three rings of six, one from above and one from below."""
    elevation = torch.tensor([-35.0] * 6 + [5.0] * 6 + [40.0] * 6 + [85.0, -85.0])
    azimuth = torch.cat([torch.arange(6) * 60.0, torch.arange(6) * 60.0 + 30.0, torch.arange(6) * 60.0,
                         torch.tensor([0.0, 0.0])])
    return orbit_cameras(distance, elevation, azimuth, fovy, size, size)


@torch.no_grad()
def colors_from_renders(scene, t: float, points: np.ndarray, normals: np.ndarray, cameras: Cameras | None = None,
                        batch: int = 4) -> np.ndarray:
    """Colour ``[P, 3]`` in [0, 1] of surface ``points`` ``[P, 3]`` (world, +Z up) with outward ``normals``.

    Points no view sees take the colour of the nearest point that one does.
    """
    cameras = bake_cameras() if cameras is None else cameras
    pts = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    nrm = torch.as_tensor(np.asarray(normals), dtype=torch.float32)
    total = torch.zeros(len(pts), 3)
    weight = torch.zeros(len(pts))
    extent = float((pts.max(0).values - pts.min(0).values).max()) if len(pts) else 1.0
    tolerance = 0.04 * extent + 0.01
    h, w = cameras.height, cameras.width
    for start in range(0, len(cameras), batch):
        cams = cameras[start:start + batch]
        out = scene.render(cams, t)
        c = len(cams)
        rgb = out.rgb.detach().float().cpu().reshape(-1, 3)
        alpha = out.alpha.detach().float().cpu().reshape(-1)
        depth = out.depth.detach().float().cpu().reshape(-1)
        uv, z = cams.project(pts)  # [c, P, 2], [c, P]
        px = uv.floor_().long()
        inside = (px[..., 0] >= 0) & (px[..., 0] < w) & (px[..., 1] >= 0) & (px[..., 1] < h) & (z > 0)
        flat = (torch.arange(c)[:, None] * (h * w) + px[..., 1].clamp(0, h - 1) * w
                + px[..., 0].clamp(0, w - 1)).reshape(-1)
        a = alpha[flat].reshape(c, -1).clamp_min(1e-6)
        # Rendered depth is alpha-weighted, so a surface point sits near it, not on it.
        visible = inside & (a > 0.5) & ((depth[flat].reshape(c, -1) / a - z).abs() < tolerance)
        to_cam = cams.positions[:, None] - pts[None]  # [c, P, 3]
        facing = ((to_cam * nrm[None]).sum(-1) / to_cam.norm(dim=-1)).clamp_min(0)
        wgt = facing.square() * visible  # [c, P]
        colour = rgb[flat].reshape(c, -1, 3) / a[..., None]
        total += (wgt[..., None] * colour).sum(0)
        weight += wgt.sum(0)
    seen = weight > 1e-6
    colors = np.full((len(pts), 3), 0.5, np.float32)
    colors[seen.numpy()] = (total[seen] / weight[seen, None]).clamp(0, 1).numpy()
    if seen.any() and not seen.all():
        from scipy.spatial import cKDTree

        seen_np = seen.numpy()
        _, nearest = cKDTree(np.asarray(points)[seen_np]).query(np.asarray(points)[~seen_np])
        colors[~seen_np] = colors[seen_np][nearest]
    return colors


def transfer_colors(source_points: np.ndarray, source_colors: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Colours of ``points`` from the nearest of ``source_points`` (after decimation or unwrapping)."""
    from scipy.spatial import cKDTree

    _, nearest = cKDTree(source_points).query(points)
    return np.asarray(source_colors)[nearest]


def unwrap(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UV atlas with xatlas: ``(vertex_map [V'], faces [F, 3], uvs [V', 2] in [0, 1])``; new vertex i is old
    vertex ``vertex_map[i]`` (seams duplicate vertices)."""
    try:
        import xatlas
    except ImportError:
        from renderers.export.files import ExportError

        raise ExportError("texture baking needs the 'xatlas' package; install it with 'pip install xatlas' "
                          "or export with vertex colours.") from None
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
    charts = xatlas.ChartOptions()
    charts.max_iterations = 1  # the default 2+ refinement passes cost ~50 % more time for little gain here
    packing = xatlas.PackOptions()
    packing.padding = 2
    packing.blockAlign = True
    atlas.generate(charts, packing)
    vmap, new_faces, uvs = atlas[0]
    return vmap.astype(np.int64), new_faces.astype(np.int64), uvs.astype(np.float32)


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which triangle covers each texel centre of a ``size``² texture laid out by ``uvs``.

    Returns texel rows ``[T]``, columns ``[T]``, triangle ``[T]`` and barycentrics ``[T, 3]`` packed as
    ``(rows, cols, tri_bary)`` with ``tri_bary`` ``[T, 4]`` (triangle index, then 3 weights). Row 0 is v = 0
    (glTF's top of the image).
    """
    tri = uvs[faces] * size - 0.5  # [F, 3, 2] in texel-centre coordinates
    lo = np.floor(tri.min(1)).astype(np.int64).clip(0, size - 1)
    hi = np.ceil(tri.max(1)).astype(np.int64).clip(0, size - 1)
    w = hi[:, 0] - lo[:, 0] + 1
    h = hi[:, 1] - lo[:, 1] + 1
    counts = w * h
    face_of = np.repeat(np.arange(len(faces)), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    col = lo[face_of, 0] + offset % w[face_of]
    row = lo[face_of, 1] + offset // w[face_of]
    a, b, c = tri[face_of, 0], tri[face_of, 1], tri[face_of, 2]
    p = np.stack([col, row], 1).astype(np.float64)
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok = np.abs(den) > 1e-12
    den = np.where(ok, den, 1.0)
    l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    l0 = 1 - l1 - l2
    eps = -1e-4
    inside = ok & (l0 >= eps) & (l1 >= eps) & (l2 >= eps)
    bary = np.stack([l0, l1, l2], 1)[inside]
    return row[inside], col[inside], np.concatenate([face_of[inside, None], bary], 1)


def bake_texture(scene, t: float, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, size: int = 1024,
                 cameras: Cameras | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unwrap a mesh and bake the scene's colour into a ``size``² texture.

    Returns ``(vertex_map [V'], faces [F, 3], uvs [V', 2], image [size, size, 3] uint8)``.
    """
    from scipy import ndimage

    vmap, new_faces, uvs = unwrap(vertices, faces)
    rows, cols, tri_bary = rasterize_uv(uvs, new_faces, size)
    face = tri_bary[:, 0].astype(np.int64)
    bary = tri_bary[:, 1:]
    corners = vmap[new_faces[face]]  # [T, 3] original vertex indices
    points = (np.asarray(vertices)[corners] * bary[..., None]).sum(1)
    texel_normals = (np.asarray(normals)[corners] * bary[..., None]).sum(1)
    texel_normals /= np.maximum(np.linalg.norm(texel_normals, axis=1, keepdims=True), 1e-12)
    image = np.zeros((size, size, 3), np.float32)
    filled = np.zeros((size, size), bool)
    if len(points):
        image[rows, cols] = colors_from_renders(scene, t, points, texel_normals, cameras)
        filled[rows, cols] = True
        # Bleed colour into empty texels so bilinear filtering and mip-maps show no dark seams.
        _, (ri, ci) = ndimage.distance_transform_edt(~filled, return_indices=True)
        image = image[ri, ci]
    return vmap, new_faces, uvs, np.round(image * 255).astype(np.uint8)
