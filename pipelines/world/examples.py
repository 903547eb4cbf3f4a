"""Write the example inputs the studio offers on first start into ``assets/examples/``.

    python -m pipelines.world.examples [--out DIR]      # or: fourd world examples

Reference images are PNGs with alpha (the object on a transparent background); reference videos are
MP4 (H.264, white background) with a GIF beside each for previews; ``examples.json`` lists every file
with its caption and the world spec it shows, so results can be scored against the ground truth.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from pipelines.world.grammar import WorldSpec
from pipelines.world.render import render_world
from renderers.cameras import Cameras, orbit_cameras

IMAGE_SIZE = 256
VIDEO_SIZE = 128
VIDEO_FRAMES = 24
VIDEO_FPS = 12

EXAMPLES = (
    ("red_ball", "image", WorldSpec("sphere", "red", "bounce", "glossy", "large", yaw=20.0)),
    ("blue_cube", "image", WorldSpec("cube", "blue", "spin", "matte", "medium", yaw=25.0)),
    ("green_torus", "image", WorldSpec("torus", "green", "sway", "glossy", "large", yaw=-30.0)),
    ("orange_capsule", "image", WorldSpec("capsule", "orange", "orbit", "matte", "medium", yaw=60.0)),
    ("yellow_walker", "video", WorldSpec("walker", "yellow", "walk", "matte", "large", yaw=-60.0)),
    ("purple_cone_pulse", "video", WorldSpec("cone", "purple", "pulse", "glossy", "medium", yaw=10.0)),
    ("teal_cylinder_spin", "video", WorldSpec("cylinder", "teal", "spin", "glossy", "large", yaw=0.0)),
    ("pink_ball_bounce", "video", WorldSpec("sphere", "pink", "bounce", "matte", "medium", yaw=0.0)),
)


def example_camera(size: int):
    return orbit_cameras(2.7, 15.0, 30.0, 40.0, size, size)


def _rgba(out, index: int = 0) -> np.ndarray:
    """Straight (un-premultiplied) RGBA uint8 ``[H, W, 4]``, as PNG stores it."""
    alpha = out.alpha[index]
    rgb = torch.where(alpha > 0, out.rgb[index] / alpha.clamp(min=1e-6), torch.zeros(()))
    return (torch.cat([rgb, alpha], -1).clamp(0, 1) * 255).round().byte().numpy()


def write_examples(out_dir: str | Path | None = None) -> list[dict]:
    """Render every example into ``out_dir`` (default: the package's ``assets/examples``); returns the listing."""
    import imageio.v3 as iio

    out_dir = Path(out_dir) if out_dir is not None else Path(__file__).resolve().parents[2] / "assets" / "examples"
    out_dir.mkdir(parents=True, exist_ok=True)
    listing = []
    for name, kind, spec in EXAMPLES:
        entry = {"name": name, "kind": kind, "caption": spec.caption(), "spec": spec.to_dict()}
        if kind == "image":
            out = render_world(spec, example_camera(IMAGE_SIZE), 0.25)
            iio.imwrite(out_dir / f"{name}.png", _rgba(out))
            entry.update(file=f"{name}.png", time=0.25, width=IMAGE_SIZE, height=IMAGE_SIZE)
        else:
            cam = example_camera(VIDEO_SIZE)
            times = torch.arange(VIDEO_FRAMES) / VIDEO_FRAMES
            cams = Cameras(cam.c2w.expand(VIDEO_FRAMES, 4, 4), cam.K.expand(VIDEO_FRAMES, 3, 3), VIDEO_SIZE,
                           VIDEO_SIZE)
            out = render_world(spec, cams, times)
            frames = (out.composite(1.0).clamp(0, 1) * 255).round().byte().numpy()
            iio.imwrite(out_dir / f"{name}.mp4", frames, plugin="pyav", codec="libx264", fps=VIDEO_FPS,
                        out_pixel_format="yuv420p")
            iio.imwrite(out_dir / f"{name}.gif", frames, duration=1000 / VIDEO_FPS, loop=0)
            entry.update(file=f"{name}.mp4", preview=f"{name}.gif", frames=VIDEO_FRAMES, fps=VIDEO_FPS,
                         width=VIDEO_SIZE, height=VIDEO_SIZE)
        listing.append(entry)
    tmp = out_dir / "examples.json.tmp"
    tmp.write_text(json.dumps(listing, indent=2))
    tmp.replace(out_dir / "examples.json")
    return listing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder to write into (default: assets/examples)")
    args = parser.parse_args(argv)
    for entry in write_examples(args.out):
        print(f"{entry['file']:<28} {entry['caption']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
