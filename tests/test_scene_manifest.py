"""Scene manifests: every scene kind refuses another kind's folder and a newer format in one sentence."""

from __future__ import annotations

import json

import pytest
import torch

from renderers.field import Field4D, FieldConfig
from renderers.field_scene import FieldScene
from renderers.gaussian_scene import DeformableGaussianScene
from renderers.hash_grid import HashGridConfig
from renderers.scene import read_manifest, write_manifest
from renderers.splats import GaussianSet, rgb_to_sh_dc
from renderers.voxels import VoxelScene


def _gaussians(n=20):
    g = torch.Generator().manual_seed(0)
    return GaussianSet(torch.rand(n, 3, generator=g) - 0.5, torch.nn.functional.normalize(torch.randn(n, 4), dim=1),
                       torch.full((n, 3), -3.0), torch.zeros(n), rgb_to_sh_dc(torch.rand(n, 3, generator=g))[:, None])


def _bump_format(directory, version=99):
    path = directory / "scene.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(manifest | {"format_version": version}))


def test_read_manifest_checks_kind_and_format(tmp_path):
    write_manifest(tmp_path / "a", "voxels", format_version=2)
    assert read_manifest(tmp_path / "a", "voxels", format_version=2)["format_version"] == 2
    with pytest.raises(ValueError, match="holds a 'voxels' scene, not a Gaussian scene"):
        read_manifest(tmp_path / "a", "gaussians", "a Gaussian scene")
    with pytest.raises(ValueError, match="saved by a newer version .voxels format 2.; update fourd-studio"):
        read_manifest(tmp_path / "a", "voxels", format_version=1)
    with pytest.raises(FileNotFoundError, match="is not a saved scene"):
        read_manifest(tmp_path / "missing")


def test_scene_kinds_refuse_each_other_and_newer_formats(tmp_path):
    DeformableGaussianScene(_gaussians()).save(tmp_path / "g")
    VoxelScene(torch.zeros(1, 4, 4, 4, 4)).save(tmp_path / "v")
    tiny = HashGridConfig(n_levels=2, n_features_per_level=2, log2_hashmap_size=8, base_resolution=4,
                          per_level_scale=2.0)
    FieldScene(Field4D(FieldConfig(static_grid=tiny, dynamic_grid=tiny, mlp_width=8))).save(tmp_path / "f")
    with pytest.raises(ValueError, match="not a voxel scene"):
        VoxelScene.load(tmp_path / "g")
    with pytest.raises(ValueError, match="not a Gaussian scene"):
        DeformableGaussianScene.load(tmp_path / "v")
    with pytest.raises(ValueError, match="not a field scene"):
        FieldScene.load(tmp_path / "g")
    with pytest.raises(ValueError, match="not a Gaussian scene"):
        DeformableGaussianScene.load(tmp_path / "f")
    for name, cls in (("g", DeformableGaussianScene), ("f", FieldScene)):
        cls.load(tmp_path / name)
        _bump_format(tmp_path / name)
        with pytest.raises(ValueError, match="saved by a newer version"):
            cls.load(tmp_path / name)
