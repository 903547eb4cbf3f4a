"""VoxelScene: ray marching, time interpolation, meshing and save / load."""

import numpy as np
import pytest
import torch

from renderers.cameras import orbit_cameras
from renderers.scene import Scene, load_scene
from renderers.voxels import VoxelScene


def _sphere_scene(resolution=32, centres=((0.0, 0.0, 0.0),), radius=0.5, sigma=80.0):
    axis = torch.linspace(-1, 1, resolution)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    sigmas, colours = [], []
    for cx, cy, cz in centres:
        inside = ((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2).sqrt() < radius
        sigmas.append(torch.where(inside, sigma, 0.0))
        colours.append(torch.stack([torch.full_like(x, 0.9), (x + 1) / 2, torch.full_like(x, 0.1)]))
    return VoxelScene.from_values(torch.stack(sigmas), torch.stack(colours))


def test_render_of_a_sphere_has_its_silhouette_depth_and_colour():
    scene = _sphere_scene()
    assert isinstance(scene, Scene)
    cams = orbit_cameras(3.0, 0.0, 0.0, 40.0, 33, 33)  # from +X looking at the origin
    out = scene.render(cams, 0.0)
    assert out.rgb.shape == (1, 33, 33, 3) and out.alpha.shape == out.depth.shape == (1, 33, 33, 1)
    assert out.alpha[0, 16, 16, 0] > 0.99 and out.alpha[0, 0, 0, 0] < 1e-3
    assert out.depth[0, 16, 16, 0] == pytest.approx(2.5, abs=0.08)  # camera at 3, sphere surface at 0.5
    assert out.depth[0, 0, 0, 0] == 0
    assert out.rgb[0, 16, 16, 0] == pytest.approx(0.9, abs=0.02)  # premultiplied, alpha ~1
    # silhouette radius: the sphere of radius 0.5 at distance 3 spans about tan^-1(0.5/3) of 20 degrees
    row = out.alpha[0, 16, :, 0] > 0.5
    expected = 2 * 0.5 / 3.0 / np.tan(np.radians(20)) * 33 / 2
    assert row.sum().item() == pytest.approx(expected, abs=2.5)


def test_frames_interpolate_linearly_in_time_and_render_moves():
    scene = _sphere_scene(24, centres=((-0.4, 0, 0), (0.4, 0, 0)), radius=0.35)
    assert scene.frames == 2
    assert torch.allclose(scene.grid_at(0.5), 0.5 * (scene.grid[0] + scene.grid[1]))
    assert torch.equal(scene.grid_at(-1.0), scene.grid[0]) and torch.equal(scene.grid_at(2.0), scene.grid[1])
    cams = orbit_cameras(3.0, 0.0, 90.0, 40.0, 32, 32)  # from +Y: world x runs across the image
    columns = [scene.render(cams, t).alpha[0, :, :, 0].sum(0) for t in (0.0, 1.0)]
    centre_of_mass = [float((c * torch.arange(32)).sum() / c.sum()) for c in columns]
    assert abs(centre_of_mass[0] - centre_of_mass[1]) > 5


def test_render_is_differentiable_and_jitter_is_seeded():
    scene = VoxelScene.empty(8, 2)
    scene.grid.requires_grad_(True)
    cams = orbit_cameras(3.0, 20.0, 30.0, 40.0, 8, 8)
    a = scene.render(cams, 0.25, generator=torch.Generator().manual_seed(1))
    b = scene.render(cams, 0.25, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.rgb, b.rgb)
    (a.rgb.sum() + a.alpha.sum()).backward()
    assert scene.grid.grad is not None and scene.grid.grad.abs().sum() > 0


def test_to_mesh_is_a_closed_outward_sphere_with_colours():
    scene = _sphere_scene(32)
    mesh = scene.to_mesh(0.0, resolution=48)
    v, f = mesh.vertices, mesh.faces
    signed_volume = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    assert signed_volume == pytest.approx(4 / 3 * np.pi * 0.5**3, rel=0.15)  # positive: CCW from outside
    assert np.all(np.abs(mesh.bounds()) < 0.6)
    assert (np.einsum("ij,ij->i", mesh.normals, v) > 0).mean() > 0.99
    assert mesh.vertex_colors[:, 0].mean() == pytest.approx(0.9, abs=0.02)
    assert VoxelScene.empty(8).to_mesh(0.0, 16).is_empty


def test_save_load_round_trip(tmp_path):
    scene = _sphere_scene(12, centres=((0, 0, 0), (0.2, 0, 0)))
    scene.samples_per_ray = 40
    scene.save(tmp_path / "s")
    back = load_scene(tmp_path / "s")
    assert isinstance(back, VoxelScene)
    assert torch.equal(back.grid, scene.grid) and back.samples_per_ray == 40 and back.frames == 2
    (tmp_path / "s" / "grid.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable grid.safetensors"):
        VoxelScene.load(tmp_path / "s")
