"""Diffusion² on this machine: one composed denoising pass over the V x F matrix (Eq. 5) with the in-house
prior's architecture (random weights: the speed does not depend on them), and one reconstruction step.

From those, the ``preview`` preset's whole image-to-4D time is estimated (issue target: under 5 minutes
on 2 CPU cores): sampling passes = reference orbit and video + the matrix steps, each with its rollback.
``--quick`` times a reduced matrix and a few fit steps.
"""

from __future__ import annotations

import torch

from benchmarks import median_time, parse_args, report


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    from pipelines.diffusion2.config import Diffusion2Config
    from pipelines.diffusion2.denoisers import PriorDenoiser
    from pipelines.diffusion2.reconstruct import matrix_cameras, matrix_fit
    from pipelines.diffusion2.sampler import SamplerSettings, composed_direction
    from pipelines.models.field_dit import FieldDiT, FieldPriorArch
    from pipelines.models.text import PromptTokenizer
    from pipelines.priors.inhouse import FieldPrior

    config = Diffusion2Config.preset("preview")
    sc, rc = config.sampling, config.reconstruction
    V, F = (4, 4) if args.quick else (sc.views, sc.frames)
    arch = FieldPriorArch(resolution=config.resolution, vocab_size=PromptTokenizer(16).vocab_size)
    torch.manual_seed(0)
    model = FieldDiT(arch).eval()
    video = FieldPrior(model, "image-to-video", "inhouse-i2v")
    orbit = FieldPrior(model, "image-to-orbit", "inhouse-i2orbit")
    S = config.resolution
    images = torch.rand(max(V, F), 3, S, S)
    cameras = matrix_cameras(V, config.elevation, config.distance, config.fovy, S)
    rows = PriorDenoiser(video, video.encode_image_condition(images[:V], "", cameras.c2w[:, None].flatten(2)), "rows")
    cols = PriorDenoiser(orbit, orbit.encode_image_condition(images[:F], "", cameras.c2w[None].expand(F, -1, -1, -1)
                                                             .flatten(2)), "cols")
    x = torch.randn(V, F, arch.latent_channels, arch.latent_size, arch.latent_size)
    with torch.no_grad():
        pass_s = median_time(lambda: composed_direction(x, 5.0, rows, cols, 0.5, sc.chunk, skip_known=True), repeats=3)
    settings = SamplerSettings(sc.steps, solver=sc.solver, rollback_steps=sc.rollback_steps)
    reference = SamplerSettings(sc.reference_steps, solver=sc.solver, rollback_steps=sc.rollback_steps)
    # A reference sequence costs about one row plus one column of the matrix, i.e. (1/V + 1/F) / 2 of a pass.
    sampling_s = pass_s * (settings.evaluations + reference.evaluations * (1 / V + 1 / F))

    matrix = torch.rand(V, F, S, S, 3)
    masks = (torch.rand(V, F, S, S, 1) > 0.5).float()
    fit = matrix_fit(matrix, masks, cameras, rc.__class__(**{**rc.__dict__, "warmup_steps": 0}), 0.0)
    fit_step_s = median_time(fit.step, repeats=3 if args.quick else 10)
    steps = rc.steps
    figures = {"matrix_pass_s": pass_s, "preview_sampling_s_est": sampling_s, "fit_step_s": fit_step_s,
               "preview_fit_s_est": fit_step_s * steps, "preview_total_s_est": sampling_s + fit_step_s * steps,
               "views": V, "frames": F}
    report("diffusion2", figures, {"preview_total_s_est": ("<", 300.0)}, args.json)


if __name__ == "__main__":
    main()
