"""`text-to-4d`: 4D-fy as a pipeline: progress, preview strips, scene updates, checkpoints, the final FieldScene."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

from pipelines.fourdfy.config import FourDfyConfig
from pipelines.fourdfy.hybrid import (
    HybridSDS,
    background_warnings,
    check_priors,
    initialise_from_scene,
    load_priors,
    motion_warnings,
    prompt_of,
    prompt_warnings,
)
from pipelines.fourdfy.schedule import LOSS_OF_UPDATE, STAGE_TITLES, StagePlateau
from pipelines.registry import PipelineInfo, register_pipeline
from renderers.mesh import silhouette_level

ESTIMATE_AFTER = 10  # steps into a stage before its time is estimated


def stage_end(stage: int, config: FourDfyConfig) -> int:
    """The global step count at the end of ``stage``."""
    return (config.steps_stage1, config.steps_stage1 + config.steps_stage2, config.total_steps)[stage - 1]


def run(inputs: dict[str, str], config: FourDfyConfig, context) -> Iterator:
    """Optimise a 4D field for ``inputs["prompt"]``; yields events and returns the FieldScene.

    Before any work: an empty prompt or a missing prior raises with one sentence. A checkpoint in the run
    folder resumes the optimisation at the step after it (mid-stage included)."""
    import torch

    from pipelines.events import EtaEstimator, Log, Preview, Progress, SceneUpdate

    prompt = prompt_of(inputs)
    names = check_priors(config, context.priors)
    device = context.device
    config = yield from _memory_profile(config, names, device)
    for warning in motion_warnings(config, names):
        yield Log(warning, level="warning")
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[config.prior_dtype]
    priors = load_priors(names, torch.device("cpu") if config.offload_priors else device, config.lora_rank,
                         dtype=dtype)
    for denoiser in (priors.multiview, priors.image, priors.video):
        denoiser.encode_checkpointing = config.encode_checkpointing
    for warning in prompt_warnings(priors, prompt) + background_warnings(config, priors):
        yield Log(warning, level="warning")
    hybrid = HybridSDS(prompt, config, priors, device=device, seed=context.seed)
    start = 0
    if (ckpt := context.last_checkpoint()) is not None:
        hybrid.load_state(ckpt.state, ckpt.extra)
        start = ckpt.step
        yield Log(f"resumed from the checkpoint after step {start}")
    elif config.init_scene or config.init_text_to_3d:
        source, origin = yield from _initial_scene(prompt, config, context)
        mse = initialise_from_scene(hybrid, source, config.init_steps, seed=context.seed)
        yield Log(f"static field initialised from {origin} (fit error {mse:.4f})")
    total = config.total_steps
    eta = EtaEstimator(total)
    stage_started: dict[int, tuple[int, float]] = {}
    plateau = StagePlateau(config.early_stop_patience, config.early_stop_tolerance)
    step = start
    while step < total:
        plan, losses = hybrid.step(step, context.generator(offset=step))
        done = step + 1
        end = stage_end(plan.stage, config)
        if plateau.update(plan.update, losses[LOSS_OF_UPDATE[plan.update]]) and done < end:
            yield Log(f"{STAGE_TITLES[plan.stage]}: the guidance losses stopped falling (no "
                      f"{config.early_stop_tolerance:.0%} drop in {config.early_stop_patience} updates); the stage "
                      f"ends at step {done} instead of {end}")
            done = end  # the schedule is a function of the step: the next stage starts as planned
        if done == end:
            plateau.reset()
        if plan.stage not in stage_started:
            stage_started[plan.stage] = (done, time.monotonic())
        elif done - stage_started[plan.stage][0] == ESTIMATE_AFTER:
            first, began = stage_started[plan.stage]
            per_step = (time.monotonic() - began) / (done - first)
            left = per_step * (end - done)
            yield Log(f"{STAGE_TITLES[plan.stage]}: {per_step:.2f} s per step, about {left / 60:.1f} min to the "
                      "end of the stage")
        metrics = {"stage": float(plan.stage), **losses}
        yield Progress(STAGE_TITLES[plan.stage], done, total, metrics, eta_s=eta.update(done))
        if done % config.preview_every == 0 or done == total:
            views, frames = preview_strips(hybrid, t=0.5 if plan.stage == 3 else 0.0)
            yield Preview(f"views at t={0.5 if plan.stage == 3 else 0.0:g}", image=views,
                          grid=(1, config.preview_count), step=done)
            yield Preview("frames from one camera", image=frames, grid=(1, config.preview_count), step=done)
        if done % config.scene_every == 0 and done < total:
            yield SceneUpdate(scene=snapshot(hybrid), step=done)
        context.step_done(done, lambda: hybrid.state()[0], lambda: hybrid.state()[1])
        step = done
    scene = snapshot(hybrid)
    scene.occupancy.update(scene.field.density, [i / 7 for i in range(8)], scene.settings.step,
                           generator=torch.Generator().manual_seed(context.seed))
    # A field distilled on a CPU is soft: at threestudio's level its mesh (the viewer's proxy, the exports)
    # would be empty, so the surface sits where its outline matches the renders.
    frame_times = hybrid.priors.video.frame_times(config.video_frames)
    scene.isosurface_threshold = silhouette_level(scene, scene.field.density, frame_times,
                                                  preferred=scene.isosurface_threshold, device=hybrid.device)
    yield Log(f"mesh surface at density {scene.isosurface_threshold:.3g}, where its outline matches the renders")
    return scene


def _initial_scene(prompt: str, config: FourDfyConfig, context) -> Iterator:
    """Yields Log events; returns ``(scene, origin)``: the saved scene ``init_scene``, or a sample of the
    text-to-3d autodecoder for the prompt (``init_text_to_3d``), which the static field is fitted to first."""
    from pipelines.events import Log

    if config.init_scene:
        from renderers.scene import load_scene

        return load_scene(config.init_scene), config.init_scene
    from pipelines.autodecoder.pipeline import TextTo3DConfig, sample_for_prompt

    yield Log("3D start: sampling the text-to-3d autodecoder on the prompt")
    scene, line = sample_for_prompt(prompt, TextTo3DConfig(), context.device, context.generator(offset=-1))
    yield Log(f"3D start from the text-to-3d autodecoder, {line}")
    return scene, "the text-to-3d sample"


def _memory_profile(config: FourDfyConfig, names: dict[str, str], device) -> Iterator:
    """Yields Log events; returns the config with its memory profile applied (``pipelines.fourdfy.memory``).
    On a CPU ``auto`` leaves the config as it is, without reading the priors' files."""
    from pipelines.events import Log
    from pipelines.fourdfy.memory import choose_profile, field_parameters, free_memory, parameter_counts

    free = free_memory(device)
    if config.memory_profile == "auto" and free is None:
        return config
    _, chosen, lines = choose_profile(config, free, parameter_counts(names), field_parameters(config))
    for i, line in enumerate(lines):
        yield Log(line, level="info" if i == 0 else "warning")
    return chosen


def snapshot(hybrid: HybridSDS):
    """A detached copy of the current scene for the viewer / result (dynamic grid on from stage 3)."""
    scene = copy.deepcopy(hybrid.scene)
    scene.field.requires_grad_(False)
    scene.field.dynamic_mode = "frozen"
    return scene


def preview_strips(hybrid: HybridSDS, t: float):
    """Two uint8 strips ``[S, N*S, 3]``: N views around the object at time ``t``, and N frames (t from 0 to 1)
    from one camera, composited over the learned background."""
    import torch

    from pipelines.events import preview_pixels
    from renderers.cameras import orbit_cameras
    from renderers.volume import RenderSettings, render_image

    c = hybrid.config
    n, s = c.preview_count, c.preview_size
    distance = sum(c.camera_distance) / 2
    fovy = sum(c.camera_fovy) / 2
    settings = RenderSettings(n_samples=c.samples_per_ray)
    field, mode = hybrid.field, hybrid.field.dynamic_mode
    field.dynamic_mode = "frozen"
    try:
        with torch.no_grad():
            azimuths = torch.arange(n, dtype=torch.float32) * 360.0 / n
            cams = orbit_cameras(distance, 15.0, azimuths, fovy, s, s).to(hybrid.device)
            views = render_image(field, cams, t, occupancy=hybrid.scene.occupancy, settings=settings,
                                 background=hybrid.scene.background).rgb
            one = orbit_cameras(distance, 15.0, 30.0, fovy, s, s).to(hybrid.device)
            frames = torch.cat([render_image(field, one, i / max(n - 1, 1), occupancy=hybrid.scene.occupancy,
                                             settings=settings, background=hybrid.scene.background).rgb
                                for i in range(n)])
    finally:
        field.dynamic_mode = mode

    def strip(images):
        return preview_pixels(torch.cat(list(images), 1))
    return strip(views), strip(frames)


register_pipeline(PipelineInfo(
    name="text-to-4d",
    title="4D-fy: text to a moving 3D field by hybrid score distillation",
    config_cls=FourDfyConfig,
    entry="pipelines.fourdfy.pipeline:run",
    inputs=("prompt",),
    preflight="pipelines.fourdfy.hybrid:preflight",
    oom_hint="render_3d",
))
