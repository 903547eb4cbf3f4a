"""`FieldScene` as a `Scene`: render, mesh, save/load round trip through the kind registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from renderers.cameras import orbit_cameras
from renderers.field import Field4D, FieldConfig
from renderers.field_scene import FieldScene
from renderers.hash_grid import HashGridConfig
from renderers.scene import Scene, load_scene
from renderers.volume import OccupancyGrid, RenderSettings

TINY_GRID = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4,
                           per_level_scale=2.0)


def tiny_scene(**kwargs) -> FieldScene:
    config = FieldConfig(static_grid=TINY_GRID, dynamic_grid=TINY_GRID, mlp_width=16, background="solid",
                         background_color=(0.0, 1.0, 0.0))
    field = Field4D(config, generator=torch.Generator().manual_seed(0))
    torch.nn.init.uniform_(field.dynamic_grid.table, -0.5, 0.5, generator=torch.Generator().manual_seed(1))
    return FieldScene(field, OccupancyGrid(16), settings=RenderSettings(n_samples=48), **kwargs)


def test_render_follows_the_scene_protocol():
    scene = tiny_scene()
    assert isinstance(scene, Scene)
    scene.occupancy.update(scene.field.density, [0.0, 0.5, 1.0], scene.settings.step)
    out = scene.render(orbit_cameras(3.0, 15.0, torch.tensor([0.0, 90.0]), 40.0, 20, 16), 0.5)
    assert out.rgb.shape == (2, 16, 20, 3) and out.alpha.shape == (2, 16, 20, 1) and out.depth.shape == (2, 16, 20, 1)
    assert not out.rgb.requires_grad
    assert float(out.alpha[:, 8, 10].min()) > 0.9 and float(out.alpha[:, 0, 0].max()) < 0.01
    # rgb is premultiplied: never brighter than its alpha
    assert bool((out.rgb <= out.alpha + 1e-5).all())
    centre = float(out.depth[0, 8, 10])
    assert 2.3 < centre < 3.0  # the blob's front (radius ~0.5) seen from distance 3


def test_save_and_load_round_trip(tmp_path):
    scene = tiny_scene(time_range=(0.0, 1.0), isosurface_threshold=5.0)
    scene.field.dynamic_mode = "frozen"
    scene.occupancy.update(scene.field.density, [0.0, 1.0], scene.settings.step)
    scene.save(tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "scene.json").read_text())
    assert manifest["kind"] == "field" and manifest["dynamic_mode"] == "frozen"
    loaded = load_scene(tmp_path / "s")
    assert isinstance(loaded, FieldScene) and loaded.field.config == scene.field.config
    assert loaded.isosurface_threshold == 5.0 and loaded.field.dynamic_mode == "frozen"
    assert torch.equal(loaded.occupancy.occupied, scene.occupancy.occupied)
    cams = orbit_cameras(3.0, 30.0, 60.0, 40.0, 12, 12)
    a, b = scene.render(cams, 0.7), loaded.render(cams, 0.7)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
    assert torch.equal(loaded.background.color, torch.tensor([0.0, 1.0, 0.0]))
    assert not list((tmp_path / "s").glob("*.tmp"))


def test_load_rejects_an_incomplete_folder(tmp_path):
    scene = tiny_scene()
    scene.save(tmp_path / "s")
    (tmp_path / "s" / "field.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        FieldScene.load(tmp_path / "s")


def test_mesh_of_the_blob_is_a_closed_outward_sphere_with_colours():
    scene = tiny_scene(isosurface_threshold=5.0)
    scene.field.dynamic_mode = "off"
    mesh = scene.to_mesh(0.0, resolution=32)
    assert not mesh.is_empty
    radius = np.linalg.norm(mesh.vertices, axis=1)
    # softplus(10 (1 - r / 0.5) + small features) = 5 near r = 0.25
    assert 0.18 < radius.mean() < 0.32 and radius.std() < 0.05
    a, b, c = (mesh.vertices[mesh.faces[:, i]] for i in range(3))
    face_normals = np.cross(b - a, c - a)
    assert ((face_normals * a).sum(1) > 0).mean() > 0.99  # counter-clockwise seen from outside
    assert ((mesh.normals * mesh.vertices).sum(1) > 0).mean() > 0.99
    assert mesh.vertex_colors.min() >= 0 and mesh.vertex_colors.max() <= 1
    assert mesh.to_trimesh().is_watertight
    nothing = tiny_scene(isosurface_threshold=1e6)
    nothing.occupancy.occupied.fill_(False)  # it renders nothing, so there is no outline to put a surface on
    assert nothing.to_mesh(0.0, resolution=16).is_empty and nothing.isosurface_threshold == 1e6


def test_a_soft_field_gets_the_surface_its_renders_show():
    """The blob peaks near density 10, under threestudio's level of 25 (what a soft field distilled on a CPU
    saved before its level was fitted looks like): its mesh is not empty but sits on the rendered outline."""
    scene = tiny_scene(isosurface_threshold=25.0)
    scene.field.dynamic_mode = "off"
    assert float(scene.density_volume(0.0, 32).max()) < 25.0
    mesh = scene.to_mesh(0.0, resolution=32)
    assert not mesh.is_empty and scene.isosurface_threshold < 10.0
    cams = orbit_cameras(3.0, 0.0, 0.0, 40.0, 64, 64)
    covered = float((scene.render(cams, 0.0).alpha > 0.5).sum())
    outline = np.sqrt(covered / np.pi) * 2 * 3.0 * np.tan(np.radians(20.0)) / 64  # in world units
    assert abs(float(np.linalg.norm(mesh.vertices[:, 1:], axis=1).max()) - outline) < 0.1
