"""The sample sheet of a text-to-3d bundle: one row per prompt, three azimuths, as shipped beside the bundle.

    python -m pipelines.autodecoder.sheets BUNDLE OUT.png [--size 128] [--seed 0]

Every prompt is sampled through the same conditions as ``fourd generate text-to-3d`` (:func:`caption_conditions`).
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
    return (torch.cat(rows, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def main(argv: list[str] | None = None) -> int:
    import imageio.v3 as iio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    iio.imwrite(args.out, sample_sheet(args.bundle, size=args.size, seed=args.seed))
    print(f"{len(SHEET_PROMPTS)} prompts -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
