"""Static meshes of a scene at one time: GLB, OBJ (+MTL +PNG) and PLY.

The surface comes from the scene's own ``to_mesh`` (marching cubes on its density); this module
adds colour (from the mesh, else from renders), optional decimation, an optional UV texture baked
from renders, and the target's axes (glTF is +Y up).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from renderers.export.bake import bake_cameras, bake_texture, colors_from_renders, transfer_colors
from renderers.export.files import ExportError, atomic_files, check_file_target
from renderers.export.gltf import GlbBuilder, to_yup, vertex_normals
from renderers.mesh import TriangleMesh

MESH_SUFFIXES = {"glb": (".glb",), "obj": (".obj",), "ply": (".ply",)}


@dataclass
class TexturedMesh:
    """A mesh ready to write: world axes (+Z up), per-vertex normals, and either ``vertex_colors`` or
    ``uvs`` ``[V, 2]`` (v = 0 at the image top) with ``texture`` ``[H, W, 3]`` uint8."""

    mesh: TriangleMesh
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None


def check_time(scene, t: float | None) -> float:
    lo, hi = scene.time_range
    t = float(lo if t is None else t)
    if not lo - 1e-9 <= t <= hi + 1e-9:
        raise ExportError(f"time t={t:g} is outside the scene's time range [{lo:g}, {hi:g}].")
    return t


def scene_mesh(scene, t: float | None = None, *, resolution: int = 128, decimate: float | int | None = None,
               colors: bool = True, texture_size: int = 0, bake_size: int = 256,
               allow_empty: bool = False) -> TexturedMesh | None:
    """The scene's surface at time ``t`` with normals and colour.

    Args:
        decimate: keep this fraction of the faces (0 < x < 1) or this many faces (x >= 1); None keeps all.
        colors: colour vertices (the mesh's own colours, else from renders); False leaves them out.
        texture_size: > 0 bakes a UV texture of this size from renders instead of vertex colours.
        bake_size: image size of the 20 views that colours and textures are taken from.
        allow_empty: return None for an empty surface instead of raising :class:`ExportError`.
    """
    t = check_time(scene, t)
    cameras = bake_cameras(bake_size)
    if resolution < 8:
        raise ExportError(f"mesh resolution must be at least 8, got {resolution}.")
    mesh = scene.to_mesh(t, resolution)
    if mesh.is_empty:
        if allow_empty:
            return None
        raise ExportError(f"the scene is empty at t={t:g}: its surface has no triangles, so there is nothing to "
                          f"export.")
    if decimate is not None:
        mesh = decimate_mesh(mesh, decimate)
    normals = mesh.normals if mesh.normals is not None else vertex_normals(mesh.vertices, mesh.faces)
    mesh = TriangleMesh(mesh.vertices, mesh.faces, mesh.vertex_colors, normals)
    if texture_size > 0:
        vmap, faces, uvs, image = bake_texture(scene, t, mesh.vertices, mesh.faces, normals, texture_size, cameras)
        return TexturedMesh(TriangleMesh(mesh.vertices[vmap], faces, None, normals[vmap]), uvs, image)
    if colors and mesh.vertex_colors is None:
        mesh.vertex_colors = colors_from_renders(scene, t, mesh.vertices, normals, cameras)
    if not colors:
        mesh.vertex_colors = None
    return TexturedMesh(mesh)


def decimate_mesh(mesh: TriangleMesh, target: float | int) -> TriangleMesh:
    """Quadric-error decimation (fast-simplification) to a face fraction or count; colours follow."""
    n = len(mesh.faces)
    count = int(round(target * n)) if 0 < target < 1 else int(target)
    if count < 4:
        raise ExportError(f"decimation target {target} leaves fewer than 4 faces of {n}; choose a larger one.")
    if count >= n:
        return mesh
    try:
        import fast_simplification
    except ImportError:
        raise ExportError("decimation needs the 'fast-simplification' package; install it with "
                          "'pip install fast-simplification'.") from None
    points, faces = fast_simplification.simplify(mesh.vertices.astype(np.float64), mesh.faces, target_count=count)
    colors = None
    if mesh.vertex_colors is not None:
        colors = transfer_colors(mesh.vertices, mesh.vertex_colors, points)
    return TriangleMesh(points, faces, colors)


# ---------------------------------------------------------------------- writers
def glb_bytes(item: TexturedMesh, name: str = "surface") -> bytes:
    m = item.mesh
    builder = GlbBuilder()
    png = _png_bytes(item.texture) if item.texture is not None else None
    material = builder.add_material(png)
    mesh = builder.add_mesh(to_yup(m.vertices), m.faces, normals=to_yup(m.normals), colors=m.vertex_colors,
                            uvs=item.uvs, material=material, name=name)
    import pygltflib as gl

    builder.add_node(gl.Node(name=name, mesh=mesh))
    return builder.to_bytes()


def obj_text(item: TexturedMesh, mtl_name: str | None, up: str = "y") -> str:
    """Wavefront OBJ: ``v x y z [r g b]``, ``vt``, ``vn``, faces ``v/vt/vn`` (1-based)."""
    m = item.mesh
    v = to_yup(m.vertices) if up == "y" else m.vertices
    n = to_yup(m.normals) if up == "y" else m.normals
    out = io.StringIO()
    out.write("# fourd-studio\n")
    if mtl_name:
        out.write(f"mtllib {mtl_name}\n")
    rows = v if m.vertex_colors is None else np.concatenate([v, np.clip(m.vertex_colors, 0, 1)], 1)
    _write_rows(out, "v", rows)
    if item.uvs is not None:
        # OBJ's v axis points up the image; ours (glTF's) points down.
        _write_rows(out, "vt", np.stack([item.uvs[:, 0], 1 - item.uvs[:, 1]], 1))
    _write_rows(out, "vn", n)
    if mtl_name:
        out.write("usemtl surface\n")
    f = m.faces.astype(np.int64) + 1
    if item.uvs is not None:
        corners = np.stack([f, f, f], 2).reshape(-1, 9)
        _write_rows(out, "f", corners, "%d/%d/%d %d/%d/%d %d/%d/%d")
    else:
        corners = np.stack([f, f], 2).reshape(-1, 6)
        _write_rows(out, "f", corners, "%d//%d %d//%d %d//%d")
    return out.getvalue()


def _write_rows(out: io.StringIO, tag: str, rows: np.ndarray, fmt: str | None = None) -> None:
    if len(rows) == 0:
        return
    fmt = fmt or " ".join(["%.6f"] * rows.shape[1])
    np.savetxt(out, rows, fmt=f"{tag} {fmt}")


def _png_bytes(image: np.ndarray) -> bytes:
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", image, extension=".png")


def ply_bytes(item: TexturedMesh, up: str = "z") -> bytes:
    m = item.mesh
    tm = TriangleMesh(to_yup(m.vertices) if up == "y" else m.vertices, m.faces, m.vertex_colors,
                      to_yup(m.normals) if up == "y" else m.normals).to_trimesh()
    return tm.export(file_type="ply", encoding="binary")


def write_mesh(item: TexturedMesh, path: str | Path, format: str | None = None, *, up: str | None = None,
               overwrite: bool = False) -> Path:
    """Write a prepared mesh as GLB, OBJ (+ MTL and PNG when textured) or PLY; returns ``path``."""
    path = Path(path)
    format = (format or path.suffix.lstrip(".")).lower()
    if format not in MESH_SUFFIXES:
        raise ExportError(f"unknown mesh format '{format}'; use one of {', '.join(MESH_SUFFIXES)}.")
    if up not in (None, "y", "z"):
        raise ExportError(f"'up' must be 'y' or 'z', got {up!r}.")
    path = check_file_target(path, overwrite, MESH_SUFFIXES[format])
    if format == "glb":
        with atomic_files([path]) as (tmp,):
            tmp.write_bytes(glb_bytes(item, path.stem))
    elif format == "ply":
        with atomic_files([path]) as (tmp,):
            tmp.write_bytes(ply_bytes(item, up or "z"))
    else:
        textured = item.texture is not None
        outputs = [path] + ([path.with_suffix(".mtl"), path.with_suffix(".png")] if textured else [])
        for extra in outputs[1:]:
            check_file_target(extra, overwrite)
        with atomic_files(outputs) as temps:
            temps[0].write_text(obj_text(item, outputs[1].name if textured else None, up or "y"))
            if textured:
                temps[1].write_text(f"# fourd-studio\nnewmtl surface\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\n"
                                    f"map_Kd {outputs[2].name}\n")
                temps[2].write_bytes(_png_bytes(item.texture))
    return path


def export_mesh(scene, path: str | Path, *, format: str | None = None, t: float | None = None,
                resolution: int = 128, decimate: float | int | None = None, texture_size: int = 0,
                colors: bool = True, bake_size: int = 256, up: str | None = None, overwrite: bool = False) -> Path:
    """The scene's surface at time ``t`` as GLB, OBJ (+MTL+PNG) or PLY (format from the suffix by default).

    GLB is always +Y up (glTF's rule); OBJ defaults to +Y up and PLY to the world's +Z up (``up``).
    """
    path = Path(path)
    format = (format or path.suffix.lstrip(".")).lower()
    if format not in MESH_SUFFIXES:
        raise ExportError(f"unknown mesh format '{format}'; use one of {', '.join(MESH_SUFFIXES)}.")
    check_file_target(path, overwrite, MESH_SUFFIXES[format])
    if texture_size and format == "ply":
        raise ExportError("PLY meshes carry vertex colours only; export GLB or OBJ for a texture.")
    item = scene_mesh(scene, t, resolution=resolution, decimate=decimate, colors=colors, texture_size=texture_size,
                      bake_size=bake_size)
    return write_mesh(item, path, format, up=up, overwrite=overwrite)
