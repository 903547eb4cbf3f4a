"""4D-fy memory: the activation constants of pipelines.fourdfy.memory, measured, and the paper preset's estimate.

Measured on any device by counting the bytes autograd saves for the backward pass (device-independent):
one ray sample through the paper field with compositing (early termination off, every sample kept), and
one input pixel through Stable Diffusion's VAE encoder (its real channel widths, random weights), with and
without chunk-wise recomputation. Then the estimated peak of the `paper` preset under each memory profile
with the public priors' real parameter counts (SD 2.1, MVDream, Zeroscope v2 576w; from their configs).
Target (4D-fy issue): a stage-3 step at paper settings under 40 GB; here an estimate, to be checked on a GPU.
"""

from __future__ import annotations

from benchmarks import parse_args, report

# Parameters of the public priors (UNet + VAE + text encoder), about; the estimate reads the real ones from
# the installed files (memory.parameter_counts), this benchmark must run without them.
PUBLIC_COUNTS = {"mvdream-sd21": 865_910_724 + 83_653_863 + 340_387_840,
                 "sd21-base": 865_910_724 + 83_653_863 + 340_387_840,
                 "zeroscope-v2-576w": 1_413_014_020 + 83_653_863 + 340_387_840}


def field_bytes_per_sample(quick: bool) -> float:
    import torch

    from pipelines.fourdfy.memory import saved_bytes
    from renderers.cameras import orbit_cameras
    from renderers.field import Field4D, FieldConfig
    from renderers.volume import RenderSettings, render_image

    field = Field4D(FieldConfig.preset("paper"), generator=torch.Generator().manual_seed(0))
    field.dynamic_mode = "train"
    size, n = (8, 32) if quick else (16, 64)
    # close enough that every ray crosses the box; early termination off so every sample is kept
    cams = orbit_cameras(1.8, 0.0, 0.0, 30.0, size, size)
    settings = RenderSettings(n_samples=n, stratified=True, segments=1, early_stop_eps=0.0)
    samples = size * size * n
    return saved_bytes(lambda: render_image(field, cams, 0.5, settings=settings).rgb) / samples


def vae_bytes_per_pixel(quick: bool, checkpoint: bool) -> float:
    import torch
    from diffusers import AutoencoderKL

    from pipelines.fourdfy.memory import saved_bytes
    from pipelines.priors.denoiser import vae_encode

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2)
    size = 32 if quick else 64
    images = torch.rand(2, 3, size, size, requires_grad=True)
    return saved_bytes(lambda: vae_encode(vae, images, chunk=1, checkpoint=checkpoint)) / (2 * size * size)


def main() -> None:
    from pipelines.fourdfy import memory
    from pipelines.fourdfy.config import FourDfyConfig

    args = parse_args(__doc__.splitlines()[0])
    figures = {
        "field_bytes_per_sample": field_bytes_per_sample(args.quick),
        "vae_bytes_per_pixel": vae_bytes_per_pixel(args.quick, False),
        "vae_checkpointed_bytes_per_pixel": vae_bytes_per_pixel(args.quick, True),
    }
    paper = FourDfyConfig.preset("paper")
    field_params = memory.field_parameters(paper)
    for name in memory.PROFILES:
        config = paper.replace(**memory.profile_overrides(name, paper))
        est = memory.estimate(config, PUBLIC_COUNTS, field_params)
        figures[f"paper_{name}_estimated_peak_gib"] = est.peak / memory.GIB
        for kind, value in est.activations.items():
            figures[f"paper_{name}_{kind}_activations_gib"] = value / memory.GIB
    report("fourdfy_memory", figures, {"paper_balanced_estimated_peak_gib": ("<", 40.0)}, args.json)


if __name__ == "__main__":
    main()
