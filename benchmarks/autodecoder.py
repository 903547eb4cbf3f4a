"""Text-to-3D autodecoder: sample + decode + first render of one object, and training throughput of both
stages (objects/s for the autodecoder, latents/s for the latent diffusion) on the CPU and, when one is present,
on the GPU, for the bundled model's architecture (random weights when no bundle is installed or shipped).

    python -m benchmarks.autodecoder [--quick] [--json out.json]
"""

from __future__ import annotations

import torch

from benchmarks import median_time, parse_args, report


def _model():
    from pipelines.autodecoder.cli_train import DIFFUSION_DEFAULTS
    from pipelines.autodecoder.diffusion import EDM, DiffusionConfig, LatentUNet3d
    from pipelines.autodecoder.generate import load_bundle
    from pipelines.autodecoder.model import Autodecoder, AutodecoderConfig
    from pipelines.autodecoder.normalize import RobustNormalizer
    from pipelines.autodecoder.pipeline import TextTo3DConfig, bundle_path

    path = bundle_path(TextTo3DConfig())
    if path.is_file():
        return (*load_bundle(path), f"bundle {path.name}")
    model = Autodecoder(AutodecoderConfig.preset("preview")).eval()
    edm = EDM(LatentUNet3d(DiffusionConfig.preset("preview").override(DIFFUSION_DEFAULTS),
                           *model.latent_shape()[:2])).eval()
    norm = RobustNormalizer.fit(torch.randn(4, *model.latent_shape()))
    return model, norm, edm, "random weights"


def training_figures(model, edm, conditions: dict, device: str, repeats: int) -> dict[str, float]:
    """Training throughput of both stages on ``device``: autodecoder objects/s on random images of the bundled
    training size, latent-diffusion latents/s on random latents (the bundled batch size)."""
    from pipelines.autodecoder.train import ObjectViews, reconstruction_loss
    from renderers.cameras import orbit_cameras

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model, edm = model.to(device), edm.to(device)
    cfg = model.config
    n, v, r = cfg.objects_per_step, cfg.views_per_object, cfg.image_size
    cams = orbit_cameras(2.7, 15.0, torch.arange(v) * 90.0, 40.0, r, r)
    data = ObjectViews(torch.rand(n, v, r, r, 3), torch.rand(n, v, r, r, 1), cams.c2w.expand(n, -1, -1, -1),
                       cams.K.expand(n, -1, -1, -1), ["a red cube"] * n, [{}] * n)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    objects, views = torch.arange(n), torch.arange(v).expand(n, -1)

    def ad_step():
        loss, _ = reconstruction_loss(model, data, objects, views)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()

    latents = torch.randn(edm.config.batch_size, *model.latent_shape(), device=device)
    edm.train()
    eopt = torch.optim.Adam(edm.parameters(), lr=1e-6)
    batch = {k: None if v is None else v.to(device).expand(len(latents), *v.shape[1:]) for k, v in conditions.items()}

    def edm_step():
        loss = edm.loss(latents, **batch)
        eopt.zero_grad()
        loss.backward()
        eopt.step()
        sync()

    suffix = "" if device == "cpu" else f"_{device}"
    figures = {f"autodecoder_train_objects_per_s{suffix}": n / median_time(ad_step, repeats),
               f"diffusion_train_latents_per_s{suffix}": len(latents) / median_time(edm_step, repeats)}
    model.eval().cpu()
    edm.eval().cpu()
    return figures


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    from pipelines.autodecoder.diffusion import caption_conditions
    from pipelines.autodecoder.generate import sample_scenes
    from pipelines.autodecoder.pipeline import TextTo3DConfig
    from renderers.cameras import orbit_cameras

    model, norm, edm, source = _model()
    print(f"weights: {source}")
    steps = TextTo3DConfig().steps
    conditions = caption_conditions(["a red cube"], edm.config)
    camera = orbit_cameras(2.7, 20.0, torch.tensor([30.0]), 40.0, 256, 256)

    def generate():
        scene = sample_scenes(model, edm, norm, **conditions, steps=steps,
                              generator=torch.Generator().manual_seed(0))[0]
        with torch.no_grad():
            return scene.render(camera, 0.0)

    repeats = 2 if args.quick else 5
    figures = {"sample_decode_first_render_s": median_time(generate, repeats)}

    figures |= training_figures(model, edm, conditions, "cpu", repeats)
    if torch.cuda.is_available():  # the same steps on the GPU (model moved there)
        figures |= training_figures(model, edm, conditions, "cuda", repeats)
    report("autodecoder", figures, {"sample_decode_first_render_s": ("<", 3.0)}, args.json)


if __name__ == "__main__":
    main()
