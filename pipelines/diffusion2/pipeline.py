"""The Diffusion² pipelines: ``image-to-4d``, ``video-to-4d`` and ``text-to-4d-d2``.

    reference (image / video frames / text -> image)            Sec. 3.2
      -> orbit at the reference frame + video at the reference view  Fig. 2 (i)
      -> V x F matrix by score composition with rollback        Eq. 5, Algorithm 1
      -> deformable Gaussians fitted to the matrix               Sec. 3.4

Steps are counted over the whole run (1 for the references, ``sampling.steps`` for the matrix, then
``reconstruction.steps``); a checkpoint holds the stage, the references, the matrix state and the fit,
so a killed run resumes where it was. Priors come from ``context.priors`` (roles ``video``,
``multiview``, ``text``) or the config.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from pipelines.diffusion2.config import Diffusion2Config
from pipelines.events import preview_pixels
from pipelines.registry import PipelineInfo, register_pipeline

ROLES = {"video": "video_prior", "multiview": "multiview_prior", "text": "text_prior"}


def prior_name(config: Diffusion2Config, context, role: str) -> str:
    """The registry name of the prior for ``role``: the job's choice, else the config's."""
    return (getattr(context, "priors", None) or {}).get(role) or getattr(config, ROLES[role])


def check(inputs: dict, config: Diffusion2Config, priors: dict | None = None) -> None:
    """Preflight: raises ModelNotFound (one sentence) when a prior the job needs is not on this machine, and
    InputError when the image or video cannot be read (naming the user's file, before it is copied into the
    run folder; a missing file is left to the run folder's own check)."""
    from pathlib import Path

    from pipelines.diffusion2.inputs import read_image, read_video
    from pipelines.priors.registry import find_model

    for name, read in (("image", read_image), ("video", lambda path: read_video(path, max_frames=1))):
        path = Path(inputs[name]).expanduser() if name in inputs else None
        if path is not None and path.is_file():
            read(path)

    roles = ["video", "multiview"] + (["text"] if "prompt" in inputs else [])
    for role in roles:
        find_model((priors or {}).get(role) or getattr(config, ROLES[role]))


def matrix_grid(images: Tensor) -> np.ndarray:
    """Tile ``[V, F, H, W, 3]`` in [0, 1] as rows of views and columns of frames: ``[V H, F W, 3]`` uint8."""
    v, f, h, w, _ = images.shape
    tiled = images.permute(0, 2, 1, 3, 4).reshape(v * h, f * w, 3)
    return preview_pixels(tiled)


def _decode(prior, latents: Tensor) -> Tensor:
    """Latents ``[..., C, h, w]`` -> images ``[..., H, W, 3]``."""
    lead = latents.shape[:-3]
    images = prior.decode_latents(latents.reshape(-1, *latents.shape[-3:]).to(prior.device, prior.dtype))
    return images.float().cpu().permute(0, 2, 3, 1).reshape(*lead, *images.shape[-2:], 3)


def _encode(prior, images: Tensor) -> Tensor:
    """Images ``[N, H, W, 3]`` -> latents ``[N, C, h, w]`` (float32, CPU)."""
    return prior.encode_images(images.permute(0, 3, 1, 2).to(prior.device, prior.dtype)).float().cpu()


def _reference(kind: str, inputs: dict, config: Diffusion2Config, context) -> Iterator:
    """Yields Log events; returns the Reference as given (image, video frames or the drawn image) and the same
    at the matrix resolution (subject recentred)."""
    from pipelines.diffusion2.inputs import from_generated, load_reference
    from pipelines.events import Log
    from pipelines.priors.registry import load_prior

    frames = config.sampling.frames
    if kind == "prompt":
        prompt = inputs["prompt"]
        prior = load_prior(prior_name(config, context, "text"), device=context.device)
        if not hasattr(prior, "arch"):
            raise ValueError(f"text-to-4d-d2 draws its reference image with the in-house text prior; "
                             f"{prior.name} is not supported for that step yet.")
        if (warning := prior.prompt_warning(prompt)) is not None:
            yield Log(warning, level="warning")
        from pipelines.priors.inhouse import sample

        cond = prior.encode_prompt([prompt])
        latents = sample(prior, cond, steps=config.text_steps, guidance_scale=config.text_guidance,
                         generator=context.generator(offset=17))
        image = _decode(prior, latents[:, 0, 0])
        ref = from_generated(image, background=0.0)
        yield Log(f"drew the reference image for {prompt!r} with {prior.name}")
    else:
        ref = load_reference(inputs[kind], kind, frames=frames if kind == "video" else 1)
    for note in ref.notes:
        yield Log(note)
    return ref, _at_size(ref, config.resolution, config)


def _at_size(ref, size: int, config: Diffusion2Config):
    """The reference as the priors see it (recentred, or only resized) at ``size`` pixels."""
    from pipelines.diffusion2.inputs import recentre, resize

    return recentre(ref, size, config.fill) if config.recenter else resize(ref, size)


def _prior_prompt(kind: str, inputs: dict, config: Diffusion2Config, reference, priors) -> Iterator:
    """The text given to the orbit and video priors with the reference: ``config.prompt``, else the user's
    prompt (text-to-4D), else, for the in-house prior (which follows captions far better than reference
    images), a caption of the reference as given (before recentring, which changes the subject's apparent size
    and motion) read by the world's attribute classifier: its colour and shape, and for a video its motion
    too. Yields Log events."""
    from pipelines.events import Log

    if config.prompt or kind == "prompt":
        return config.prompt or inputs["prompt"]
    if not any(hasattr(p, "arch") for p in priors):
        return ""
    from pipelines.world.classifier import describe_image

    if kind == "video":
        caption = describe_image(reference.rgb, reference.alpha)
    else:
        caption = describe_image(reference.rgb[0], reference.alpha[0])
    yield Log(f"described the reference as {caption!r} for the in-house prior (set 'prompt' to override)")
    if kind == "image":
        yield Log("one image shows no motion, so the video prior picks one; name it in 'prompt' (e.g. "
                  f"'{caption} bouncing') or pick one of the motion candidates", level="warning")
    return caption


def _cameras(config: Diffusion2Config):
    """The orbit cameras of the matrix's views and their azimuths in degrees ``[V]``."""
    from pipelines.diffusion2.reconstruct import matrix_cameras

    views = config.sampling.views
    cameras = matrix_cameras(views, config.elevation, config.distance, config.fovy, config.resolution)
    return cameras, torch.arange(views, dtype=torch.float32) * 360.0 / views


def orbit_conditioning(prior, config: Diffusion2Config, images: Tensor, prompt: str):
    """Columns: each orbit conditioned on the reference view at its frame (images ``[K, S, S, 3]``)."""
    from pipelines.diffusion2.denoisers import image_conditioning

    cameras, azimuths = _cameras(config)
    c2w = cameras.c2w[None].expand(images.shape[0], -1, -1, -1)
    return image_conditioning(prior, images.permute(0, 3, 1, 2), c2w, config.elevation,
                              azimuths[None].expand(images.shape[0], -1), prompt)


def video_conditioning(prior, config: Diffusion2Config, images: Tensor, views: Tensor, prompt: str):
    """Rows: each clip conditioned on its view ``views`` ``[R]`` at the reference frame (images ``[R, S, S, 3]``)."""
    from pipelines.diffusion2.denoisers import image_conditioning

    cameras, azimuths = _cameras(config)
    return image_conditioning(prior, images.permute(0, 3, 1, 2), cameras.c2w[views][:, None], config.elevation,
                              azimuths[views][:, None], prompt)


def sampler_settings(config: Diffusion2Config, *priors, reference: bool = False):
    """The solver settings of the matrix (or, with ``reference``, of the reference orbit and video)."""
    from pipelines.diffusion2.denoisers import max_sigma
    from pipelines.diffusion2.sampler import SamplerSettings

    sc = config.sampling
    sigma_max = min([sc.sigma_max] + [max_sigma(p) for p in priors])
    steps = sc.reference_steps if reference else sc.steps
    return SamplerSettings(steps, sc.sigma_min, sigma_max, sc.rho, sc.solver, min(sc.rollback_steps, steps), sc.chunk)


def matrix_sampler(config: Diffusion2Config, video_prior, mv_prior, orbit_images: Tensor, video_images: Tensor,
                   prompt: str, known: Tensor, seed: int, x: Tensor | None = None, start_step: int = 0):
    """Algorithm 1 over the matrix ``known`` ``[V, F, C, h, w]`` one step at a time (see ``iterate_matrix``):
    rows denoised by the video prior, each conditioned on its orbit view; columns by the orbit prior, each
    conditioned on its reference-video frame. Every rank of a sampling group runs exactly this."""
    from pipelines.diffusion2.denoisers import PriorDenoiser
    from pipelines.diffusion2.sampler import iterate_matrix, per_view_weights

    sc = config.sampling
    if sc.composition_schedule == "per-view":
        s = per_view_weights(sc.views, sc.weight_near, sc.weight_far)
    else:
        s = sc.composition_weight
    rows = PriorDenoiser(video_prior, video_conditioning(video_prior, config, orbit_images, torch.arange(sc.views),
                                                         prompt), "rows", sc.video_guidance)
    cols = PriorDenoiser(mv_prior, orbit_conditioning(mv_prior, config, video_images, prompt), "cols",
                         sc.multiview_guidance)
    settings = sampler_settings(config, video_prior, mv_prior)
    return iterate_matrix(rows, cols, known, settings, s, seed=seed, x=x, start_step=start_step)


def _run(kind: str, inputs: dict, config: Diffusion2Config, context) -> Iterator:
    from pipelines.diffusion2.denoisers import PriorDenoiser
    from pipelines.diffusion2.distributed import MatrixTask, sampling_group
    from pipelines.diffusion2.reconstruct import masks_from_images, matrix_cameras, matrix_fit, matrix_times
    from pipelines.diffusion2.sampler import sample_sequence
    from pipelines.events import Artifact, EtaEstimator, Log, Preview, Progress, SceneUpdate
    from pipelines.priors.registry import load_prior

    sc, rc = config.sampling, config.reconstruction
    V, F, S = sc.views, sc.frames, config.resolution
    video_name, mv_name = prior_name(config, context, "video"), prior_name(config, context, "multiview")
    video_prior = load_prior(video_name, device=context.device)
    mv_prior = load_prior(mv_name, device=context.device)
    settings = sampler_settings(config, video_prior, mv_prior)
    cameras, _ = _cameras(config)
    total = 1 + sc.steps + rc.steps
    ckpt = context.last_checkpoint()
    state: dict[str, Tensor] = dict(ckpt.state) if ckpt is not None else {}
    done = ckpt.step if ckpt is not None else 0
    if ckpt is not None:
        yield Log(f"resumed from the checkpoint after step {done} of {total}")

    given, reference = yield from _reference(kind, inputs, config, context)
    ref_images = reference.composite(config.background)  # [N, S, S, 3]
    prompt = yield from _prior_prompt(kind, inputs, config, given, (video_prior, mv_prior))

    # ---------------------------------------------------------------- stage 1a: the references (Fig. 2 (i))
    if done < 1:
        known0 = _encode(mv_prior, ref_images[:1])[0]
        cols = PriorDenoiser(mv_prior, orbit_conditioning(mv_prior, config, ref_images[:1], prompt), "cols",
                             sc.multiview_guidance)
        orbit = sample_sequence(cols, known0, V, sampler_settings(config, mv_prior, reference=True),
                                seed=context.seed * 7 + 1)
        if kind == "video":
            video = _encode(video_prior, ref_images)
        else:
            rows = PriorDenoiser(video_prior, video_conditioning(video_prior, config, ref_images[:1],
                                                                 torch.tensor([0]), prompt), "rows", sc.video_guidance)
            # The video prior's own settings alone, so that motion_candidates draws exactly this clip.
            video = sample_sequence(rows, known0, F, sampler_settings(config, video_prior, reference=True),
                                    seed=_motion_seed(config, context.seed))
        state = {"orbit": orbit, "video": video}
        done = 1
        yield Progress("reference", done, total)
        context.step_done(done, lambda: state, lambda: {"stage": "reference"})
    orbit, video = state["orbit"], state["video"]
    orbit_images, video_images = _decode(mv_prior, orbit), _decode(video_prior, video)
    refs = torch.zeros(V, F, S, S, 3)
    refs[:, 0], refs[0, :] = orbit_images, video_images
    yield Preview("reference orbit and video", image=matrix_grid(refs), grid=(V, F), step=done)

    # ---------------------------------------------------------------- stage 1b: the matrix (Eq. 5, Alg. 1)
    known = torch.zeros(V, F, *orbit.shape[1:])
    known[:, 0], known[0, :] = orbit, video
    eta = EtaEstimator(total)
    if done < 1 + sc.steps:
        seed, resume_x, start = context.seed * 7 + 3, state.get("x"), done - 1
        task = MatrixTask(config, video_name, mv_name, str(context.device), orbit_images, video_images, prompt,
                          known, seed, resume_x, start)
        with sampling_group(sc.processes, task) as note:
            if note is not None:
                yield Log(note)
            for step, x, x0 in matrix_sampler(config, video_prior, mv_prior, orbit_images, video_images, prompt,
                                              known, seed, resume_x, start):
                done = 1 + step
                state = {"orbit": orbit, "video": video, "x": x}
                yield Progress("sampling", done, total, {"sigma": float(settings.sigmas()[step])},
                               eta_s=eta.update(done))
                if step % config.preview_every == 0 or step == sc.steps:
                    yield Preview("image matrix (views x frames)", image=matrix_grid(_decode(mv_prior, x0)),
                                  grid=(V, F), step=done)
                context.step_done(done, lambda state=state: state, lambda: {"stage": "sampling"})
        state["matrix"] = torch.where(_reference_mask(V, F, known.ndim), known, x)
    matrix = state["matrix"] if "matrix" in state else torch.where(_reference_mask(V, F, known.ndim), known,
                                                                    state["x"])
    images = _decode(mv_prior, matrix)  # [V, F, S, S, 3]
    grid_path = context.run_dir / "matrix.png"
    _write_png(grid_path, matrix_grid(images))
    yield Artifact("matrix", str(grid_path))

    # ---------------------------------------------------------------- stage 2: deformable Gaussians (Sec. 3.4)
    masks = masks_from_images(images, config.background)
    masks[0, :len(reference.alpha)] = reference.alpha[:F]
    size = rc.resolution or S
    fit_images, fit_masks, fit_cameras = images, masks, cameras
    if size != S:
        fit_images, fit_masks = _resize(images, size), _resize(masks, size)
        fit_cameras = matrix_cameras(V, config.elevation, config.distance, config.fovy, size)
        if kind != "prompt":  # the input itself, not the matrix's copy of it: a sharper reference view
            sharp = _at_size(given, size, config)
            n = min(len(sharp.alpha), F)
            fit_images[0, :n], fit_masks[0, :n] = sharp.composite(config.background)[:n], sharp.alpha[:n]
    # a reference video spans [0, 1]; a clip the video prior drew is at the prior's frame times
    times = matrix_times(F) if kind == "video" else video_prior.frame_times(F)
    fit = matrix_fit(fit_images, fit_masks, fit_cameras, rc, config.background, seed=context.seed,
                     device=context.device, times=times)
    fit_start = 1 + sc.steps
    if done > fit_start:
        fit.load_state({k: v for k, v in state.items() if k.startswith(("gaussians.", "field."))}, done - fit_start)
    keep = {"orbit": orbit, "video": video, "matrix": matrix}
    while done < total:
        metrics = fit.step()
        done += 1
        step = done - fit_start
        yield Progress("reconstruction", done, total, metrics, eta_s=eta.update(done))
        if step % config.fit_preview_every == 0 or done == total:
            yield Preview("matrix vs fit", image=_fit_preview(fit, fit_images), grid=(2, min(V, 4)), step=done)
        if step % config.scene_every == 0 and done < total:
            yield SceneUpdate(scene=place(fit.scene(), reference.framing, config), step=done)
        context.step_done(done, lambda: keep | fit.state(), lambda: {"stage": "reconstruction"})
    return place(fit.scene(), reference.framing, config)


def place(scene, framing: tuple[float, float, float], config: Diffusion2Config):
    """The fitted scene (in the recentred frame the priors saw) moved where the input shows the subject
    (``placement`` "input"): seen from the reference camera, the subject is as large and as far off-centre as
    in the input. The recentring crop is a zoom and a shift of the reference view; near the orbit's centre
    that is a uniform scale about it and a shift across the view, exact at the centre's depth."""
    side, right, down = framing
    if config.placement != "input" or framing == (1.0, 0.0, 0.0):
        return scene
    from pipelines.diffusion2.reconstruct import matrix_cameras

    c2w = matrix_cameras(1, config.elevation, config.distance, config.fovy, config.resolution).c2w[0]
    height = 2 * config.distance * math.tan(math.radians(config.fovy) / 2)  # the view's height at the centre
    return scene.placed(side, height * (right * c2w[:3, 0] + down * c2w[:3, 1]))


def _motion_seed(config: Diffusion2Config, run_seed: int) -> int:
    return config.motion_seed if config.motion_seed >= 0 else run_seed * 7 + 2


def motion_candidates(kind: str, inputs: dict, config: Diffusion2Config, seeds: list[int], context) -> Iterator:
    """Yields ``(seed, clip)`` for each motion seed: the reference view's video ``[F, H, W, 3]`` in [0, 1] that a
    full run with ``config.replace(motion_seed=seed)`` starts from, so the user picks the motion before the
    long sampling and fit (``kind`` "image" or "prompt"; a video input has its motion already)."""
    from pipelines.diffusion2.denoisers import PriorDenoiser
    from pipelines.diffusion2.sampler import sample_sequence
    from pipelines.events import Log
    from pipelines.priors.registry import load_prior

    sc = config.sampling
    prior = load_prior(prior_name(config, context, "video"), device=context.device)
    given, reference = yield from _reference(kind, inputs, config, context)
    image = reference.composite(config.background)[:1]
    prompt = yield from _prior_prompt(kind, inputs, config, given, (prior,))
    rows = PriorDenoiser(prior, video_conditioning(prior, config, image, torch.tensor([0]), prompt), "rows",
                         sc.video_guidance)
    settings = sampler_settings(config, prior, reference=True)
    known0 = _encode(prior, image)[0]
    for seed in seeds:
        context.check_cancelled()
        clip = _decode(prior, sample_sequence(rows, known0, sc.frames, settings, seed=seed))
        yield Log(f"motion candidate with seed {seed} is ready")
        yield seed, clip


def _reference_mask(V: int, F: int, ndim: int) -> Tensor:
    mask = torch.zeros(V, F, dtype=torch.bool)
    mask[0, :] = True
    mask[:, 0] = True
    return mask.reshape(V, F, *([1] * (ndim - 2)))


def _resize(images: Tensor, size: int) -> Tensor:
    """``[V, F, H, W, K]`` -> ``[V, F, size, size, K]``."""
    import torch.nn.functional as F

    v, f, h, w, k = images.shape
    flat = images.reshape(v * f, h, w, k).permute(0, 3, 1, 2)
    out = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.permute(0, 2, 3, 1).reshape(v, f, size, size, k)


def _fit_preview(fit, targets: Tensor) -> np.ndarray:
    """Top: up to 4 matrix views at the middle frame; bottom: the fit rendered there. uint8."""
    from renderers.cameras import Cameras

    views = torch.linspace(0, fit.views - 1, min(fit.views, 4)).round().long()
    f = fit.frames // 2
    cams = Cameras(fit.cameras.c2w[views], fit.cameras.K[views], fit.cameras.width, fit.cameras.height)
    with torch.no_grad():
        out = fit.scene().render(cams, fit.times[f], background=fit.background.cpu())
    top = torch.cat(list(targets[views, f]), 1)
    bottom = torch.cat(list(out.rgb.clamp(0, 1)), 1)
    return preview_pixels(torch.cat([top, bottom], 0))


def _write_png(path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    from pipelines.atomic_files import write_atomic

    write_atomic(path, iio.imwrite("<bytes>", image, extension=".png"))


def run_image(inputs: dict, config: Diffusion2Config, context) -> Iterator:
    """``image-to-4d``: inputs ``{"image": path}``."""
    return (yield from _run("image", inputs, config, context))


def run_video(inputs: dict, config: Diffusion2Config, context) -> Iterator:
    """``video-to-4d``: inputs ``{"video": path}``; its frames are row 0 of the matrix."""
    return (yield from _run("video", inputs, config, context))


def run_text(inputs: dict, config: Diffusion2Config, context) -> Iterator:
    """``text-to-4d-d2``: inputs ``{"prompt": text}``; a text -> image step, then as an image."""
    return (yield from _run("prompt", inputs, config, context))


for _name, _title, _entry, _inputs in (
        ("image-to-4d", "Image to 4D with Diffusion² (image matrix + deformable Gaussians)", "run_image", ("image",)),
        ("video-to-4d", "Video to 4D with Diffusion² (image matrix + deformable Gaussians)", "run_video", ("video",)),
        ("text-to-4d-d2", "Text to 4D with Diffusion² (text -> image -> 4D)", "run_text", ("prompt",))):
    register_pipeline(PipelineInfo(name=_name, title=_title, config_cls=Diffusion2Config,
                                   entry=f"pipelines.diffusion2.pipeline:{_entry}", inputs=_inputs,
                                   preflight="pipelines.diffusion2.pipeline:check", oom_hint="sampling.chunk"))
