"""Animated GLB: morph targets for a deforming scene, a flip-book when topology changes; checked with
the Khronos validator and three.js (the animation moves the bounds as the scene moves)."""

from __future__ import annotations

import numpy as np
import pytest
from export_scenes import PulsingPairScene, StripedBlobScene, inspect_three, validate_gltf

from renderers.export import ExportError, export
from renderers.export.animation import canonical_points
from renderers.export.gltf import to_yup


def yup_bounds(mesh) -> np.ndarray:
    return np.sort(to_yup(mesh.bounds()), 0)


def test_deforming_scene_gives_morph_targets_that_move_like_the_scene(tmp_path):
    scene = StripedBlobScene()
    frames, fps = 6, 12.0
    path = export(scene, tmp_path / "blob.glb", format="gltf-anim", frames=frames, fps=fps, resolution=32,
                  bake_size=64)
    report = validate_gltf(path)
    assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
    assert report["info"]["hasMorphTargets"] and report["info"]["animationCount"] == 1
    duration = (frames - 1) / fps
    seen = inspect_three(path, 0, duration / 2, duration)
    assert len(seen["meshes"]) == 1 and seen["meshes"][0]["morphTargets"] == frames - 1
    clip = seen["clips"][0]
    assert clip["duration"] == pytest.approx(duration, rel=1e-5)
    assert seen["extras"]["fps"] == fps and seen["extras"]["loop"] is True
    assert seen["extras"]["mode"] == "morph-targets" and len(seen["extras"]["scene_times"]) == frames
    first, middle, last = (np.array(s["bounds"]) for s in seen["samples"])
    # The first and last keyframes are where the scene's own surfaces are at t = 0 and t = 1.
    np.testing.assert_allclose(first, yup_bounds(scene.to_mesh(0.0, 32)), atol=0.02)
    np.testing.assert_allclose(last, yup_bounds(scene.to_mesh(1.0, 32)), atol=0.02)
    assert np.abs(last - first).max() > 0.2
    # Half way it is between them (LINEAR weights), i.e. it plays smoothly.
    np.testing.assert_allclose(middle, yup_bounds(scene.to_mesh(0.5, 32)), atol=0.03)


def test_canonical_points_invert_the_deformation():
    scene = StripedBlobScene()
    points = scene.to_mesh(0.3, 24).vertices
    canonical, error = canonical_points(scene, points, 0.3)
    assert error < 1e-5
    np.testing.assert_allclose(np.linalg.norm(canonical, axis=1), scene.radius, atol=0.02)


def test_changing_topology_gives_a_step_flipbook(tmp_path):
    scene = PulsingPairScene()
    frames, fps = 5, 4.0
    path = export(scene, tmp_path / "pair.glb", format="gltf-anim", frames=frames, fps=fps, resolution=32,
                  loop=False)
    report = validate_gltf(path)
    assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
    sample_times = [k / fps + 0.01 for k in range(frames - 1)] + [(frames - 1) / fps]
    seen = inspect_three(path, *sample_times)
    assert len(seen["meshes"]) == frames
    clip = seen["clips"][0]
    assert clip["duration"] == pytest.approx((frames - 1) / fps) and clip["tracks"] == frames
    assert set(clip["interpolations"]) == {2300}  # THREE.InterpolateDiscrete: glTF STEP
    assert seen["extras"]["mode"] == "flip-book" and seen["extras"]["loop"] is False
    times = np.linspace(0, 1, frames)
    for k, sample in enumerate(seen["samples"]):
        np.testing.assert_allclose(np.array(sample["bounds"]), yup_bounds(scene.to_mesh(times[k], 32)), atol=1e-5)
    # The second sphere appears: the top of the visible geometry jumps.
    assert seen["samples"][-1]["bounds"][1][1] > seen["samples"][0]["bounds"][1][1] + 0.3


def test_morph_mode_on_a_scene_without_deformation_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="flipbook"):
        export(PulsingPairScene(), tmp_path / "x.glb", format="gltf-anim", frames=3, mode="morph")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("frames", [0, 1])
def test_too_few_frames(tmp_path, frames):
    with pytest.raises(ExportError, match="at least 2 frames"):
        export(StripedBlobScene(), tmp_path / "x.glb", format="gltf-anim", frames=frames)
    assert not any(tmp_path.iterdir())


class AppearsLater(PulsingPairScene):
    """Nothing before t = 0.5, then the pair."""

    def spheres(self, t):
        return super().spheres(t) if t >= 0.5 else [(np.zeros(3), -1.0)]


def test_flipbook_frames_may_be_empty_but_not_all(tmp_path):
    path = export(AppearsLater(), tmp_path / "a.glb", format="gltf-anim", frames=3, fps=2.0, resolution=24)
    report = validate_gltf(path)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    seen = inspect_three(path, 0.1, 1.0)
    assert len(seen["meshes"]) == 2
    assert seen["samples"][0]["bounds"] is None and seen["samples"][1]["bounds"] is not None
    from export_scenes import EmptyScene

    with pytest.raises(ExportError, match="empty at every one of the 3 frames"):
        export(EmptyScene(), tmp_path / "e.glb", format="gltf-anim", frames=3, resolution=24)
    assert not (tmp_path / "e.glb").exists()
