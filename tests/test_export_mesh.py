"""Static mesh export (GLB / OBJ / PLY) checked by independent readers: the Khronos validator,
three.js GLTFLoader, trimesh and plyfile."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch
import trimesh
from export_scenes import PulsingPairScene, StripedBlobScene, inspect_three, validate_gltf

from renderers.export import export, export_mesh
from renderers.export.gltf import to_yup
from renderers.export.meshes import scene_mesh, write_mesh


def glb_json(path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    bin_len, bin_type = struct.unpack_from("<II", data, 20 + json_len)
    assert bin_type == 0x004E4942 and bin_len % 4 == 0
    return json.loads(data[20:20 + json_len]), data[28 + json_len:28 + json_len + bin_len]


def test_static_glb_is_valid_yup_and_coloured_like_the_scene(tmp_path):
    scene = PulsingPairScene()
    path = export(scene, tmp_path / "pair.glb", t=0.75, resolution=48)
    report = validate_gltf(path)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
    mesh = scene.to_mesh(0.75, 48)
    seen = inspect_three(path, 0)
    assert len(seen["meshes"]) == 1 and seen["meshes"][0]["hasColor"]
    assert seen["meshes"][0]["vertices"] == len(mesh.vertices)
    # +Z up became +Y up: the small sphere on top (world z up to 0.95) is at three.js y = 0.95.
    lo, hi = np.array(seen["samples"][0]["bounds"])
    expected = to_yup(mesh.bounds())
    np.testing.assert_allclose(np.sort(np.stack([lo, hi]), 0), np.sort(expected, 0), atol=1e-5)
    assert hi[1] > 0.9 and hi[2] < 0.5
    # The mesh's own vertex colours are kept (as linear COLOR_0).
    doc, _ = glb_json(path)
    assert "COLOR_0" in doc["meshes"][0]["primitives"][0]["attributes"]


def test_vertex_colours_from_renders_match_the_albedo(tmp_path):
    scene = StripedBlobScene()
    item = scene_mesh(scene, 0.5, resolution=40, bake_size=96)
    m = item.mesh
    canonical = (torch.as_tensor(m.vertices) - scene.offset(0.5)) / scene.scale(0.5)
    truth = scene.albedo(canonical).numpy()
    error = np.abs(m.vertex_colors - truth).max(1)
    # Stripe edges blur within a pixel or two; the bulk must be exact.
    assert np.median(error) < 0.02 and np.mean(error < 0.1) > 0.85


def test_obj_and_ply_reload_with_trimesh(tmp_path):
    scene = PulsingPairScene()
    mesh = scene.to_mesh(0.25, 40)
    obj = export(scene, tmp_path / "m.obj", t=0.25, resolution=40)
    ply = export(scene, tmp_path / "m.ply", t=0.25, resolution=40)
    for path, up in ((obj, "y"), (ply, "z")):
        loaded = trimesh.load(path, process=False, force="mesh")
        assert len(loaded.vertices) == len(mesh.vertices) and len(loaded.faces) == len(mesh.faces)
        expected = to_yup(mesh.vertices) if up == "y" else mesh.vertices
        np.testing.assert_allclose(loaded.vertices, expected, atol=1e-5)
        colours = np.asarray(loaded.visual.vertex_colors)[:, :3] / 255
        np.testing.assert_allclose(colours, mesh.vertex_colors, atol=1 / 255 + 1e-6)
    from plyfile import PlyData

    names = [p.name for p in PlyData.read(str(ply))["vertex"].properties]
    assert names[:3] == ["x", "y", "z"] and {"red", "green", "blue"} <= set(names)


def test_decimation_keeps_the_shape_with_fewer_faces(tmp_path):
    pytest.importorskip("fast_simplification")
    scene = StripedBlobScene()
    full = scene.to_mesh(0.0, 48)
    path = export_mesh(scene, tmp_path / "d.glb", t=0.0, resolution=48, decimate=0.25, bake_size=64)
    assert validate_gltf(path)["issues"]["numErrors"] == 0
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.faces) <= 0.3 * len(full.faces)
    np.testing.assert_allclose(loaded.bounds, np.sort(to_yup(full.bounds()), 0), atol=0.03)


@pytest.mark.slow
def test_uv_texture_bake_glb_and_obj(tmp_path):
    pytest.importorskip("xatlas")
    scene = StripedBlobScene()
    item = scene_mesh(scene, 0.5, resolution=32, texture_size=256, bake_size=96)
    glb = write_mesh(item, tmp_path / "t.glb")
    report = validate_gltf(glb)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    assert report["info"]["hasTextures"]
    assert inspect_three(glb, 0)["meshes"][0]["hasUv"]
    # Sample the baked texture at each vertex's UV: it must show the albedo there.
    px = np.clip((item.uvs * 256).astype(int), 0, 255)
    sampled = item.texture[px[:, 1], px[:, 0]] / 255
    canonical = (torch.as_tensor(item.mesh.vertices) - scene.offset(0.5)) / scene.scale(0.5)
    error = np.abs(sampled - scene.albedo(canonical).numpy()).max(1)
    assert np.median(error) < 0.05 and np.mean(error < 0.15) > 0.8
    # The GLB carries that same PNG.
    doc, blob = glb_json(glb)
    view = doc["bufferViews"][doc["images"][0]["bufferView"]]
    import imageio.v3 as iio

    png = blob[view.get("byteOffset", 0):view.get("byteOffset", 0) + view["byteLength"]]
    np.testing.assert_array_equal(iio.imread(io.BytesIO(png)), item.texture)

    obj = write_mesh(item, tmp_path / "t.obj")
    assert (tmp_path / "t.mtl").is_file() and (tmp_path / "t.png").is_file()
    loaded = trimesh.load(obj, process=False, force="mesh")
    assert loaded.visual.kind == "texture" and loaded.visual.material.image.size == (256, 256)
    # trimesh flips OBJ's v back: the same texel colours at the reloaded UVs.
    image = np.asarray(loaded.visual.material.image.convert("RGB"))
    uv = np.asarray(loaded.visual.uv)
    px = np.clip((np.stack([uv[:, 0], 1 - uv[:, 1]], 1) * 256).astype(int), 0, 255)
    assert np.mean(np.abs(image[px[:, 1], px[:, 0]] / 255 - sampled).max(1) < 0.02) > 0.95
