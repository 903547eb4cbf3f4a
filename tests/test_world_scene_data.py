"""WorldScene as a Scene, the cached datasets, the example inputs."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from assets import asset_path
from pipelines.world.datasets import LAYOUTS, WorldDataset, collate, split_seeds
from pipelines.world.grammar import WorldSpec, attributes_from_text
from pipelines.world.scene import WorldScene
from renderers.cameras import orbit_cameras
from renderers.scene import Scene, load_scene


def test_world_scene_is_a_scene_that_round_trips(tmp_path):
    scene = WorldScene.from_seed(11)
    assert isinstance(scene, Scene)
    scene.save(tmp_path / "s")
    loaded = load_scene(tmp_path / "s")
    assert isinstance(loaded, WorldScene) and loaded.spec == scene.spec
    cams = orbit_cameras(2.7, 10.0, torch.tensor([0.0, 120.0]), 40.0, 16, 12)
    out = loaded.render(cams, 0.4)
    assert out.rgb.shape == (2, 12, 16, 3) and out.alpha.shape == (2, 12, 16, 1) and out.depth.shape == (2, 12, 16, 1)
    assert torch.equal(out.rgb, scene.render(cams, 0.4).rgb)


def test_world_scene_mesh_is_closed_and_outward():
    mesh = WorldScene(WorldSpec("torus", "teal", "spin")).to_mesh(0.2, resolution=40).to_trimesh()
    assert mesh.is_watertight and mesh.volume > 0
    assert mesh.visual.vertex_colors[:, 1].mean() > mesh.visual.vertex_colors[:, 0].mean()  # teal


def test_a_bad_scene_folder_gets_one_sentence(tmp_path):
    (tmp_path / "scene.json").write_text(json.dumps({"kind": "world", "spec": {"shape": "dragon"}}))
    with pytest.raises(ValueError, match="cannot read"):
        load_scene(tmp_path)


def test_splits_are_disjoint():
    train, val, test = (set(split_seeds(s, 5000)) for s in ("train", "validation", "test"))
    assert not (train & val) and not (train & test) and not (val & test)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_has_its_shapes_and_labels(layout, tmp_path):
    data = WorldDataset(layout, "validation", 3, resolution=12, views=3, frames=2, voxel_resolution=8,
                        cache_dir=tmp_path, shard_size=2)
    assert data.build(workers=1) == 2
    item = data[2]
    expected = {"image": (12, 12), "multiview": (3, 12, 12), "video": (2, 12, 12), "matrix": (3, 2, 12, 12)}
    if layout == "voxels":
        assert item["density"].shape == (8, 8, 8) and item["voxel_rgb"].shape == (8, 8, 8, 3)
    else:
        assert item["rgb"].shape == (*expected[layout], 3) and item["alpha"].shape == (*expected[layout], 1)
        assert item["alpha"].max() == 1 and item["alpha"].min() == 0
    assert item["seed"] == split_seeds("validation", 3)[2]
    assert item["labels"] == item["spec"].labels()
    found = attributes_from_text(item["caption"])
    assert found["shape"] == item["spec"].shape
    batch = collate([data[0], data[1]])
    assert batch["labels"]["shape"].shape == (2,)


def test_the_cache_is_reused_and_regenerated(tmp_path):
    data = WorldDataset("matrix", "train", 2, resolution=10, views=2, frames=2, cache_dir=tmp_path, shard_size=2)
    data.build(workers=1)
    first = data[1]["rgb"].clone()
    assert data.build(workers=1) == 0
    path = data.shard_path(0)
    path.write_bytes(path.read_bytes()[:100])  # truncated, as after a crash
    fresh = WorldDataset("matrix", "train", 2, resolution=10, views=2, frames=2, cache_dir=tmp_path, shard_size=2)
    assert torch.equal(fresh[1]["rgb"], first)
    assert np.load(path)["rgb"].shape == (2, 2, 2, 10, 10, 3)


def test_the_bundled_examples_are_listed_and_readable():
    listing = json.loads(asset_path("examples", "examples.json").read_text())
    kinds = {entry["kind"] for entry in listing}
    assert kinds == {"image", "video"} and len(listing) >= 6
    for entry in listing:
        spec = WorldSpec.from_dict(entry["spec"])
        assert entry["caption"] == spec.caption()
        data = iio.imread(asset_path("examples", entry["file"]), **({"plugin": "pyav"} if entry["kind"] == "video"
                                                                     else {}))
        if entry["kind"] == "image":
            assert data.shape == (entry["height"], entry["width"], 4)
            assert data[..., 3].min() == 0 and data[..., 3].max() == 255
        else:
            assert data.shape == (entry["frames"], entry["height"], entry["width"], 3)
            assert asset_path("examples", entry["preview"]).is_file()


def test_fourd_world_commands_build_a_dataset_and_a_contact_sheet(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["world", "build", "video", "--size", "2", "--resolution", "8", "--frames", "2",
                 "--workers", "1", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "1 shard(s) rendered" in capsys.readouterr().out
    assert main(["world", "sheet", str(tmp_path / "sheet.png"), "--seeds", "1", "2", "--frames", "3",
                 "--resolution", "12"]) == 0
    assert iio.imread(tmp_path / "sheet.png").shape == (24, 36, 3)


def test_building_in_process_keeps_the_callers_torch_threads(tmp_path):
    # shards are rendered on one thread; a training process that renders one itself must get its threads back
    torch.set_num_threads(2)
    data = WorldDataset("matrix", "train", 2, resolution=10, views=2, frames=2, cache_dir=tmp_path, shard_size=2)
    data.build(workers=1)
    assert torch.get_num_threads() == 2
