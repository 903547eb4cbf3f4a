"""The viewer shows scenes through the protocol only, coalesces time changes and moves its camera."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from renderers.cameras import orbit_cameras
from renderers.mesh import TriangleMesh
from renderers.scene import SplatScene
from studio.demo_scene import BouncingBall
from studio.viewer import CAMERA_PRESETS, CameraPreset, Viewer, free_port, splat_arrays, turntable_pose


class MeshOnlyScene:
    """A scene without splats: the viewer must fall back to per-frame meshes."""

    kind = "test-mesh"
    time_range = (0.0, 1.0)

    def __init__(self) -> None:
        self.mesh_calls: list[float] = []

    def to_mesh(self, t, resolution=128):
        self.mesh_calls.append(t)
        vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, t]], np.float32)
        return TriangleMesh(vertices, np.array([[0, 1, 2]]))

    def render(self, cameras, t):  # pragma: no cover - not used by the viewer
        raise NotImplementedError

    def save(self, directory):  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def load(cls, directory):  # pragma: no cover
        raise NotImplementedError


@pytest.fixture
def viewer():
    v = Viewer()
    yield v
    v.close()


def test_viewer_binds_localhost_on_a_free_port(viewer):
    assert viewer.url.startswith("http://127.0.0.1:")
    assert viewer.port != 8080 or free_port() != 8080


def test_splat_scene_streams_its_gaussians_at_the_requested_time():
    ball = BouncingBall(count=500)
    assert isinstance(ball, SplatScene)
    a, b = splat_arrays(ball, 0.0), splat_arrays(ball, 0.5)
    assert a["centers"].shape == (500, 3) and a["covariances"].shape == (500, 3, 3)
    assert a["opacities"].shape == (500, 1) and a["rgbs"].min() >= 0 and a["rgbs"].max() <= 1
    # float16 as viser sends them, converted exactly as numpy would (its own conversion is the slow one)
    exact = ball.gaussians_at(0.0).covariances().numpy().astype(np.float16)
    assert a["covariances"].dtype == np.float16 and np.array_equal(a["covariances"], exact)
    # the ball has dropped by its bounce height at t = 0.5
    assert a["centers"][:, 2].mean() - b["centers"][:, 2].mean() == pytest.approx(ball.height, abs=1e-4)


def test_scrubbing_updates_the_displayed_time(viewer):
    viewer.show(BouncingBall(count=300), 0.0)
    assert viewer.wait_idle()
    assert viewer.displayed_time == 0.0 and viewer.error is None
    for t in np.linspace(0, 1, 20):
        viewer.set_time(float(t))
    assert viewer.wait_idle()
    assert viewer.displayed_time == 1.0  # only the latest request matters


def test_mesh_scenes_are_meshed_once_per_frame(viewer):
    scene = MeshOnlyScene()
    viewer.show(scene, 0.25)
    assert viewer.wait_idle()
    viewer.set_time(0.5)
    assert viewer.wait_idle()
    viewer.set_time(0.25)
    assert viewer.wait_idle()
    assert scene.mesh_calls == [0.25, 0.5]
    assert viewer.displayed_time == 0.25


class CountingBall(BouncingBall):
    def __init__(self, count: int) -> None:
        super().__init__(count=count)
        self.calls: list[float] = []

    def gaussians_at(self, t):
        self.calls.append(t)
        return super().gaussians_at(t)


def test_splat_frames_are_computed_once_and_sent_again_from_the_cache(viewer):
    ball = CountingBall(300)
    viewer.show(ball, 0.25)
    assert viewer.wait_idle()
    sent = viewer._handle.buffer.copy()
    for t in (0.5, 0.25):
        viewer.set_time(t)
        assert viewer.wait_idle()
    assert ball.calls == [0.25, 0.5]
    assert viewer.displayed_time == 0.25 and np.array_equal(viewer._handle.buffer, sent)
    viewer.show(ball, 0.25)  # showing a scene again starts afresh (it may have changed)
    assert viewer.wait_idle()
    assert ball.calls == [0.25, 0.5, 0.25]


def test_the_splat_cache_keeps_to_its_memory():
    viewer = Viewer(splat_cache_mb=2.5 * 300 * 32 / 2**20)  # room for two frames of 300 splats
    try:
        ball = CountingBall(300)
        viewer.show(ball, 0.0)
        for t in (0.25, 0.5, 0.0, 0.25):
            assert viewer.wait_idle()
            viewer.set_time(t)
        assert viewer.wait_idle()
        assert ball.calls == [0.0, 0.25, 0.5, 0.0, 0.25]  # a third frame drops the oldest
        assert len(viewer._splat_cache) == 2
    finally:
        viewer.close()


def test_a_broken_scene_reports_an_error_and_the_viewer_survives(viewer):
    class Broken(MeshOnlyScene):
        def to_mesh(self, t, resolution=128):
            raise RuntimeError("no density here")

    viewer.show(Broken(), 0.0)
    assert viewer.wait_idle()
    assert "no density here" in viewer.error
    viewer.show(BouncingBall(count=100), 0.3)
    assert viewer.wait_idle()
    assert viewer.error is None and viewer.displayed_time == 0.3


def test_camera_presets_look_at_the_origin_from_where_they_say(viewer):
    viewer.set_camera("top")
    assert viewer.server.initial_camera.position[2] > 3.0
    viewer.set_camera("front")
    assert viewer.server.initial_camera.position[1] == pytest.approx(-CAMERA_PRESETS["front"].distance, abs=1e-4)
    with pytest.raises(ValueError, match="Unknown camera preset"):
        viewer.set_camera("under")


def test_turntable_orbits_until_another_preset_is_chosen(viewer):
    import time

    assert turntable_pose(CameraPreset(10.0, 170.0), 1.0, 30.0) == CameraPreset(10.0, -160.0)
    viewer.set_camera("side")
    viewer.set_camera("turntable")
    assert viewer.turntable_on
    azimuths = []
    for _ in range(3):
        time.sleep(0.15)
        azimuths.append(viewer.pose.azimuth)
    assert azimuths[0] > 0.0 and azimuths[0] < azimuths[1] < azimuths[2]  # side is azimuth 0; it keeps turning
    position = viewer.server.initial_camera.position  # new clients join the orbit where it is now
    assert np.hypot(position[0], position[1]) == pytest.approx(CAMERA_PRESETS["side"].distance, rel=1e-3)
    viewer.set_camera("front")
    assert not viewer.turntable_on
    time.sleep(0.1)
    assert viewer.pose == CAMERA_PRESETS["front"]


def test_demo_ball_renders_where_its_splats_are():
    ball = BouncingBall(count=200)
    cameras = orbit_cameras(3.0, 0.0, -90.0, 40.0, 64, 64)
    out = ball.render(cameras, 0.0)
    assert out.alpha.sum() > 50
    # the hit pixels' depth is close to the camera distance minus the radius, at the ball's height
    depth = out.depth[out.alpha[..., 0] > 0]
    assert torch.all((depth > 3.0 - ball.radius - 0.1) & (depth < 3.0 + ball.radius))
    mesh = ball.to_mesh(0.0, 64)
    assert not mesh.is_empty and mesh.vertex_colors is not None


def test_an_empty_mesh_clears_the_previous_scene(viewer):
    class Empty(MeshOnlyScene):
        def to_mesh(self, t, resolution=128):
            return TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3)))

    viewer.show(BouncingBall(count=100), 0.0)
    assert viewer.wait_idle() and viewer._handle is not None
    viewer.show(Empty(), 0.0)
    assert viewer.wait_idle() and viewer.error is None
    assert viewer._handle is None and viewer.displayed_time == 0.0
