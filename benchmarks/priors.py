"""One guidance step per diffusion prior: tiny models on a CPU, real architecture sizes on a GPU.

On a CPU it loads the tiny random-weight models through the registry and times one SDS step (VSD plus
its LoRA step for SD 2.1). On a CUDA device it builds each UNet at its published size with random
weights in fp16 and times one classifier-free-guided SDS step (UNet forward on the doubled batch and the
backward of the latent loss), reporting time and peak GPU memory: these set the budget of the paper
presets. Targets are only set for the CPU run (a guidance step of a tiny prior must not dominate a
preview-preset iteration).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks import median_time, parse_args, report


def tiny_figures(repeats: int) -> dict[str, float]:
    import os

    from pipelines.priors import load_prior
    from pipelines.priors.guidance import lora_train_step, sds_loss, vsd_loss
    from pipelines.priors.lora import CameraLoRA
    from pipelines.priors.tiny_models import write_tiny_sd, write_tiny_svd, write_tiny_zeroscope

    # Tiny models are all per-op overhead; a second thread only adds OpenMP barriers (2-5x slower here).
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="fourd-bench-priors-"))
    os.environ["FOURD_MODELS_DIR"] = str(root)
    write_tiny_sd(root / "sd21-base")
    write_tiny_zeroscope(root / "zeroscope-v2-576w")
    write_tiny_svd(root / "svd-xt")
    g = torch.Generator().manual_seed(0)
    figures = {}

    def step(model, shape, cond, scale):
        latents = torch.randn(shape, requires_grad=True)
        return lambda: sds_loss(model, latents, cond, guidance_scale=scale, generator=g).loss.backward()

    sd = load_prior("sd21-base")
    text = sd.encode_prompt(["a red cube"] * 4)
    figures["sd21_tiny_sds_s"] = median_time(step(sd, (4, 1, 1, 4, 8, 8), text, 100.0), repeats)
    lora = CameraLoRA(sd.unet)
    latents, cams = torch.randn(4, 1, 1, 4, 8, 8, requires_grad=True), torch.randn(4, 16)
    opt = torch.optim.Adam(lora.trainable_parameters(), lr=1e-4)

    def vsd():
        vsd_loss(sd, lora, latents, text, cams, generator=g).loss.backward()
        lora_train_step(sd, lora, opt, latents, text, cams, generator=g)
    figures["sd21_tiny_vsd_and_lora_s"] = median_time(vsd, repeats)
    zs = load_prior("zeroscope-v2-576w")
    figures["zeroscope_tiny_video_sds_s"] = median_time(
        step(zs, (1, 1, 8, 4, 8, 8), zs.encode_prompt(["a dog running"]), 100.0), repeats)
    svd = load_prior("svd-xt")
    image = svd.encode_image_condition(torch.rand(1, 3, 32, 32))
    figures["svd_tiny_sds_s"] = median_time(step(svd, (1, 1, 8, 4, 16, 16), image, 3.0), repeats)
    return figures


def real_figures(repeats: int, dev: torch.device | str = "cuda", half: torch.dtype = torch.float16,
                 smoke: bool = False) -> dict[str, float]:
    """Published UNet sizes, random fp16 weights, one CFG SDS step each (UNet only: no text/image encoders).

    ``smoke`` shrinks the latents to 8x8 and 2 frames/views (a CPU check that the code path runs).
    """
    from diffusers import UNet2DConditionModel, UNet3DConditionModel, UNetSpatioTemporalConditionModel

    from pipelines.priors.denoiser import Conditioning
    from pipelines.priors.guidance import sds_loss
    from pipelines.priors.mvdream import MVDream
    from pipelines.priors.stable_diffusion import StableDiffusion
    from pipelines.priors.tiny_models import SD_SCHEDULER
    from pipelines.priors.video_diffusion import SV3D, StableVideoDiffusion, sv3d_unet_class
    from pipelines.priors.zeroscope import Zeroscope

    dev = torch.device(dev)
    cuda = dev.type == "cuda"
    sd_unet = {"attention_head_dim": (5, 10, 20, 20), "cross_attention_dim": 1024, "use_linear_projection": True}
    eps = SD_SCHEDULER | {"prediction_type": "epsilon"}
    clip = ([0.5] * 3, [0.5] * 3, 224)

    class NoVAE(torch.nn.Module):  # the adapters read only the VAE's config here
        config = type("C", (), {"block_out_channels": (1, 2, 3, 4), "scaling_factor": 0.18215})()

    def text(b):
        return Conditioning(text=torch.randn(b, 77, 1024, device=dev, dtype=half))

    cases = {
        "sd21_512": (lambda: StableDiffusion(UNet2DConditionModel(**sd_unet), NoVAE(), None, eps),
                     (1, 1, 1, 4, 64, 64), text(1), 7.5),
        "mvdream_4x256": (lambda: MVDream(UNet2DConditionModel(**sd_unet, class_embed_type="projection",
                                                               projection_class_embeddings_input_dim=16),
                                          NoVAE(), None, eps),
                          (1, 4, 1, 4, 32, 32), Conditioning(text=text(1).text,
                                                             cameras=torch.randn(1, 4, 16, device=dev)), 50.0),
        "zeroscope_16x320x576": (lambda: Zeroscope(UNet3DConditionModel(), NoVAE(), None, eps),
                                 (1, 1, 16, 4, 40, 72), text(1), 100.0),
    }
    image = Conditioning(image_embeds=torch.randn(1, 1, 1024, device=dev, dtype=half))
    cases["svd_xt_25x576"] = (lambda: StableVideoDiffusion(UNetSpatioTemporalConditionModel(), NoVAE(), None,
                                                            *clip, {}),
                              (1, 1, 25, 4, 72, 72),
                              Conditioning(image_embeds=image.image_embeds,
                                           image_latents=torch.randn(1, 4, 72, 72, device=dev, dtype=half)), 3.0)
    cases["sv3d_p_21x576"] = (lambda: SV3D(sv3d_unet_class()(projection_class_embeddings_input_dim=1280),
                                           NoVAE(), None, *clip, {}),
                              (1, 21, 1, 4, 72, 72),
                              Conditioning(image_embeds=image.image_embeds,
                                           image_latents=torch.randn(1, 4, 72, 72, device=dev, dtype=half),
                                           elevations=torch.zeros(1, 21, device=dev),
                                           azimuths=torch.linspace(0, 6, 21, device=dev)[None]), 2.5)
    def measure(build, shape, cond, scale) -> tuple[float, float]:
        model = build()
        model.unet.to(dev, half).requires_grad_(False)
        latents = torch.randn(shape, device=dev, dtype=half, requires_grad=True)
        uncond = model.uncond(cond) if cond.text is None else Conditioning(text=torch.zeros_like(cond.text),
                                                                           cameras=cond.cameras)

        def step():
            sds_loss(model, latents, cond, guidance_scale=scale, uncond=uncond).loss.backward()
            if cuda:
                torch.cuda.synchronize()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = median_time(step, repeats)
        return seconds, torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else float("nan")

    figures = {}
    for name, (build, shape, cond, scale) in cases.items():
        if smoke:
            shape = (*shape[:1], min(shape[1], 2) if shape[1] != 4 else 4, min(shape[2], 2), 4, 8, 8)
            cond = Conditioning(**{**cond.__dict__, **{k: v[..., :8, :8] for k, v in cond.tensors().items()
                                                       if k == "image_latents"}})
            if cond.elevations is not None:
                cond = Conditioning(**{**cond.__dict__, "elevations": cond.elevations[:, :shape[1]],
                                       "azimuths": cond.azimuths[:, :shape[1]]})
        figures[f"{name}_sds_s"], figures[f"{name}_peak_gb"] = measure(build, shape, cond, scale)
        if cuda:
            torch.cuda.empty_cache()
    return figures


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    repeats = 3 if args.quick else 5
    if torch.cuda.is_available():
        report("priors", {f"{k}_fp16": v for k, v in real_figures(repeats).items()}, {}, args.json)
    else:
        report("priors", tiny_figures(repeats), {"sd21_tiny_sds_s": ("<", 1.0),
                                                 "sd21_tiny_vsd_and_lora_s": ("<", 2.0)}, args.json)


if __name__ == "__main__":
    main()
