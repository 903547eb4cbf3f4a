"""Videos and contact sheets: decoded back with PyAV / imageio and compared with the scene's renders."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from export_scenes import PulsingPairScene, StripedBlobScene

from renderers.export import ExportError, export
from renderers.export.video import render_frames, video_path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def test_turntable_mp4_decodes_to_the_rendered_orbit(tmp_path):
    scene = StripedBlobScene()
    path = export(scene, tmp_path / "turn.mp4", mode="turntable", frames=12, fps=12, t=0.5, resolution=64)
    frames = iio.imread(path, plugin="pyav")
    assert frames.shape == (12, 64, 64, 3)
    cameras, times = video_path(scene, "turntable", 12, t=0.5, size=64)
    assert np.all(times == 0.5)
    expected = render_frames(scene, cameras, times)
    assert psnr(frames, expected) > 28  # H.264 at crf 20
    assert psnr(frames[0], frames[3]) < 25  # the view turns


def test_timelapse_gif_follows_time_from_a_fixed_camera(tmp_path):
    scene = PulsingPairScene()
    path = export(scene, tmp_path / "t.gif", mode="timelapse", frames=6, fps=6, resolution=48)
    frames = iio.imread(path, index=None)
    assert frames.shape[:3] == (6, 48, 48)
    coverage = [(f[..., :3] < 250).any(-1).mean() for f in frames]
    assert coverage[3] > coverage[0] + 0.05  # the sphere grows (t = 0.6) ...
    assert coverage[-1] > coverage[0] + 0.01  # ... and shrinks back, with a second one on top


def test_contact_sheet_tiles_the_views(tmp_path):
    scene = PulsingPairScene()
    path = export(scene, tmp_path / "sheet.png", format="contact-sheet", mode="orbit", frames=6, columns=3,
                  resolution=32)
    sheet = iio.imread(path)
    assert sheet.shape == (64, 96, 3)
    cameras, times = video_path(scene, "orbit", 6, size=32)
    frames = render_frames(scene, cameras, times)
    np.testing.assert_array_equal(sheet[32:64, 64:96], frames[5])


def test_unknown_video_mode(tmp_path):
    with pytest.raises(ExportError, match="unknown video mode 'spin'"):
        export(PulsingPairScene(), tmp_path / "v.mp4", mode="spin")
    assert not any(tmp_path.iterdir())
