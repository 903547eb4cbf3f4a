"""Animated GLB over a time range: morph targets for deforming scenes, a flip-book otherwise.

Both designs play in three.js and Blender (shared/notes/formats.md):
- a :class:`~renderers.scene.DeformableScene` gives one mesh at canonical time whose vertices the
  scene's ``deform_points`` moves; keyframe k is morph target k and a LINEAR ``weights`` animation
  blends neighbouring keyframes, so the file is small and plays smoothly;
- any other scene (topology may change over time) gives a mesh per frame under nodes whose
  ``scale`` switches 0 <-> 1 with STEP interpolation.
Keyframe k plays at k / fps seconds; fps, loop and the scene times are stored in the animation's
and the scene's ``extras``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pygltflib as gl
import torch

from renderers.export.files import ExportError, atomic_files, check_file_target
from renderers.export.gltf import GlbBuilder, to_yup, vertex_normals
from renderers.export.meshes import scene_mesh
from renderers.scene import DeformableScene


def frame_times(scene, frames: int, time_range: tuple[float, float] | None = None) -> np.ndarray:
    """``frames`` scene times evenly covering ``time_range`` (default: the scene's), ends included."""
    if not isinstance(frames, int | np.integer) or frames < 1:
        raise ExportError(f"the number of frames must be a positive whole number, got {frames!r}.")
    lo, hi = scene.time_range
    a, b = (lo, hi) if time_range is None else (float(time_range[0]), float(time_range[1]))
    if not (lo - 1e-9 <= a <= hi + 1e-9 and lo - 1e-9 <= b <= hi + 1e-9 and a <= b):
        raise ExportError(f"time range [{a:g}, {b:g}] is not an ordered range inside the scene's [{lo:g}, {hi:g}].")
    return np.linspace(a, b, frames) if frames > 1 else np.array([a])


def canonical_points(scene, points: np.ndarray, t: float, iterations: int = 30) -> tuple[np.ndarray, float]:
    """Points whose deformation to time ``t`` lands on ``points`` ``[N, 3]`` (the canonical surface).

    The protocol offers only the forward map, so this inverts it by fixed-point iteration
    x <- x + (p - deform(x, t)); it converges for the smooth, moderate deformations of fitted scenes.
    Returns the points and the largest remaining error.
    """
    device = getattr(scene, "device", "cpu")  # a scene on a GPU takes its points there
    target = torch.as_tensor(points, dtype=torch.float32, device=device)
    x = target.clone()
    error = float("inf")
    with torch.no_grad():
        for _ in range(iterations):
            residual = target - scene.deform_points(x, t).float()
            error = float(residual.abs().max()) if len(residual) else 0.0
            if error < 1e-6:
                break
            x = x + residual
    return x.cpu().numpy(), error


def _extras(scene, times: np.ndarray, fps: float, loop: bool, mode: str) -> dict:
    return {"fps": fps, "loop": loop, "frames": len(times), "mode": mode,
            "scene_times": [round(float(t), 6) for t in times], "duration_s": (len(times) - 1) / fps,
            "time_range": [float(times[0]), float(times[-1])], "up": "+Y (converted from the studio's +Z up)"}


def morph_glb(scene, times: np.ndarray, fps: float, loop: bool, resolution: int, decimate, colors: bool,
              bake_size: int = 128, tolerance: float = 1e-3) -> bytes | None:
    """One mesh at ``times[0]`` with a morph target per later keyframe; None when the scene's deformation
    cannot be inverted on its surface (the caller falls back to a flip-book)."""
    item = scene_mesh(scene, times[0], resolution=resolution, decimate=decimate, colors=colors,
                      bake_size=bake_size)
    m = item.mesh
    canonical, error = canonical_points(scene, m.vertices, float(times[0]))
    extent = float(np.ptp(m.vertices, axis=0).max()) or 1.0
    if error > tolerance * extent:
        return None
    with torch.no_grad():
        points = torch.as_tensor(canonical, device=getattr(scene, "device", "cpu"))
        keyframes = [scene.deform_points(points, float(t)).float().cpu().numpy() for t in times]
    base = to_yup(keyframes[0])
    base_normals = to_yup(vertex_normals(keyframes[0], m.faces))
    deltas = [to_yup(p) - base for p in keyframes[1:]]
    normal_deltas = [to_yup(vertex_normals(p, m.faces)) - base_normals for p in keyframes[1:]]

    builder = GlbBuilder()
    material = builder.add_material()
    mesh = builder.add_mesh(base, m.faces, normals=base_normals, colors=m.vertex_colors, material=material,
                            morph_positions=deltas, morph_normals=normal_deltas, name="animated")
    node = builder.add_node(gl.Node(name="animated", mesh=mesh))
    # Keyframe k shows target k alone (keyframe 0 is the base): LINEAR blends neighbours in between.
    n = len(times)
    weights = np.zeros((n, n - 1), np.float32)
    weights[np.arange(1, n), np.arange(n - 1)] = 1.0
    seconds = (np.arange(n) / fps).astype(np.float32)
    sampler = gl.AnimationSampler(input=builder.add_accessor(seconds, bounds=True),
                                  output=builder.add_accessor(weights.reshape(-1)), interpolation="LINEAR")
    _add_animation(builder, [sampler], [gl.AnimationChannel(sampler=0, target=gl.AnimationChannelTarget(
        node=node, path="weights"))], _extras(scene, times, fps, loop, "morph-targets"))
    return builder.to_bytes()


def flipbook_glb(scene, times: np.ndarray, fps: float, loop: bool, resolution: int, decimate, colors: bool,
                 bake_size: int = 128) -> bytes:
    """A mesh per keyframe under a root node; frame k's node has scale 1 from k/fps to (k+1)/fps, else 0."""
    builder = GlbBuilder()
    material = builder.add_material()
    root = builder.add_node(gl.Node(name="animated", children=[]))
    samplers, channels = [], []
    n = len(times)
    for k, t in enumerate(times):
        # A frame may be empty (the object is not there yet): its node simply has no mesh.
        item = scene_mesh(scene, float(t), resolution=resolution, decimate=decimate, colors=colors,
                          bake_size=bake_size, allow_empty=True)
        mesh = None
        if item is not None:
            m = item.mesh
            mesh = builder.add_mesh(to_yup(m.vertices), m.faces, normals=to_yup(m.normals), colors=m.vertex_colors,
                                    material=material, name=f"frame_{k:04d}")
        visible = [1.0, 1.0, 1.0] if k == 0 else [0.0, 0.0, 0.0]
        node = builder.add_node(gl.Node(name=f"frame_{k:04d}", mesh=mesh, scale=visible), parent=root)
        keys, values = [0.0], [float(k == 0)]
        if k > 0:
            keys.append(k / fps)
            values.append(1.0)
        if k < n - 1:
            keys.append((k + 1) / fps)
            values.append(0.0)
        scale = np.repeat(np.asarray(values, np.float32)[:, None], 3, 1)
        samplers.append(gl.AnimationSampler(input=builder.add_accessor(np.asarray(keys, np.float32), bounds=True),
                                            output=builder.add_accessor(scale), interpolation="STEP"))
        channels.append(gl.AnimationChannel(sampler=len(samplers) - 1,
                                            target=gl.AnimationChannelTarget(node=node, path="scale")))
    if not builder.doc.meshes:
        raise ExportError(f"the scene is empty at every one of the {n} frames, so there is nothing to export.")
    _add_animation(builder, samplers, channels, _extras(scene, times, fps, loop, "flip-book"))
    return builder.to_bytes()


def _add_animation(builder: GlbBuilder, samplers, channels, extras: dict) -> None:
    builder.doc.animations.append(gl.Animation(name="scene", samplers=samplers, channels=channels, extras=extras))
    builder.doc.scenes[0].extras = {"fourd_animation": extras}


def export_animated_glb(scene, path: str | Path, *, frames: int = 24, fps: float = 24.0,
                        time_range: tuple[float, float] | None = None, resolution: int = 96,
                        decimate: float | int | None = None, mode: str = "auto", loop: bool = True,
                        colors: bool = True, bake_size: int = 128, overwrite: bool = False) -> Path:
    """The scene over ``time_range`` as an animated GLB of ``frames`` keyframes played at ``fps``.

    ``mode``: "morph" (needs a DeformableScene), "flipbook", or "auto" (morph when possible).
    """
    path = check_file_target(path, overwrite, (".glb",))
    if mode not in ("auto", "morph", "flipbook"):
        raise ExportError(f"unknown animation mode '{mode}'; use auto, morph or flipbook.")
    if frames is None or (isinstance(frames, int) and frames < 2):
        raise ExportError(f"an animation needs at least 2 frames, got {frames}.")
    if not fps > 0:
        raise ExportError(f"frames per second must be positive, got {fps}.")
    times = frame_times(scene, frames, time_range)
    deformable = isinstance(scene, DeformableScene)
    if mode == "morph" and not deformable:
        raise ExportError("morph-target animation needs a scene that deforms one canonical shape; "
                          "this scene does not, so use mode='flipbook'.")
    data = None
    if mode != "flipbook" and deformable:
        data = morph_glb(scene, times, fps, loop, resolution, decimate, colors, bake_size)
        if data is None and mode == "morph":
            raise ExportError("the scene's deformation could not be inverted on its surface, so morph targets "
                              "cannot be built; use mode='flipbook'.")
    if data is None:
        data = flipbook_glb(scene, times, fps, loop, resolution, decimate, colors, bake_size)
    with atomic_files([path]) as (tmp,):
        tmp.write_bytes(data)
    return path
