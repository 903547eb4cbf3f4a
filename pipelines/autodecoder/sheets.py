"""The sample sheet of a text-to-3d bundle: one row per prompt, three azimuths, as shipped beside the bundle.

    python -m pipelines.autodecoder.sheets BUNDLE OUT.png [--size 128] [--seed 0] [--reconstructions OUT2.png]

Every prompt is sampled through the same conditions as ``fourd generate text-to-3d`` (:func:`caption_conditions`).
The reconstruction sheet shows stage 1 alone: the first training objects decoded beside the world's renders.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# One per world shape, plus a synonym ("ball"), in words the captions use.
SHEET_PROMPTS = ("a red sphere", "a blue cube", "a yellow torus", "a green cone", "a purple cylinder",
                 "an orange capsule", "a white walker", "a pink ball")


def sample_sheet(bundle: str | Path, prompts: tuple[str, ...] = SHEET_PROMPTS, *, size: int = 128, seed: int = 0,
                 steps: int = 18):
    """``[len(prompts) * size, 3 * size, 3]`` uint8: each prompt's sample from azimuths 0, 120 and 240 degrees."""
    import torch

    from pipelines.autodecoder.diffusion import caption_conditions
    from pipelines.autodecoder.generate import load_bundle, sample_scenes
    from pipelines.events import preview_pixels
    from renderers.cameras import orbit_cameras

    model, norm, edm = load_bundle(bundle)
    if edm is None:
        raise ValueError(f"the bundle '{bundle}' holds no diffusion model.")
    scenes = sample_scenes(model, edm, norm, **caption_conditions(list(prompts), edm.config), steps=steps,
                           generator=torch.Generator().manual_seed(seed))
    cams = orbit_cameras(2.7, 20.0, torch.tensor([0.0, 120.0, 240.0]), 40.0, size, size)
    rows = []
    with torch.no_grad():
        for scene in scenes:
            rows.append(torch.cat(list(scene.render(cams, 0.0).rgb.cpu()), 1))
    return preview_pixels(torch.cat(rows, 0))


def reconstruction_sheet(bundle: str | Path, objects: int = 12, views: tuple[int, ...] = (0, 4, 5), scale: int = 3,
                         cache_dir: str | Path | None = None):
    """``[objects * H, 2 * len(views) * W, 3]`` uint8 at ``scale`` x the training size: each of the first
    ``objects`` training objects from its training ``views`` (0-3 trained, 4 and 5 held out) as the
    autodecoder decodes it (left) and as the world renders it (right)."""
    import torch

    from pipelines.autodecoder.cli_train import HELD_OUT_VIEWS, TRAIN_VIEWS
    from pipelines.autodecoder.generate import load_bundle
    from pipelines.autodecoder.train import ObjectViews, render_objects
    from pipelines.events import preview_pixels
    from pipelines.world.datasets import MultiViewDataset

    model, _, _ = load_bundle(bundle)
    data = MultiViewDataset("train", objects, resolution=model.config.image_size,
                            views=len(TRAIN_VIEWS) + len(HELD_OUT_VIEWS), cache_dir=cache_dir)
    truth = ObjectViews.from_dataset(data)
    rgb, _ = render_objects(model, truth, views)
    rows = [torch.cat([*rgb[i], *truth.rgb[i, list(views)]], 1) for i in range(objects)]
    return preview_pixels(torch.cat(rows, 0).repeat_interleave(scale, 0).repeat_interleave(scale, 1))


def main(argv: list[str] | None = None) -> int:
    import imageio.v3 as iio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reconstructions", type=Path, default=None, metavar="PNG",
                        help="also write stage 1's reconstruction sheet here")
    args = parser.parse_args(argv)
    iio.imwrite(args.out, sample_sheet(args.bundle, size=args.size, seed=args.seed))
    print(f"{len(SHEET_PROMPTS)} prompts -> {args.out}")
    if args.reconstructions is not None:
        iio.imwrite(args.reconstructions, reconstruction_sheet(args.bundle))
        print(f"reconstructions -> {args.reconstructions}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
