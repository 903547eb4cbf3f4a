"""`fourd export` on a saved scene folder and on a run folder's result."""

import torch

from pipelines.cli import main
from renderers.voxels import VoxelScene


def _ball(tmp_path):
    R = 24
    axis = torch.linspace(-1, 1, R)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    inside = ((x**2 + y**2 + z**2) < 0.5**2).float()
    rgb = torch.stack([0.9 * torch.ones_like(x), 0.2 * torch.ones_like(x), 0.1 * torch.ones_like(x)])
    scene = VoxelScene.from_values((inside * 40)[None], rgb[None])
    folder = tmp_path / "scene"
    scene.save(folder)
    return folder


def test_export_scene_folder_to_glb(tmp_path, capsys):
    folder = _ball(tmp_path)
    out = tmp_path / "ball.glb"
    assert main(["export", str(folder), "--out", str(out), "--resolution", "32"]) == 0
    data = out.read_bytes()
    assert data[:4] == b"glTF" and len(data) > 1000


def test_export_bad_sources_exit_2_with_one_sentence(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x.glb")]) == 2
    assert "neither a run nor a saved scene" in capsys.readouterr().err
    folder = _ball(tmp_path)
    assert main(["export", str(folder), "--out", str(tmp_path / "x.xyz")]) == 2
    assert "format" in capsys.readouterr().err.lower()
    # the folder that holds the runs (an --out folder) is not itself a run: say so and name one
    runs = tmp_path / "runs"
    assert main(["generate", "toy-fit", "--out", str(runs), "--set", "steps=2", "--set", "image_size=12",
                 "--set", "resolution=10"]) == 0
    [run] = list(runs.iterdir())
    capsys.readouterr()
    assert main(["export", str(runs), "--out", str(tmp_path / "x.glb")]) == 2
    err = capsys.readouterr().err
    assert "folder of 1 run(s), not a run" in err and run.name in err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x.glb")]) == 2
    assert "neither a run nor a saved scene" in capsys.readouterr().err
