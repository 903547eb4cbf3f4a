"""The studio's 3D viewer: one viser server on 127.0.0.1 that shows any `Scene` at a chosen time.

It speaks only the `Scene` protocol: a scene that offers ``gaussians_at(t)`` (a
:class:`~renderers.scene.SplatScene`) streams as Gaussian splats; any other scene shows
``to_mesh(t)``, cached per frame because meshing a field is slow. Updates run on one background
thread and coalesce, so scrubbing never queues up stale frames: only the latest request is drawn.
The Qt window embeds :attr:`Viewer.url` with QWebEngineView; browser mode serves the same URL.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from renderers.cameras import orbit_positions
from renderers.scene import Scene, SplatScene

SCENE_NODE = "/scene"


@dataclass(frozen=True)
class CameraPreset:
    """An orbit pose around the origin (degrees); azimuth 0 looks from +X, elevation from the XY plane."""

    elevation: float
    azimuth: float
    distance: float = 3.6


# Front looks from -Y (as Blender's front view), side from +X, top from straight above (+Z up).
CAMERA_PRESETS: dict[str, CameraPreset] = {
    "front": CameraPreset(elevation=0.0, azimuth=-90.0),
    "side": CameraPreset(elevation=0.0, azimuth=0.0),
    "top": CameraPreset(elevation=89.5, azimuth=-90.0),
    "reset": CameraPreset(elevation=22.0, azimuth=-60.0),
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def splat_arrays(scene: SplatScene, t: float) -> dict[str, np.ndarray]:
    """What viser's ``add_gaussian_splats`` takes for ``scene`` at time ``t``: centers ``[N, 3]``,
    covariances ``[N, 3, 3]``, rgbs ``[N, 3]`` in [0, 1], opacities ``[N, 1]``."""
    import torch

    with torch.no_grad():
        gaussians = scene.gaussians_at(t).detach().to("cpu")
        return {
            "centers": gaussians.means.float().numpy(),
            "covariances": gaussians.covariances().float().numpy(),
            "rgbs": gaussians.base_colors.float().numpy(),
            "opacities": gaussians.opacities.float().numpy()[:, None],
        }


class Viewer:
    """A viser server showing one scene at one time.

    Args:
        host: interface to bind; 127.0.0.1 unless the user asks otherwise (browser mode ``--host``).
        port: TCP port; a free one when None.
        mesh_resolution: resolution passed to ``to_mesh`` for scenes without splats.
        mesh_cache_size: how many per-frame meshes to keep.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, mesh_resolution: int = 96,
                 mesh_cache_size: int = 64) -> None:
        import viser

        self.host = host
        self.server = viser.ViserServer(host=host, port=port or free_port(host), verbose=False)
        self.server.scene.set_up_direction("+z")
        # The floor of the unit cube that holds every object gives heights and motion a reference.
        self.server.scene.add_grid("/floor", width=2.0, height=2.0, cell_size=0.25, section_size=1.0,
                                   position=(0.0, 0.0, -1.0))
        self.server.gui.configure_theme(show_logo=False, show_share_button=False)
        self.mesh_resolution = mesh_resolution
        self._mesh_cache: OrderedDict[tuple[int, float], object] = OrderedDict()
        self._mesh_cache_size = mesh_cache_size
        self.scene: Scene | None = None
        self.requested_time = 0.0
        #: The time of the frame the viewer shows now (None before the first frame is drawn).
        self.displayed_time: float | None = None
        #: Seconds the last frame took to compute and send.
        self.last_update_s: float | None = None
        #: The last error a scene raised while drawing (a sentence), or None.
        self.error: str | None = None
        self._pose = CAMERA_PRESETS["reset"]
        self._handle = None
        self._generation = 0
        self._drawn_generation = 0
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._draw_loop, name="viewer", daemon=True)
        self._thread.start()
        self.server.on_client_connect(self._on_connect)
        self.set_camera("reset")

    # ---------------------------------------------------------------- public API
    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def client_count(self) -> int:
        """Browsers (or embedded views) connected now."""
        return len(self.server.get_clients())

    def show(self, scene: Scene | None, t: float | None = None) -> None:
        """Show ``scene`` (None clears the view) at time ``t`` (the current time when None)."""
        with self._wake:
            self.scene = scene
            self._mesh_cache.clear()
            if t is not None:
                self.requested_time = float(t)
            self._request()

    def set_time(self, t: float) -> None:
        """Show the current scene at time ``t``; returns at once, the frame is drawn in the background."""
        with self._wake:
            self.requested_time = float(t)
            self._request()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every requested frame is drawn; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._drawn_generation != self._generation:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def minimize_controls(self) -> None:
        """Fold viser's own control panel away (the desktop window has its own controls)."""
        self.server.gui.main_panel.minimize()

    def set_camera(self, preset: str) -> None:
        """Move every connected client's camera (and new clients') to a named preset: front, side, top, reset."""
        if preset not in CAMERA_PRESETS:
            raise ValueError(f"Unknown camera preset '{preset}' (known: {', '.join(CAMERA_PRESETS)}).")
        self._pose = CAMERA_PRESETS[preset]
        position = self._preset_position(self._pose)
        initial = self.server.initial_camera
        initial.position = position
        initial.look_at = (0.0, 0.0, 0.0)
        for client in self.server.get_clients().values():
            self._apply_pose(client, position)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=5)
        self.server.stop()

    # ---------------------------------------------------------------- internals
    @staticmethod
    def _preset_position(pose: CameraPreset) -> tuple[float, float, float]:
        return tuple(float(v) for v in orbit_positions(pose.distance, pose.elevation, pose.azimuth)[0])

    def _apply_pose(self, client, position) -> None:
        with client.atomic():
            client.camera.up_direction = (0.0, 0.0, 1.0)
            client.camera.position = position
            client.camera.look_at = (0.0, 0.0, 0.0)

    def _on_connect(self, client) -> None:
        self._apply_pose(client, self._preset_position(self._pose))

    def _request(self) -> None:
        self._generation += 1
        self._wake.notify_all()

    def _draw_loop(self) -> None:
        while True:
            with self._wake:
                while self._drawn_generation == self._generation and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                generation, scene, t = self._generation, self.scene, self.requested_time
            start = time.perf_counter()
            try:
                self._draw(scene, t)
                error = None
            except Exception as err:  # a broken scene must not kill the viewer thread
                error = f"The scene could not be drawn at t = {t:.3f}: {err}"
            with self._wake:
                self.error = error
                self.displayed_time = t if error is None else self.displayed_time
                self.last_update_s = time.perf_counter() - start
                self._drawn_generation = generation
                self._wake.notify_all()

    def _draw(self, scene: Scene | None, t: float) -> None:
        if scene is None:
            self._clear()
            return
        if isinstance(scene, SplatScene):
            arrays = splat_arrays(scene, t)
            if len(arrays["centers"]) == 0:
                self._clear()
                return
            self._handle = self.server.scene.add_gaussian_splats(SCENE_NODE, **arrays)
            return
        mesh = self._mesh_at(scene, t)
        if mesh.is_empty:  # e.g. a field early in a fit: show nothing rather than the previous scene
            self._clear()
            return
        if mesh.vertex_colors is not None:
            self._handle = self.server.scene.add_mesh_trimesh(SCENE_NODE, mesh.to_trimesh())
        else:
            self._handle = self.server.scene.add_mesh_simple(SCENE_NODE, mesh.vertices, mesh.faces,
                                                             color=(200, 200, 210))

    def _clear(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _mesh_at(self, scene: Scene, t: float):
        key = (id(scene), round(t, 6))
        if key in self._mesh_cache:
            self._mesh_cache.move_to_end(key)
            return self._mesh_cache[key]
        mesh = scene.to_mesh(t, self.mesh_resolution)
        self._mesh_cache[key] = mesh
        while len(self._mesh_cache) > self._mesh_cache_size:
            self._mesh_cache.popitem(last=False)
        return mesh

