"""Videos and contact sheets rendered through ``scene.render``.

Three camera paths: ``turntable`` (a full orbit at a fixed time), ``timelapse`` (a fixed camera
while time runs) and ``orbit`` (orbit while playing). MP4 is H.264 through PyAV; GIF and PNG
go through imageio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from renderers.cameras import Cameras, orbit_cameras
from renderers.export.animation import frame_times
from renderers.export.files import ExportError, atomic_files, check_file_target
from renderers.export.meshes import check_time

VIDEO_MODES = ("turntable", "timelapse", "orbit")


def video_path(scene, mode: str, frames: int, *, t: float | None = None,
               time_range: tuple[float, float] | None = None, size: int = 256, distance: float = 3.2,
               elevation: float = 20.0, fovy: float = 40.0, azimuth: float = 30.0) -> tuple[Cameras, np.ndarray]:
    """Cameras ``[frames]`` and scene times ``[frames]`` of one of :data:`VIDEO_MODES`."""
    if mode not in VIDEO_MODES:
        raise ExportError(f"unknown video mode '{mode}'; use one of {', '.join(VIDEO_MODES)}.")
    if size < 16:
        raise ExportError(f"video size must be at least 16 pixels, got {size}.")
    if mode == "turntable":
        times = np.full(frame_times(scene, frames).shape, check_time(scene, t))
    else:
        times = frame_times(scene, frames, time_range)
    if mode == "timelapse":
        az = torch.full((frames,), azimuth)
    else:  # a full turn without repeating the first view, so a looping video does not stutter
        az = azimuth + torch.arange(frames, dtype=torch.float32) * (360.0 / frames)
    size += size % 2  # H.264 with 4:2:0 chroma needs even sizes
    return orbit_cameras(distance, elevation, az, fovy, size, size), times


@torch.no_grad()
def render_frames(scene, cameras: Cameras, times: np.ndarray, background: float = 1.0, batch: int = 8) -> np.ndarray:
    """uint8 frames ``[F, H, W, 3]``: camera i at time ``times[i]``, composited over ``background``."""
    out = np.zeros((len(cameras), cameras.height, cameras.width, 3), np.uint8)
    i = 0
    while i < len(cameras):
        j = i + 1  # batch cameras that share a time (a turntable renders in batches)
        while j < len(cameras) and j - i < batch and times[j] == times[i]:
            j += 1
        rendered = scene.render(cameras[i:j], float(times[i]))
        rgb = rendered.composite(background).detach().float().cpu().clamp(0, 1)
        out[i:j] = (rgb * 255).round().to(torch.uint8).numpy()
        i = j
    return out


def write_video(frames: np.ndarray, path: Path, fps: float) -> None:
    """MP4 (H.264, yuv420p, plays in browsers and QuickTime) or GIF (looping) from ``[F, H, W, 3]`` uint8."""
    if path.suffix.lower() == ".gif":
        import imageio.v3 as iio

        iio.imwrite(path, frames, extension=".gif", duration=1000.0 / fps, loop=0)
        return
    import fractions

    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def export_video(scene, path: str | Path, *, mode: str = "turntable", frames: int = 48, fps: float = 24.0,
                 t: float | None = None, time_range: tuple[float, float] | None = None, size: int = 256,
                 distance: float = 3.2, elevation: float = 20.0, fovy: float = 40.0, background: float = 1.0,
                 overwrite: bool = False) -> Path:
    """A turntable / timelapse / orbit video of the scene as ``.mp4`` or ``.gif``."""
    path = check_file_target(path, overwrite, (".mp4", ".gif"))
    if not fps > 0:
        raise ExportError(f"frames per second must be positive, got {fps}.")
    cameras, times = video_path(scene, mode, frames, t=t, time_range=time_range, size=size, distance=distance,
                                elevation=elevation, fovy=fovy)
    images = render_frames(scene, cameras, times, background)
    with atomic_files([path]) as (tmp,):
        write_video(images, tmp, fps)
    return path


def contact_sheet(frames: np.ndarray, columns: int = 4) -> np.ndarray:
    """Frames ``[F, H, W, 3]`` tiled row by row into one image (empty cells white)."""
    f, h, w, _ = frames.shape
    rows = -(-f // columns)
    sheet = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for k, frame in enumerate(frames):
        r, c = divmod(k, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = frame
    return sheet


def export_contact_sheet(scene, path: str | Path, *, mode: str = "orbit", frames: int = 16, columns: int = 4,
                         t: float | None = None, time_range: tuple[float, float] | None = None, size: int = 192,
                         distance: float = 3.2, elevation: float = 20.0, fovy: float = 40.0,
                         background: float = 1.0, overwrite: bool = False) -> Path:
    """A PNG grid of ``frames`` views along one of :data:`VIDEO_MODES`."""
    import imageio.v3 as iio

    path = check_file_target(path, overwrite, (".png",))
    cameras, times = video_path(scene, mode, frames, t=t, time_range=time_range, size=size, distance=distance,
                                elevation=elevation, fovy=fovy)
    sheet = contact_sheet(render_frames(scene, cameras, times, background), columns)
    with atomic_files([path]) as (tmp,):
        iio.imwrite(tmp, sheet, extension=".png")
    return path
