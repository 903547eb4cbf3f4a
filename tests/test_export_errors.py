"""Bad input gets one clear sentence and leaves no partial file behind; the CLI-ready entry point."""

from __future__ import annotations

import numpy as np
import pytest
from export_scenes import EmptyScene, PulsingPairScene, StripedBlobScene

from renderers.export import FORMATS, ExportError, export, export_run_scene
from renderers.scene import register_scene_kind


def one_sentence(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message.endswith(".") and "\n" not in message and "Traceback" not in message
    return message


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError) as err:
        export(PulsingPairScene(), blocker / "out.glb", resolution=24)
    assert "cannot create the folder" in one_sentence(err)


def test_existing_file_needs_overwrite(tmp_path):
    target = tmp_path / "out.glb"
    target.write_bytes(b"keep me")
    with pytest.raises(ExportError) as err:
        export(PulsingPairScene(), target, resolution=24)
    assert "already exists" in one_sentence(err)
    assert target.read_bytes() == b"keep me"
    export(PulsingPairScene(), target, resolution=24, overwrite=True)
    assert target.read_bytes()[:4] == b"glTF"


def test_empty_scene(tmp_path):
    with pytest.raises(ExportError) as err:
        export(EmptyScene(), tmp_path / "e.obj", resolution=24)
    assert "empty" in one_sentence(err)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("path", "kwargs", "phrase"), [
    ("x.abc", {}, "cannot tell the format"),
    ("x.glb", {"format": "fbx"}, "unknown export format 'fbx'"),
    ("x.obj", {"format": "glb"}, "should end in .glb"),
    ("x.glb", {"t": 3.0}, "outside the scene's time range"),
    ("x.glb", {"sparkle": True}, "no option 'sparkle'"),
    ("x.ply", {"format": "3dgs-seq", "frames": 0}, "positive whole number"),
])
def test_bad_requests(tmp_path, path, kwargs, phrase):
    with pytest.raises(ExportError) as err:
        export(StripedBlobScene(n=50), tmp_path / path, **kwargs)
    assert phrase in one_sentence(err)
    assert not any(tmp_path.iterdir())


def test_not_a_scene(tmp_path):
    with pytest.raises(ExportError) as err:
        export(np.zeros(3), tmp_path / "x.glb")
    assert "not a scene" in one_sentence(err)


class FailsHalfWay(PulsingPairScene):
    def to_mesh(self, t, resolution=128):
        if t > 0.5:
            raise RuntimeError("out of memory")
        return super().to_mesh(t, resolution)


def test_a_failure_mid_export_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError):
        export(FailsHalfWay(), tmp_path / "a.glb", format="gltf-anim", frames=4, resolution=24)
    with pytest.raises(RuntimeError):
        export(StripedBlobSceneFailing(), tmp_path / "seq", format="3dgs-seq", frames=4)
    assert list(tmp_path.iterdir()) == []


class StripedBlobSceneFailing(StripedBlobScene):
    def __init__(self):
        super().__init__(n=50)

    def gaussians_at(self, t):
        if t > 0.5:
            raise RuntimeError("disk full")
        return super().gaussians_at(t)


def test_export_run_scene_loads_a_saved_scene(tmp_path):
    register_scene_kind(PulsingPairScene.kind, "export_scenes:PulsingPairScene")
    scene_dir = PulsingPairScene().save(tmp_path / "scene")
    out = export_run_scene(scene_dir, tmp_path / "out.glb", "glb", t=0.5, resolution=24)
    assert out.read_bytes()[:4] == b"glTF"
    anim = export_run_scene(scene_dir, tmp_path / "anim.glb", "gltf-anim", frames=3, resolution=24)
    assert anim.stat().st_size > 0
    with pytest.raises(ExportError) as err:
        export_run_scene(scene_dir, tmp_path / "s.ply", "3dgs-ply", frames=3)
    assert "--frames does not apply" in one_sentence(err)
    with pytest.raises(ExportError) as err:
        export_run_scene(tmp_path / "missing", tmp_path / "x.glb", "glb")
    assert "not a folder" in one_sentence(err)


def test_every_format_is_documented():
    assert {"glb", "obj", "ply", "gltf-anim", "3dgs-ply", "3dgs-seq", "mp4", "gif"} <= set(FORMATS)
    assert all(description for _, description in FORMATS.values())


def test_native_scene_folder_reloads(tmp_path):
    from renderers.scene import load_scene

    register_scene_kind(StripedBlobScene.kind, "export_scenes:StripedBlobScene")
    folder = export(StripedBlobScene(n=77), tmp_path / "native", format="scene")
    assert load_scene(folder).n == 77
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's own file")
    with pytest.raises(ExportError) as err:
        export(StripedBlobScene(n=5), tmp_path / "mine", format="scene", overwrite=True)
    assert "was not written by this exporter" in one_sentence(err)
    assert (tmp_path / "mine" / "notes.txt").is_file()
