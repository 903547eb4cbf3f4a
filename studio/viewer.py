"""The studio's 3D viewer: one viser server on 127.0.0.1 that shows any `Scene` at a chosen time.

It speaks only the `Scene` protocol: a scene that offers ``gaussians_at(t)`` (a
:class:`~renderers.scene.SplatScene`) streams as Gaussian splats; any other scene shows
``to_mesh(t)``, cached per frame because meshing a field is slow. Splat frames already sent are kept
too (viser's packed buffer, 32 bytes a splat, within ``splat_cache_mb``), so a playing loop computes
each frame once and then only re-sends it; each frame updates the one splat node in place. Updates run
on one background thread and coalesce, so scrubbing never queues up stale frames: only the latest
request is drawn. That thread shares the GIL with the window's event loop: the less Python it runs
per frame, the less often the window waits for it.
When a scene without splats (a field, a voxel volume) is shown and the camera or time comes to
rest, the viewer renders the scene itself at that camera (``Scene.render``) and shows it as the
background image with depth, hiding the mesh proxy; any movement brings the proxy back.
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


#: The preset that orbits the camera around the object until another preset is chosen.
TURNTABLE = "turntable"
CAMERA_PRESET_NAMES = ("front", "side", "top", TURNTABLE, "reset")


def turntable_pose(start: CameraPreset, elapsed_s: float, degrees_per_s: float) -> CameraPreset:
    """Where the turntable camera is ``elapsed_s`` after it started from ``start``: the same elevation and
    distance, the azimuth advanced (wrapped to [-180, 180))."""
    azimuth = (start.azimuth + degrees_per_s * elapsed_s + 180.0) % 360.0 - 180.0
    return CameraPreset(elevation=start.elevation, azimuth=azimuth, distance=start.distance)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def splat_arrays(scene: SplatScene, t: float) -> dict[str, np.ndarray]:
    """What viser's ``add_gaussian_splats`` takes for ``scene`` at time ``t``: centers ``[N, 3]``,
    covariances ``[N, 3, 3]``, rgbs ``[N, 3]`` in [0, 1], opacities ``[N, 1]``.

    Covariances come as float16, the precision viser sends them in: small splats' covariances are
    subnormal halves, which numpy converts in software (10 ms per 50k splats, every frame of playback,
    on the thread that shares the GIL with the window); torch converts them in hardware, bit for bit the same.
    """
    import torch

    with torch.no_grad():
        gaussians = scene.gaussians_at(t).detach().to("cpu")
        return {
            "centers": gaussians.means.float().numpy(),
            "covariances": gaussians.covariances().half().numpy(),
            "rgbs": gaussians.base_colors.float().numpy(),
            "opacities": gaussians.opacities.float().numpy()[:, None],
        }


def warm_up_meshing() -> None:
    """Import what showing a scene without splats needs (marching cubes, trimesh for the coloured proxy).

    The viewer thread calls it as it starts, while the studio starts too: done at a job's first scene update
    instead, these imports (scipy and networkx behind trimesh, 0.4 s) held the GIL for over 70 ms at a
    stretch and froze the window's event loop in the middle of a run.
    """
    import contextlib

    with contextlib.suppress(ImportError):  # a build without them shows splat scenes only
        import skimage.measure  # noqa: F401
        import trimesh  # noqa: F401


class Viewer:
    """A viser server showing one scene at one time.

    Args:
        host: interface to bind; 127.0.0.1 unless the user asks otherwise (browser mode ``--host``).
        port: TCP port; a free one when None.
        mesh_resolution: resolution passed to ``to_mesh`` for scenes without splats.
        mesh_cache_size: how many per-frame meshes to keep.
        splat_cache_mb: memory for splat frames already sent (the current scene's; oldest dropped first).
        render_at_rest: render non-splat scenes at the client's camera once it has rested ``rest_delay_s``.
        rest_size: the longer side, in pixels, of that render.
        turntable_degrees_per_s: how fast the ``turntable`` preset orbits.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, mesh_resolution: int = 96,
                 mesh_cache_size: int = 64, splat_cache_mb: float = 256.0, render_at_rest: bool = True,
                 rest_delay_s: float = 0.5, rest_size: int = 320, turntable_degrees_per_s: float = 30.0) -> None:
        import viser

        self.host = host
        self.server = viser.ViserServer(host=host, port=port or free_port(host), verbose=False)
        self.server.scene.set_up_direction("+z")
        # The floor of the unit cube that holds every object gives heights and motion a reference.
        self.server.scene.add_grid("/floor", width=2.0, height=2.0, cell_size=0.25, section_size=1.0,
                                   position=(0.0, 0.0, -1.0))
        self.server.gui.configure_theme(show_logo=False, show_share_button=False)
        # viser 1.1.1 cannot hide the control panel's status bar; naming the scene there beats "Connected".
        self.set_label("no scene")
        self.mesh_resolution = mesh_resolution
        self._mesh_cache: OrderedDict[tuple[int, float], object] = OrderedDict()
        self._mesh_cache_size = mesh_cache_size
        # Packed splat buffers by time, for the scene of the show() call numbered _splat_cache_shown. Only the
        # draw thread touches them; show() only counts (_shown), so the two never race.
        self._splat_cache: OrderedDict[float, np.ndarray] = OrderedDict()
        self._splat_cache_bytes = 0
        self._splat_cache_limit = int(splat_cache_mb * 2**20)
        self._splat_cache_shown = self._shown = 0
        self.scene: Scene | None = None
        self.requested_time = 0.0
        #: The time of the frame the viewer shows now (None before the first frame is drawn).
        self.displayed_time: float | None = None
        #: Seconds the last frame took to compute and send.
        self.last_update_s: float | None = None
        #: The last error a scene raised while drawing (a sentence), or None.
        self.error: str | None = None
        self._pose = CAMERA_PRESETS["reset"]
        self.turntable_degrees_per_s = turntable_degrees_per_s
        self._turntable_stop: threading.Event | None = None
        self._pose_lock = threading.Lock()  # a turntable step never overwrites a preset chosen meanwhile
        self._handle = None
        self.render_at_rest = render_at_rest
        self.rest_delay_s = rest_delay_s
        self.rest_size = rest_size
        self._rest_generation = 0
        self._rest_timer: threading.Timer | None = None
        #: (time, client id) of the full render on show now, or None while the proxy shows.
        self.rest_render: tuple[float, int] | None = None
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
            self._shown += 1
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

    def set_label(self, text: str) -> None:
        """The text on viser's control-panel bar (viser shows "Connected" there when it is empty)."""
        self.server.gui.set_panel_label(text)

    @property
    def turntable_on(self) -> bool:
        return self._turntable_stop is not None

    @property
    def pose(self) -> CameraPreset:
        """The camera pose the viewer sets now (it moves while the turntable is on)."""
        return self._pose

    def set_camera(self, preset: str) -> None:
        """Move every connected client's camera (and new clients') to a named preset: front, side, top,
        reset, or turntable, which orbits from the current pose until another preset is chosen."""
        if preset not in CAMERA_PRESET_NAMES:
            raise ValueError(f"Unknown camera preset '{preset}' (known: {', '.join(CAMERA_PRESET_NAMES)}).")
        with self._pose_lock:
            if preset == TURNTABLE:
                if not self.turntable_on:
                    self._start_turntable()
                return
            self._stop_turntable()
            self._set_pose(CAMERA_PRESETS[preset])

    def _set_pose(self, pose: CameraPreset) -> None:
        self._pose = pose
        position = self._preset_position(pose)
        initial = self.server.initial_camera
        initial.position = position
        initial.look_at = (0.0, 0.0, 0.0)
        for client in self.server.get_clients().values():
            self._apply_pose(client, position)

    def _start_turntable(self) -> None:
        stop = self._turntable_stop = threading.Event()
        start, started = self._pose, time.monotonic()
        # Flat top views would spin in place; the turntable looks from a little above instead.
        if abs(start.elevation) > 60.0:
            start = CameraPreset(elevation=22.0, azimuth=start.azimuth, distance=start.distance)

        def orbit() -> None:
            while not stop.wait(1 / 30):
                with self._pose_lock:
                    if stop.is_set():
                        return
                    self._set_pose(turntable_pose(start, time.monotonic() - started, self.turntable_degrees_per_s))

        threading.Thread(target=orbit, name="turntable", daemon=True).start()

    def _stop_turntable(self) -> None:
        if self._turntable_stop is not None:
            self._turntable_stop.set()
            self._turntable_stop = None

    def close(self) -> None:
        with self._pose_lock:
            self._stop_turntable()
        with self._wake:
            self._closed = True
            if self._rest_timer is not None:
                self._rest_timer.cancel()
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
        client.camera.on_update(lambda _camera: self._moved(client))

    # ---------------------------------------------------------------- full render at rest
    def _moved(self, client) -> None:
        """The camera or time moved: bring the proxy back and render again once things rest."""
        with self._wake:
            self._rest_generation += 1
            generation = self._rest_generation
            if self._rest_timer is not None:
                self._rest_timer.cancel()
            self._rest_timer = None
        if self.rest_render is not None:
            self._hide_rest_render()
        if self.render_at_rest and self.scene is not None and not isinstance(self.scene, SplatScene):
            timer = threading.Timer(self.rest_delay_s, self.render_now, args=(client, generation))
            timer.daemon = True
            self._rest_timer = timer
            timer.start()

    def render_now(self, client, generation: int | None = None) -> bool:
        """Render the scene at ``client``'s camera and show it behind the scene; False when it went
        stale (the camera or time moved on) or there is nothing to render."""
        import torch

        from renderers.cameras import Cameras

        scene, t = self.scene, self.displayed_time
        if scene is None or t is None or isinstance(scene, SplatScene) or self._closed:
            return False
        camera = client.camera
        aspect = float(camera.aspect) if camera.aspect else 4 / 3
        width = self.rest_size if aspect >= 1 else max(16, round(self.rest_size * aspect))
        height = max(16, round(width / aspect))
        cameras = Cameras.from_viser(camera.wxyz, camera.position, camera.fov, width, height)
        try:
            with torch.no_grad():
                out = scene.render(cameras, t)
        except Exception as err:
            self.error = f"The scene could not be rendered at t = {t:.3f}: {err}"
            return False
        if generation is not None and generation != self._rest_generation:
            return False
        alpha = out.alpha[0].float().cpu().numpy()
        rgb = out.rgb[0].float().cpu().numpy() + (1 - alpha)  # over viser's white background
        depth = np.where(alpha > 0.5, out.depth[0].float().cpu().numpy(), 100.0)
        client.scene.set_background_image((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), format="png",
                                          depth=depth.astype(np.float32))
        if self._handle is not None:
            self._handle.visible = False
        self.rest_render = (t, client.client_id)
        return True

    def _hide_rest_render(self) -> None:
        for client in self.server.get_clients().values():
            client.scene.set_background_image(None)
        if self._handle is not None:
            self._handle.visible = True
        self.rest_render = None

    def _request(self) -> None:
        self._generation += 1
        self._wake.notify_all()

    def _draw_loop(self) -> None:
        warm_up_meshing()
        while True:
            with self._wake:
                while self._drawn_generation == self._generation and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                generation, scene, t, shown = self._generation, self.scene, self.requested_time, self._shown
            if shown != self._splat_cache_shown:
                self._splat_cache.clear()
                self._splat_cache_bytes, self._splat_cache_shown = 0, shown
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
            self._draw_splats(scene, t)
            return
        mesh = self._mesh_at(scene, t)
        if mesh.is_empty:  # e.g. a field early in a fit: no proxy, only the full render once at rest
            self._clear()
            self._after_proxy_drawn()
            return
        # No shadows: with shadow maps, software WebGL (llvmpipe, SwiftShader) draws an empty canvas.
        if mesh.vertex_colors is not None:
            self._handle = self.server.scene.add_mesh_trimesh(SCENE_NODE, mesh.to_trimesh(), cast_shadow=False,
                                                              receive_shadow=False)
        else:
            self._handle = self.server.scene.add_mesh_simple(SCENE_NODE, mesh.vertices, mesh.faces,
                                                             color=(150, 160, 175), cast_shadow=False,
                                                             receive_shadow=False)
        self._after_proxy_drawn()

    def _draw_splats(self, scene: SplatScene, t: float) -> None:
        """Splats at ``t``: a frame sent before is re-sent from the cache, a new one computed and kept."""
        import viser

        splats = self._handle if isinstance(self._handle, viser.GaussianSplatHandle) else None
        key = round(t, 6)
        buffer = self._splat_cache.get(key) if splats is not None else None
        if buffer is None:
            arrays = splat_arrays(scene, t)
            if len(arrays["centers"]) == 0:
                self._clear()
                return
        if self.rest_render is not None:
            self._hide_rest_render()
        if buffer is not None:
            self._splat_cache.move_to_end(key)
            splats.buffer = buffer
            return
        if splats is None:
            self._handle = splats = self.server.scene.add_gaussian_splats(SCENE_NODE, **arrays)
        else:  # the same node, new contents (viser's per-frame path; a cached frame goes the same way)
            splats.set_gaussians(**arrays)
        self._keep_splats(key, splats.buffer.copy())  # a copy: viser updates the node's buffer in place

    def _keep_splats(self, key: float, buffer: np.ndarray) -> None:
        old = self._splat_cache.pop(key, None)
        self._splat_cache_bytes += buffer.nbytes - (old.nbytes if old is not None else 0)
        self._splat_cache[key] = buffer
        while self._splat_cache_bytes > self._splat_cache_limit and self._splat_cache:
            self._splat_cache_bytes -= self._splat_cache.popitem(last=False)[1].nbytes

    def _after_proxy_drawn(self) -> None:
        for client in self.server.get_clients().values():
            self._moved(client)

    def _clear(self) -> None:
        if self.rest_render is not None:
            self._hide_rest_render()
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

