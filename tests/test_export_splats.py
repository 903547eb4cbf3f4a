"""3DGS PLY export: exact property order (plyfile), lossless round trip that renders identically,
per-frame sequences with an index, and PlayCanvas splat-transform reading the files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from export_scenes import PulsingPairScene, StripedBlobScene, splat_render, splat_stats
from plyfile import PlyData

from renderers.cameras import orbit_cameras
from renderers.export import ExportError, export, read_gaussian_ply
from renderers.export.splats import gaussian_ply_properties


def test_property_list_and_encoding_are_the_3dgs_ones(tmp_path):
    scene = StripedBlobScene(n=200)
    path = export(scene, tmp_path / "s.ply", format="3dgs-ply", t=0.4)
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    vertex = ply["vertex"]
    names = [p.name for p in vertex.properties]
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert names == expected == gaussian_ply_properties(3)
    assert {p.val_dtype for p in vertex.properties} == {"f4"}
    g = scene.gaussians_at(0.4)
    # Raw parameters, and f_rest channel-major (all of red's coefficients first), as 3DGS writes them.
    np.testing.assert_array_equal(vertex["opacity"], g.opacity_logits.numpy())
    np.testing.assert_array_equal(vertex["scale_2"], g.log_scales[:, 2].numpy())
    np.testing.assert_array_equal(vertex["rot_0"], g.quats[:, 0].numpy())
    np.testing.assert_array_equal(vertex["f_rest_0"], g.sh[:, 1, 0].numpy())
    np.testing.assert_array_equal(vertex["f_rest_15"], g.sh[:, 1, 1].numpy())
    np.testing.assert_array_equal(vertex["f_rest_44"], g.sh[:, 15, 2].numpy())


def test_round_trip_renders_identically(tmp_path):
    scene = StripedBlobScene(n=400)
    original = scene.gaussians_at(0.7)
    back = read_gaussian_ply(export(scene, tmp_path / "s.ply", format="3dgs-ply", t=0.7))
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        torch.testing.assert_close(getattr(back, name), getattr(original, name), rtol=0, atol=0)
    cams = orbit_cameras(3.0, 20.0, torch.tensor([0.0, 120.0]), 40.0, 48, 48)
    a, b = splat_render(original, cams), splat_render(back, cams)
    assert a.std() > 0.05  # the render shows something
    mse = float((a - b).square().mean())
    psnr = math.inf if mse == 0 else -10 * math.log10(mse)
    assert psnr >= 50


def test_sequence_folder_and_index(tmp_path):
    scene = StripedBlobScene(n=100)
    folder = export(scene, tmp_path / "seq", format="3dgs-seq", frames=4, fps=8.0, time_range=(0.2, 0.8))
    index = json.loads((folder / "sequence.json").read_text())
    assert index["fps"] == 8.0 and index["loop"] is True and index["sh_degree"] == 3
    assert [f["t"] for f in index["frames"]] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert [f["time_s"] for f in index["frames"]] == pytest.approx([0, 0.125, 0.25, 0.375])
    xs = []
    for frame in index["frames"]:
        g = read_gaussian_ply(folder / frame["file"])
        torch.testing.assert_close(g.means, scene.gaussians_at(frame["t"]).means)
        xs.append(float(g.means[:, 0].mean()))
    assert xs == sorted(xs) and xs[-1] - xs[0] > 0.25  # it moves along +x
    assert sorted(p.name for p in folder.iterdir()) == [f"frame_000{k}.ply" for k in range(4)] + ["sequence.json"]
    # Re-exporting needs overwrite, then replaces the folder.
    with pytest.raises(ExportError, match="already exists"):
        export(scene, folder, format="3dgs-seq", frames=2)
    export(scene, folder, format="3dgs-seq", frames=2, overwrite=True)
    assert len(json.loads((folder / "sequence.json").read_text())["frames"]) == 2


def test_playcanvas_splat_transform_reads_the_file(tmp_path):
    scene = StripedBlobScene(n=300)
    path = export(scene, tmp_path / "s.ply", format="3dgs-ply", t=1.0)
    stats = splat_stats(path)
    assert stats["gaussian"] and stats["numGaussians"] == 300 and stats["shBands"] == 3
    columns = stats["stats"][0]["columns"]
    data = stats["stats"][0]["data"]
    assert sum(data["nanCount"]) == 0 and sum(data["infCount"]) == 0
    means = scene.gaussians_at(1.0).means
    x = columns.index("x")
    assert data["min"][x] == pytest.approx(float(means[:, 0].min()), abs=1e-5)
    assert data["max"][x] == pytest.approx(float(means[:, 0].max()), abs=1e-5)


def test_a_scene_without_gaussians_is_refused(tmp_path):
    with pytest.raises(ExportError, match="cannot be exported as Gaussian splats"):
        export(PulsingPairScene(), tmp_path / "s.ply", format="3dgs-ply")
    assert not any(tmp_path.iterdir())
