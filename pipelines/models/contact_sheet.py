"""A contact sheet of field-prior samples: per prompt, 4 orbit views (text -> 4 views) and 4 frames
(text -> video), labelled, as one PNG.

    python -m pipelines.models.contact_sheet PRIOR_FOLDER OUT.png [--steps 25] [--guidance 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

SHEET_PROMPTS = (
    "a red sphere bouncing", "a blue cube spinning", "a large yellow torus swaying", "a green cone pulsing",
    "a small purple cylinder orbiting", "an orange capsule standing still", "a white walker walking",
    "a pink ball hops up and down", "a shiny teal donut that twirls", "a brown box rocking side to side",
    "a big glossy blue pill circling around", "a tiny red stick figure strolling",
)


@torch.no_grad()
def sample_sheet(folder: str | Path, prompts=SHEET_PROMPTS, steps: int = 25, guidance: float = 3.0,
                 seed: int = 0, scale: int = 2) -> np.ndarray:
    """uint8 [rows * S, label + 8 * S, 3] with one row per prompt (S = model resolution * scale)."""
    from PIL import Image, ImageDraw

    from pipelines.priors.inhouse import default_cameras, load_field_prior, sample

    mv = load_field_prior(folder, "text-to-multiview", "inhouse-t2mv")
    video = load_field_prior(folder, "text-to-video", "inhouse-t2v")
    gen = torch.Generator().manual_seed(seed)
    cond = mv.encode_prompt(list(prompts))
    cond.cameras = default_cameras(4, mv.arch, azimuth0=30.0)[0].reshape(1, 4, 16).expand(len(prompts), -1, -1)
    views = mv.decode_latents(sample(mv, cond, views=4, steps=steps, guidance_scale=guidance, generator=gen)
                              .flatten(0, 2))
    frames = video.decode_latents(sample(video, video.encode_prompt(list(prompts)), frames=4, steps=steps,
                                         guidance_scale=guidance, generator=gen).flatten(0, 2))
    r = mv.arch.resolution * scale
    tiles = torch.cat([views.reshape(len(prompts), 4, 3, *views.shape[-2:]),
                       frames.reshape(len(prompts), 4, 3, *frames.shape[-2:])], 1)
    tiles = torch.nn.functional.interpolate(tiles.flatten(0, 1), scale_factor=scale, mode="nearest")
    grid = tiles.reshape(len(prompts), 8, 3, r, r).permute(0, 3, 1, 4, 2).reshape(len(prompts) * r, 8 * r, 3)
    label_w = 230
    sheet = Image.new("RGB", (label_w + 8 * r + 6, len(prompts) * r + 16), (40, 40, 40))
    sheet.paste(Image.fromarray((grid.numpy() * 255).round().astype(np.uint8)), (label_w, 16))
    # a gap between the orbit views and the video frames
    draw = ImageDraw.Draw(sheet)
    draw.rectangle([label_w + 4 * r, 16, label_w + 4 * r + 5, sheet.height], fill=(40, 40, 40))
    sheet.paste(Image.fromarray((grid[:, 4 * r:].numpy() * 255).round().astype(np.uint8)), (label_w + 4 * r + 6, 16))
    draw.text((label_w + 2, 2), "text -> 4 views (orbit)", fill=(220, 220, 220))
    draw.text((label_w + 4 * r + 8, 2), "text -> video (4 frames)", fill=(220, 220, 220))
    for i, prompt in enumerate(prompts):
        draw.text((4, 16 + i * r + r // 2 - 6), prompt, fill=(230, 230, 230))
    return np.asarray(sheet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="exported prior (config.json + model.safetensors) or a run folder")
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import imageio.v3 as iio

    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, sample_sheet(args.folder, steps=args.steps, guidance=args.guidance, seed=args.seed))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
