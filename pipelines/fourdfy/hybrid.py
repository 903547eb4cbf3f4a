"""Hybrid score distillation (4D-fy Sec. 3.2, Algorithm 1) on a :class:`renderers.field_scene.FieldScene`.

One :class:`HybridSDS` object owns the field, its optimiser (parameter groups static grid / dynamic grid /
MLP / background), the VSD LoRA and its optimiser, and the three priors. :meth:`HybridSDS.step` runs
Algorithm 1's UPDATE for one global step:

    3D  : 4 views -> multi-view prior, SDS                      (Eq. 3, L_3D)
    IMG : 1 view  -> text-to-image prior, VSD with camera LoRA  (Eq. 4, L_IMG) + LoRA step (Eq. 5)
    VID : F frames of one camera -> video prior, SDS            (Eq. 6, L_VID), dynamic grid trained
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from pipelines.fourdfy.config import ROLE_KEYS, FourDfyConfig
from pipelines.fourdfy.schedule import UPDATE_3D, UPDATE_IMG, UPDATE_VID, StepPlan, plan_step, render_size_3d, t_range
from pipelines.priors.denoiser import Conditioning, Denoiser
from renderers.cameras import Cameras, orbit_cameras
from renderers.field import Background, FieldConfig
from renderers.field_scene import FieldScene
from renderers.volume import ImageOutput, RenderSettings, render_image


# -------------------------------------------------------------------- priors
def prior_names(config: FourDfyConfig, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Role -> registry name of the three priors: the config's, replaced by ``overrides`` (``--prior ROLE=NAME``,
    keyed by role or by config key)."""
    names = {role: getattr(config, key) for role, key in ROLE_KEYS.items()}
    for role, name in (overrides or {}).items():
        key_role = {v: k for k, v in ROLE_KEYS.items()}.get(role, role)
        if key_role in names:
            names[key_role] = name
    return names


def check_priors(config: FourDfyConfig, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Raise :class:`pipelines.priors.registry.ModelNotFound` (one sentence naming the model and the fix)
    when a prior the config names is not on this machine; return the role -> name map."""
    from pipelines.priors.registry import find_model

    names = prior_names(config, overrides)
    for name in dict.fromkeys(names.values()):
        find_model(name)
    return names


def preflight(inputs: dict[str, str], config: FourDfyConfig, priors: dict[str, str] | None = None) -> None:
    """Checks before a job is queued: a prompt is given, every prior is installed, and the 3D start (a saved
    scene, or the text-to-3d bundle) is there."""
    prompt_of(inputs)
    check_priors(config, priors)
    if config.init_scene:
        from renderers.scene import read_manifest

        read_manifest(config.init_scene)
    elif config.init_text_to_3d:
        from pipelines.autodecoder.pipeline import TextTo3DConfig
        from pipelines.autodecoder.pipeline import preflight as text_to_3d_preflight

        text_to_3d_preflight(inputs, TextTo3DConfig())


def prompt_of(inputs: dict[str, str]) -> str:
    prompt = (inputs.get("prompt") or "").strip()
    if not prompt:
        raise ValueError("text-to-4d needs a prompt describing the moving object, e.g. \"a red ball bouncing\".")
    return prompt


def motion_warnings(config: FourDfyConfig, names: dict[str, str]) -> list[str]:
    """Settings known to give a result with little or no motion (users of the original report that its
    low-memory config, with few video frames, hardly moves)."""
    found = []
    vid_share = 1.0 - config.p_3d - config.p_3d * config.p_img
    if config.steps_stage3 == 0 or vid_share <= 0:
        found.append("stage 3 makes no video-SDS updates with these settings: the result will not move.")
    elif config.motion_strength == 0:
        found.append("motion_strength 0 keeps only the appearance part of video SDS: the result will not move.")
    elif vid_share < 0.1 or config.steps_stage3 * vid_share < 20:
        found.append(f"only about {config.steps_stage3 * vid_share:.0f} video-SDS updates are planned: "
                     "expect little motion (raise steps_stage3 or lower p_3d).")
    if config.video_frames < 8 and not names["text-to-video"].startswith("inhouse"):
        found.append(f"{config.video_frames} video frames is known to flatten the motion with public video "
                     "priors (the original's low-memory setting); use 8 or more if memory allows.")
    if 0 < config.motion_strength < 0.5:
        found.append(f"motion_strength {config.motion_strength:g} scales the motion part of video SDS down: motion "
                     "will be faint.")
    return found


@dataclass
class Priors:
    """The three denoisers (one object may serve several roles) and the VSD LoRA on the image prior."""

    multiview: Denoiser
    image: Denoiser
    video: Denoiser
    lora: torch.nn.Module


def attach_lora(denoiser: Denoiser, rank: int) -> torch.nn.Module:
    """A camera-conditioned LoRA (the VSD estimator eps'_phi of Eq. 4) on ``denoiser``'s network: the diffusers
    UNet of the public models, or the in-house DiT (attention ``q``/``kv``/``out``, level embedding)."""
    from pipelines.priors.lora import CameraLoRA

    if hasattr(denoiser, "unet"):
        return CameraLoRA(denoiser.unet, rank)
    if hasattr(denoiser, "model") and hasattr(denoiser.model, "level"):
        return CameraLoRA(denoiser.model, rank, projections=("q", "kv", "out"), time_embedding=denoiser.model.level)
    raise ValueError(f"prior {denoiser.name!r} has no network a VSD LoRA can attach to; choose another "
                     "text-to-image prior.")


def load_priors(names: dict[str, str], device: torch.device, rank: int,
                dtype: torch.dtype = torch.float32) -> Priors:
    """Load each distinct prior once (the in-house roles share nothing but are small); freeze their weights."""
    from pipelines.priors.registry import load_prior

    loaded: dict[str, Denoiser] = {}
    for name in names.values():
        if name not in loaded:
            model = load_prior(name, device=device, dtype=dtype)
            model.requires_grad_(False)
            loaded[name] = model.eval()
    image = loaded[names["text-to-image"]]
    if image is loaded[names["text-to-multiview"]] or image is loaded[names["text-to-video"]]:
        raise ValueError("the text-to-image prior must be its own model (its LoRA would change the others).")
    with torch.random.fork_rng(devices=[]):  # the LoRA's down-projections start random: the same every run
        torch.manual_seed(0)
        lora = attach_lora(image, rank)
    return Priors(loaded[names["text-to-multiview"]], image, loaded[names["text-to-video"]], lora)


def prior_cameras(denoiser: Denoiser, c2w: Tensor) -> Tensor | None:
    """Camera conditioning ``[1, V, 16]`` of a prior for our c2w ``[V, 4, 4]`` (None: the prior takes none)."""
    if denoiser.name.startswith("mvdream"):
        from pipelines.priors.mvdream import mvdream_cameras

        return mvdream_cameras(c2w)[None]
    if denoiser.name.startswith("inhouse"):
        return c2w.flatten(-2)[None]
    return None


def encode_prompt(denoiser: Denoiser, prompt: str) -> Conditioning:
    with torch.no_grad():
        return denoiser.encode_prompt([prompt])


def prompt_warnings(priors: Priors, prompt: str) -> list[str]:
    """Warnings the priors give about the prompt (the in-house prior names words it does not know)."""
    found = []
    for denoiser in dict.fromkeys((priors.multiview, priors.image, priors.video)):
        warn = getattr(denoiser, "prompt_warning", None)
        message = warn(prompt) if warn is not None else None
        if message and message not in found:
            found.append(message)
    return found


def background_warnings(config: FourDfyConfig, priors: Priors) -> list[str]:
    """Why ``p_white`` would not do what it says: a learned background, or a prior that knows black alone."""
    if not config.p_white:
        return []
    if config.background != "solid":
        return ["p_white applies to a solid background only; with the learned one every step keeps it."]
    blind = [d.name for d in dict.fromkeys((priors.multiview, priors.image, priors.video))
             if getattr(getattr(d, "arch", None), "background", True) is False]
    if blind:
        whose = "their" if len(blind) > 1 else "its"
        return [f"p_white renders some steps over white, but {', '.join(blind)} learned black backgrounds only, "
                f"so {whose} guidance there is off {whose} training data (use a prior trained with "
                "background=true)."]
    return []


# -------------------------------------------------------------------- cameras
def draw_orbit(config: FourDfyConfig, generator: torch.Generator) -> tuple[float, float, float, float]:
    """(distance, elevation, azimuth, fovy) of one random camera; elevation uniform on the sphere's area."""
    u = torch.rand(4, generator=generator).tolist()
    d0, d1 = config.camera_distance
    s0, s1 = (math.sin(math.radians(e)) for e in config.camera_elevation)
    f0, f1 = config.camera_fovy
    elevation = math.degrees(math.asin(s0 + (s1 - s0) * u[1]))
    return d0 + (d1 - d0) * u[0], elevation, -180.0 + 360.0 * u[2], f0 + (f1 - f0) * u[3]


def multiview_cameras(config: FourDfyConfig, size: int, generator: torch.Generator) -> Cameras:
    """``views_3d`` cameras evenly spread in azimuth at one random distance / elevation / fov (MVDream's rig)."""
    distance, elevation, azimuth, fovy = draw_orbit(config, generator)
    azimuths = azimuth + 360.0 * torch.arange(config.views_3d, dtype=torch.float32) / config.views_3d
    return orbit_cameras(distance, elevation, azimuths, fovy, size, size)


# -------------------------------------------------------------------- the optimisation
class HybridSDS:
    """The state of a 4D-fy optimisation and its step (see the module docstring)."""

    def __init__(self, prompt: str, config: FourDfyConfig, priors: Priors, *, device: torch.device | str = "cpu",
                 seed: int = 0):
        self.config, self.priors, self.device = config, priors, torch.device(device)
        field_config = FieldConfig.preset(config.field_preset, density_blob_scale=config.density_blob_scale,
                                          density_blob_std=config.density_blob_std, background=config.background,
                                          background_color=tuple(config.background_color))
        with torch.random.fork_rng(devices=[]):  # the MLPs draw their initial weights from the global RNG
            torch.manual_seed(seed)
            self.scene = FieldScene.create(field_config, seed=seed,
                                           settings=RenderSettings(n_samples=config.samples_per_ray))
        from renderers.volume import OccupancyGrid

        self.scene.occupancy = OccupancyGrid(config.occupancy_resolution)
        self.scene.field.to(self.device)
        self.scene.occupancy.to(self.device)
        self.scene.background.to(self.device)
        # the background of this step's renders: the scene's, or white with probability p_white (_pick_backdrop)
        self.backdrop = self.scene.background
        self._white = Background("solid", (1.0, 1.0, 1.0)).to(self.device)
        self.field = self.scene.field
        self.field.dynamic_mode = "off"
        with torch.no_grad():  # the dynamic grid starts at zero: stage 3 begins from the static scene
            self.field.dynamic_grid.table.zero_()
        groups = self.field.param_groups(config.lr_static, config.lr_dynamic, config.lr_mlp)
        if background := list(self.scene.background.parameters()):  # a solid background has none
            groups.append({"name": "background", "params": background, "lr": config.lr_mlp})
        self.optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15)
        self.lora_optimizer = torch.optim.AdamW(priors.lora.trainable_parameters(), lr=config.lr_lora,
                                                weight_decay=0.0)
        self.cond = {role: encode_prompt(d, prompt) for role, d in
                     (("3d", priors.multiview), ("img", priors.image), ("vid", priors.video))}

    def _use(self, denoiser: Denoiser) -> Denoiser:
        """With ``offload_priors``, ``denoiser`` moves to the device and the other priors wait in CPU memory."""
        if self.config.offload_priors:
            for other in dict.fromkeys((self.priors.multiview, self.priors.image, self.priors.video)):
                if other is not denoiser and other.device.type != "cpu":
                    other.to("cpu")
            if denoiser.device != self.device:
                denoiser.to(self.device)
        return denoiser

    # ---------------------------------------------------------------- rendering
    def render(self, cameras: Cameras, t: float, generator: torch.Generator):
        """Differentiable render (stratified samples) composited over the learned background.

        With ``render_checkpointing`` each camera's image keeps only its pixels for the backward pass and
        is re-rendered there (:meth:`render_seeded`): one image's samples are held at a time instead of
        every view's and frame's (4D-fy's 16-frame video update holds 16 renders otherwise)."""
        if self.config.render_checkpointing and torch.is_grad_enabled():
            return self.render_seeded(cameras, t, generator, recompute=True)
        return self._draw(cameras.to(self.device), t, generator)

    def _draw(self, cameras: Cameras, t: float, generator: torch.Generator):
        settings = RenderSettings(n_samples=self.config.samples_per_ray, stratified=True)
        return render_image(self.field, cameras, t, occupancy=self.scene.occupancy, settings=settings,
                            background=self.backdrop, generator=generator)

    def render_seeded(self, cameras: Cameras, t: float, generator: torch.Generator, recompute: bool):
        """Camera by camera, each with its stratified jitter from a generator seeded by one draw from
        ``generator`` (a recomputation must draw the same samples); ``recompute``: through
        ``torch.utils.checkpoint``, which keeps the image and re-renders it in the backward pass."""
        from torch.utils.checkpoint import checkpoint

        cameras = cameras.to(self.device)
        seeds = torch.randint(0, 2 ** 62, (len(cameras),), generator=generator).tolist()
        anchor = torch.zeros((), device=self.device, requires_grad=True)  # gives each checkpoint a grad input
        parts = []
        for i, seed in enumerate(seeds):
            one = Cameras(cameras.c2w[i:i + 1], cameras.K[i:i + 1], cameras.width, cameras.height)
            kept: dict = {}

            def image(_, one=one, seed=seed, kept=kept):
                out = self._draw(one, t, torch.Generator(device=generator.device).manual_seed(seed))
                kept.setdefault("out", out)  # the forward call's depth and skip rate, for the caller
                return out.rgb, out.alpha
            rgb, alpha = checkpoint(image, anchor, use_reentrant=False) if recompute else image(anchor)
            parts.append((rgb, alpha, kept["out"]))
        return ImageOutput(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                           torch.cat([p[2].depth.detach() for p in parts]), None,
                           sum(p[2].skipped for p in parts) / len(parts))

    def _pick_backdrop(self, generator: torch.Generator, video: bool = False) -> float:
        """Pick this step's background (:attr:`backdrop`) and return its grey level for the priors.

        With ``p_white`` a step renders over white instead of the scene's solid colour: over black, matter
        with a black albedo looks like empty space, over white it shows, and a prior that knows both
        backgrounds then pushes it out (or gives it a colour). Video updates do so only with ``white_video``."""
        c = self.config
        white = (c.p_white > 0 and c.background == "solid" and (c.white_video or not video)
                 and float(torch.rand((), generator=generator)) < c.p_white)
        self.backdrop = self._white if white else self.scene.background
        return 1.0 if white else float(sum(c.background_color)) / 3

    def _regularisers(self, alpha: Tensor) -> dict[str, Tensor]:
        c = self.config
        out = {}
        if c.lambda_sparsity:
            out["sparsity"] = c.lambda_sparsity * alpha.mean()
        if c.lambda_opaque:
            a = alpha.clamp(1e-4, 1 - 1e-4)
            out["opaque"] = c.lambda_opaque * (-(a * a.log() + (1 - a) * (1 - a).log())).mean()
        return out

    def _dark_matter(self, t: float, generator: torch.Generator, n: int = 4096) -> Tensor:
        """Density at random points of the box, weighted by how far its albedo falls under ``dark_albedo``.

        Over the prior's black background, matter with a black albedo looks like empty space, so the guidance
        neither keeps nor removes it: the starting blob's core stays in a torus's hole as a black disc (seen
        over white, or from the side, it is a solid). Nothing in the world is that dark (the brightest channel
        of its opaque pixels is under 0.1 for 0.03 % of them), so such matter is removed."""
        points = (torch.rand(n, 3, generator=generator) * 2 - 1).to(self.device)
        sigma, albedo = self.field(points, t)
        # the albedo only weighs: left free, brightening every albedo a little is the cheaper way out
        darkness = (1 - albedo.detach().max(-1).values / self.config.dark_albedo).clamp_min(0)
        return self.config.lambda_dark * (darkness * sigma).mean()

    def _temporal(self, generator: torch.Generator, n: int = 2048) -> Tensor:
        """Smooth motion: dynamic features of random points at t and t + 1/F should be close."""
        points = (torch.rand(n, 3, generator=generator) * 2 - 1).to(self.device)
        t = torch.rand(n, 1, generator=generator).to(self.device)
        dt = 1.0 / max(self.config.video_frames, 2)
        unit = (points + 1) * 0.5
        a = self.field.dynamic_grid(torch.cat([unit, t], 1))
        b = self.field.dynamic_grid(torch.cat([unit, (t + dt).clamp(max=1.0)], 1))
        return self.config.lambda_temporal * ((a - b) ** 2).sum(-1).mean()

    @staticmethod
    def _latents(denoiser: Denoiser, rgb: Tensor, size: tuple[int, int]) -> Tensor:
        """Renders ``[N, H, W, 3]`` -> latents ``[N, C, h, w]`` at the prior's native ``size`` (bilinear upsampling)."""
        images = rgb.permute(0, 3, 1, 2)
        if tuple(images.shape[-2:]) != tuple(size):
            images = F.interpolate(images, size, mode="bilinear", align_corners=False)
        # checkpointed, the encoder is recomputed one image at a time: its activations are one image's
        chunk = 1 if denoiser.encode_checkpointing else 8
        return denoiser.encode_images(images.to(denoiser.dtype), chunk=chunk).float()

    # ---------------------------------------------------------------- one step of Algorithm 1
    def plan(self, step: int, generator: torch.Generator) -> StepPlan:
        return plan_step(step, float(torch.rand((), generator=generator)), self.config)

    def step(self, step: int, generator: torch.Generator) -> tuple[StepPlan, dict[str, float]]:
        """UPDATE(grad) for global ``step`` with all randomness from ``generator``; returns the plan and losses.
        Gradients are left on the parameters until the next step (tests read them)."""
        from pipelines.priors.guidance import emphasise_motion, lora_train_step, sds_loss, vsd_loss

        c = self.config
        plan = self.plan(step, generator)
        grey = self._pick_backdrop(generator, video=plan.update == UPDATE_VID)
        for group in self.optimizer.param_groups:
            if group["name"] == "static_grid":
                group["lr"] = plan.lr_static
        self.field.dynamic_mode = plan.dynamic_mode
        if step % c.occupancy_every == 0:
            times = [0.0] if plan.stage < 3 else [i / 3 for i in range(4)]
            self.scene.occupancy.update(self.field.density, times, self.scene.settings.step, generator=generator)
        losses: dict[str, Tensor] = {}
        self.optimizer.zero_grad(set_to_none=True)
        if plan.update == UPDATE_3D:
            mv = self._use(self.priors.multiview)
            size = render_size_3d(step, c)
            cameras = multiview_cameras(c, size, generator)
            t = float(torch.rand((), generator=generator)) if plan.stage == 3 else 0.0
            out = self.render(cameras, t, generator)
            z = self._latents(mv, out.rgb, (c.native_3d, c.native_3d))
            latents = z[None, :, None]  # [1, V, 1, C, h, w]
            cond = replace(self.cond["3d"], cameras=prior_cameras(mv, cameras.c2w), background=grey)
            g = sds_loss(mv, latents, cond.to(self.device), guidance_scale=c.guidance_3d,
                         t_range=t_range(UPDATE_3D, step, c), generator=generator)
            losses["sds_3d"] = g.loss
        elif plan.update == UPDATE_IMG:
            img = self._use(self.priors.image)
            d, e, a, f = draw_orbit(c, generator)
            cameras = orbit_cameras(d, e, a, f, c.render_img, c.render_img)
            t = float(torch.rand((), generator=generator)) if plan.stage == 3 else 0.0
            out = self.render(cameras, t, generator)
            z = self._latents(img, out.rgb, (c.native_img, c.native_img))
            latents = z[None, :, None]
            cond = replace(self.cond["img"], cameras=prior_cameras(img, cameras.c2w), background=grey)
            lora_cams = cameras.c2w.reshape(1, 16).to(self.device)
            g = vsd_loss(img, self.priors.lora, latents, cond.to(self.device), lora_cams,
                         guidance_scale=c.guidance_img, t_range=t_range(UPDATE_IMG, step, c), generator=generator)
            losses["vsd"] = g.loss
        else:
            vid = self._use(self.priors.video)
            h, w = c.render_video
            d, e, a, f = draw_orbit(c, generator)
            cameras = orbit_cameras(d, e, a, f, w, h)
            # at the times the prior gives its frames (the in-house prior's loop: f / F)
            frames = [self.render(cameras, t, generator) for t in vid.frame_times(c.video_frames)]
            rgb = torch.cat([fr.rgb for fr in frames])
            out = frames[0]
            out.alpha = torch.cat([fr.alpha for fr in frames])
            z = self._latents(vid, rgb, tuple(c.native_video))
            latents = z[None, None]  # [1, 1, F, C, h, w]
            cond = replace(self.cond["vid"], cameras=prior_cameras(vid, cameras.c2w), background=grey)
            g = sds_loss(vid, latents, cond.to(self.device), guidance_scale=c.guidance_video,
                         t_range=t_range(UPDATE_VID, step, c), generator=generator,
                         noise_sharing=c.video_noise_sharing)
            if c.motion_strength != 1.0:
                g = emphasise_motion(g, latents, c.motion_strength)
            losses["sds_video"] = g.loss
            if c.lambda_temporal:
                losses["temporal"] = self._temporal(generator)
        losses.update(self._regularisers(out.alpha))
        if c.lambda_dark:
            losses["dark"] = self._dark_matter(t if plan.update != UPDATE_VID else
                                               float(torch.rand((), generator=generator)), generator)
        total = sum(losses.values())
        total.backward()
        self.optimizer.step()
        if plan.update == UPDATE_IMG:  # Alg. 1 line 19: fine-tune the LoRA on the render (Eq. 5)
            losses["lora"] = torch.tensor(lora_train_step(
                self.priors.image, self.priors.lora, self.lora_optimizer, latents, cond.to(self.device), lora_cams,
                camera_dropout=c.lora_camera_dropout, generator=generator))
        values = {k: float(v.detach()) for k, v in losses.items()}
        values["loss"] = float(total.detach())
        return plan, values

    # ---------------------------------------------------------------- checkpoint state
    def state(self) -> tuple[dict[str, Tensor], dict]:
        from pipelines.checkpoints import optimizer_state

        tensors = {f"field.{k}": v for k, v in self.field.state_dict().items()}
        tensors |= {f"occupancy.{k}": v for k, v in self.scene.occupancy.state_dict().items()}
        tensors |= {f"background.{k}": v for k, v in self.scene.background.state_dict().items()}
        tensors |= {f"lora.{k}": v for k, v in self.priors.lora.lora_state_dict().items()}
        opt, opt_meta = optimizer_state(self.optimizer, "optimizer")
        lora_opt, lora_meta = optimizer_state(self.lora_optimizer, "lora_optimizer")
        return {**tensors, **opt, **lora_opt}, {"optimizer": opt_meta, "lora_optimizer": lora_meta}

    def load_state(self, tensors: dict[str, Tensor], extra: dict) -> None:
        from pipelines.checkpoints import load_optimizer_state

        def part(prefix):
            return {k[len(prefix):]: v.to(self.device) for k, v in tensors.items() if k.startswith(prefix)}
        self.field.load_state_dict(part("field."))
        self.scene.occupancy.load_state_dict(part("occupancy."))
        self.scene.background.load_state_dict(part("background."))
        self.priors.lora.load_state_dict(part("lora."), strict=False)
        load_optimizer_state(self.optimizer, {k: v.to(self.device) for k, v in tensors.items()},
                             extra["optimizer"], "optimizer")
        load_optimizer_state(self.lora_optimizer, {k: v.to(self.device) for k, v in tensors.items()},
                             extra["lora_optimizer"], "lora_optimizer")


# -------------------------------------------------------------------- optional 3D initialisation
def initialise_from_scene(hybrid: HybridSDS, source, steps: int, *, views: int = 16, size: int = 32, rays: int = 1024,
                          seed: int = 0) -> float:
    """Fit the static field to renders of ``source`` (any Scene, e.g. a 3D prior's sample) at t = 0 before
    stage 1, in the spirit of Sherpa3D: a coarse 3D shape to start score distillation from. Returns the mean
    squared error of the last fit steps."""
    from renderers.field_fit import FitSettings, fit, image_batches

    c = hybrid.config
    distance, fovy = sum(c.camera_distance) / 2, sum(c.camera_fovy) / 2
    azimuths = torch.arange(views, dtype=torch.float32) * 360.0 / views
    elevations = torch.tensor([10.0, 35.0]).repeat(views // 2 + 1)[:views]
    cameras = orbit_cameras(distance, elevations, azimuths, fovy, size, size)
    with torch.no_grad():
        truth = source.render(cameras, 0.0)
    batches = image_batches([cameras.to(hybrid.device)], [0.0], [truth.rgb.to(hybrid.device)],
                            [truth.alpha.to(hybrid.device)], rays=rays)
    hybrid.field.dynamic_mode = "off"
    losses = fit(hybrid.scene, batches, [0.0], FitSettings(steps=steps, lr_grid=c.lr_static, lr_mlp=c.lr_mlp,
                                                           seed=seed))
    tail = losses[-10:]
    return sum(tail) / max(len(tail), 1)

