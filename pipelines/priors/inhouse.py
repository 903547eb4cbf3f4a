"""The in-house field prior behind the denoiser interface, in the five roles the pipelines ask for.

One network (:class:`~pipelines.models.field_dit.FieldDiT`), one latent space, five registry names:

| name | role | like | latents ``[B, V, F, C, h, w]`` | conditioning |
| --- | --- | --- | --- | --- |
| ``inhouse-t2i`` | text -> image | SD 2.1 | V = F = 1 | text |
| ``inhouse-t2mv`` | text -> 4 views | MVDream | V = 4, F = 1 | text, cameras ``[B, V, 16]`` |
| ``inhouse-t2v`` | text -> video | Zeroscope | V = 1, F frames | text (cameras optional) |
| ``inhouse-i2v`` | image -> video | SVD | V = 1, F frames, frame 0 = the image | image_latents, text optional |
| ``inhouse-i2orbit`` | image -> orbit | SV3D | V orbit views, F = 1, view 0 = the image | image_latents, cameras |

Missing cameras default to the training rig (distance 2.7, fov 40 deg, elevation 15 deg, views evenly
spread in azimuth); frame f of F has time f / F. For the image roles, view/frame 0 of ``x_t`` is replaced
by the clean reference as a conditioning view, and its prediction is the one whose x0 is the reference.
A prior trained with a heading input (``arch.heading``) is given heading 0 in the text roles and none in
the image roles (:attr:`FieldPrior.heading`).
A prior trained with a background input (``arch.background``) is told ``Conditioning.background`` (the grey
level behind the subject; 0, black, is what the world renders and the default).
The weights load from an explicit path, ``<models_dir>/<name>``, or the checkpoint bundled in ``assets``.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import torch

from pipelines.models.field_dit import FieldDiT, FieldPriorArch, images_to_latents, latents_to_images
from pipelines.models.text import PromptTokenizer
from pipelines.models.vocabulary import prompt_warning, shape_by_motion
from pipelines.priors.denoiser import Conditioning, Denoiser
from pipelines.priors.schedules import DiscreteSchedule, to_v
from renderers.cameras import intrinsics_from_fov, look_at, orbit_positions

ROLES = ("text-to-image", "text-to-multiview", "text-to-video", "image-to-video", "image-to-orbit")
ROLE_OF_NAME = {"inhouse-t2i": "text-to-image", "inhouse-t2mv": "text-to-multiview", "inhouse-t2v": "text-to-video",
                "inhouse-i2v": "image-to-video", "inhouse-i2orbit": "image-to-orbit"}
BUNDLED = "inhouse-field-prior"  # folder under assets/checkpoints
DEFAULT_ELEVATION = 15.0
# Per role, the share of the starting noise common to all views / frames when sampling (1 = T1's shared
# noise). Measured on the bundled prior: see its model card.
NOISE_SHARING = {"text-to-video": 0.0, "image-to-video": 0.0}


def cosine_schedule(steps: int = 1000, s: float = 0.008) -> DiscreteSchedule:
    """Nichol & Dhariwal's cosine schedule as a discrete DDPM table (abar clipped away from 0)."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * torch.pi / 2) ** 2
    abar = (f[1:] / f[0]).clamp(1e-4, 0.99999)
    return DiscreteSchedule(abar)


def default_cameras(views: int, arch: FieldPriorArch, elevation: float = DEFAULT_ELEVATION,
                    azimuth0: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Orbit cameras of the training rig: c2w [V, 4, 4], K [V, 3, 3] (views evenly spread in azimuth)."""
    az = azimuth0 + 360.0 * torch.arange(views, dtype=torch.float32) / views
    c2w = look_at(orbit_positions(arch.distance, elevation, az))
    K = intrinsics_from_fov(arch.fovy, arch.resolution, arch.resolution)
    return c2w, K[None].expand(views, 3, 3).clone()


class FieldPrior(Denoiser):
    """The in-house field prior in one role (see the module table). ``model`` is a trained FieldDiT."""

    parameterization = "v_prediction"

    def __init__(self, model: FieldDiT, role: str = "text-to-image", name: str = "inhouse-t2i") -> None:
        super().__init__()
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        self.model, self.role, self.name = model, role, name
        self.arch = model.arch
        self.tokenizer = PromptTokenizer(self.arch.text_length)
        self.schedule = cosine_schedule()
        self.latent_channels = self.arch.latent_channels
        self.downsample = self.arch.downsample
        self.views = 4 if role == "text-to-multiview" else None
        self._empty: torch.Tensor | None = None
        # the starting noise's shared share when sampling (see :func:`sample`)
        self.noise_sharing = NOISE_SHARING.get(role, 1.0)
        # The object's heading (radians) for a model trained with one: text roles draw the canonical pose, so
        # every view, frame and guidance step of a pipeline agrees on where the object faces and, for an
        # orbiting or walking subject, where it is; None (unknown) for the image roles, whose reference shows it.
        self.heading: float | None = 0.0 if role.startswith("text-to") else None
        # how often its evaluation drew each motion's objects the right shape (set by load_field_prior)
        self.shape_by_motion: dict[str, dict] = {}

    # ------------------------------------------------------------------------------------------ conditioning
    def encode_prompt(self, prompts: list[str] | str, cameras: torch.Tensor | None = None) -> Conditioning:
        """Conditioning with the prompt features ``text`` [B, L, D] (unknown words become [UNK])."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = self.tokenizer.encode(prompts).to(self.device)
        return Conditioning(text=self.model.encode_text(ids), cameras=cameras)

    def encode_image_condition(self, image: torch.Tensor, prompt: str | list[str] = "",
                               cameras: torch.Tensor | None = None) -> Conditioning:
        """Conditioning of reference images [B, 3, H, W] in [0, 1] (at the model's resolution) and a prompt."""
        cond = self.encode_prompt([prompt] * image.shape[0] if isinstance(prompt, str) else prompt, cameras)
        cond.image_latents = self.encode_images(image)
        return cond

    def frame_times(self, frames: int) -> list[float]:
        """Frame f of F at time f / F: the world's motions loop over [0, 1), and the tokens carry these times."""
        return [f / frames for f in range(frames)]

    def prompt_warning(self, prompt: str) -> str | None:
        """Unknown words, then a motion this prior's own evaluation says it rarely draws well, as one message."""
        return prompt_warning(prompt, self.shape_by_motion)

    def uncond(self, cond: Conditioning) -> Conditioning:
        """The empty prompt (what condition dropout trained); cameras and the reference image are kept."""
        if self._empty is None:
            with torch.no_grad():
                self._empty = self.model.encode_text(self.tokenizer.encode([""]).to(self.device))
        neg = self._empty.to(cond.text).expand(cond.text.shape[0], -1, -1) if cond.text is not None else None
        return Conditioning(text=neg, image_latents=cond.image_latents, cameras=cond.cameras,
                            background=cond.background, estimate=cond.estimate)

    # ------------------------------------------------------------------------------------------ network
    def _view_coordinates(self, cond: Conditioning, b: int, v: int, f: int, device) -> tuple:
        """c2w [B, V*F, 4, 4], K [B, V*F, 3, 3], times [B, V*F] of a V x F block (view-major)."""
        if cond.cameras is not None:
            c2w = cond.cameras.reshape(cond.cameras.shape[0], -1, 4, 4).float().to(device)
            if c2w.shape[1] != v:
                raise ValueError(f"{self.name}: cameras have {c2w.shape[1]} views but the latents have {v}")
            c2w = c2w.expand(b, -1, -1, -1)
            K = intrinsics_from_fov(self.arch.fovy, self.arch.resolution, self.arch.resolution).to(device)
            K = K.expand(b, v, 3, 3)
        else:
            c2w, K = default_cameras(v, self.arch)
            c2w, K = c2w.to(device).expand(b, -1, -1, -1), K.to(device).expand(b, -1, -1, -1)
        times = torch.tensor(self.frame_times(f), device=device).expand(b, v, f)
        c2w = c2w[:, :, None].expand(-1, -1, f, -1, -1).reshape(b, v * f, 4, 4)
        K = K[:, :, None].expand(-1, -1, f, -1, -1).reshape(b, v * f, 3, 3)
        return c2w, K, times.reshape(b, v * f)

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """v-prediction [B, V, F, C, h, w] for x_t [B, V, F, C, h, w] at DDPM timesteps level [B]."""
        b, v, f = x_t.shape[:3]
        text = cond.text if cond.text is not None else self.uncond(Conditioning(text=x_t.new_zeros(1, 1, 1))).text
        text = text.expand(b, -1, -1) if text.shape[0] == 1 else text
        c2w, K, times = self._view_coordinates(cond, b, v, f, x_t.device)
        x = x_t.flatten(1, 2)
        clean = torch.zeros(b, v * f, dtype=torch.bool, device=x_t.device)
        reference = cond.image_latents if self.role in ("image-to-video", "image-to-orbit") else None
        if reference is not None:
            ref = reference.to(x).reshape(-1, *x.shape[2:]).expand(b, -1, -1, -1)
            x = torch.cat([ref[:, None], x[:, 1:]], 1)
            clean[:, 0] = True
        heading = torch.full((b,), math.nan if self.heading is None else self.heading, device=x_t.device)
        background = torch.full((b,), float(cond.background), device=x_t.device)
        estimate = None
        if cond.estimate is not None and self.arch.self_condition:
            estimate = cond.estimate.to(x).flatten(1, 2).expand(b, -1, -1, -1, -1)
            estimate = torch.where(clean[:, :, None, None, None], torch.zeros_like(estimate), estimate)
        out = self.model(x, level.to(x_t.device), text.to(x_t), c2w, K, times, clean, heading, background, estimate)
        if reference is not None:
            alpha, sigma = self.schedule.alpha_sigma(level)
            x0_pred = ref
            eps = (x_t[:, 0, 0] - alpha.to(x).view(-1, 1, 1, 1) * x0_pred) / sigma.to(x).view(-1, 1, 1, 1)
            out[:, 0] = to_v(eps, x_t[:, 0, 0], alpha.to(x), sigma.to(x), "epsilon")
        return out.reshape(x_t.shape)

    def encode_images(self, images: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """Images [N, 3, H, W] in [0, 1] -> latents [N, 3 d^2, H/d, W/d] (exact space-to-depth)."""
        return images_to_latents(images, self.downsample)

    def decode_latents(self, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        return latents_to_images(latents, self.downsample)


@torch.no_grad()
def sample(prior: FieldPrior, cond: Conditioning, views: int = 1, frames: int = 1, steps: int = 25,
           guidance_scale: float = 3.0, generator: torch.Generator | None = None,
           noise_sharing: float | None = None, batch: int | None = None) -> torch.Tensor:
    """Draw latents [B, V, F, C, h, w] with DDIM (eta = 0) and classifier-free guidance.

    ``noise_sharing``: the share of the starting noise's variance that is common to every view and frame of
    an item: 1 is T1's cross-view noise consistency (Sec. 3.2, Eq. 1; the same noise everywhere), 0 independent
    noise per view and frame. Training saw both ends. ``None`` takes the role's default
    (:attr:`FieldPrior.noise_sharing`). A self-conditioning model gets each step's x0 estimate in the next step.
    """
    b = batch or (cond.text.shape[0] if cond.text is not None else cond.image_latents.shape[0])
    C, s = prior.latent_channels, prior.arch.latent_size
    rho = prior.noise_sharing if noise_sharing is None else float(noise_sharing)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"noise_sharing must be in [0, 1], got {rho}")
    common = torch.randn((b, 1, 1, C, s, s), generator=generator)
    x = common.expand(b, views, frames, C, s, s)
    if rho < 1.0:
        own = torch.randn((b, views, frames, C, s, s), generator=generator)
        x = rho ** 0.5 * x + (1.0 - rho) ** 0.5 * own
    x = x.contiguous().to(prior.device)
    T = prior.schedule.num_steps
    levels = torch.linspace(T - 1, 0, steps + 1)
    for i in range(steps):
        t, t_next = levels[i], levels[i + 1]
        pred = prior.predict(x, t.expand(b), cond, guidance_scale=guidance_scale)
        x0, eps = pred.x0, pred.eps
        if prior.arch.self_condition:
            cond = replace(cond, estimate=x0)
        if i == steps - 1:
            x = x0
            break
        a_next, s_next = prior.schedule.alpha_sigma(t_next.reshape(1))
        x = a_next.to(x) * x0 + s_next.to(x) * eps
    return x


def load_field_prior(folder: str | Path, role: str = "text-to-image", name: str = "inhouse-t2i",
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> FieldPrior:
    """A FieldPrior from a folder holding ``config.json`` + ``model.safetensors`` (or a training out_dir)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        config = json.loads((folder / "config.json").read_text())
        state = load_file(folder / "model.safetensors")
    else:
        from pipelines.models.training import read_training_checkpoint

        config, state = read_training_checkpoint(folder, ema=True)
    arch = FieldPriorArch.from_dict(config["arch"])
    model = FieldDiT(arch)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    prior = FieldPrior(model.to(device, dtype).eval(), role, name)
    prior.shape_by_motion = shape_by_motion(folder)
    return prior


def _loader(name: str):
    def load(folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, **_) -> FieldPrior:
        return load_field_prior(folder, ROLE_OF_NAME[name], name, device, dtype)
    load.__name__ = "load_" + name.replace("-", "_")
    return load


load_inhouse_t2i = _loader("inhouse-t2i")
load_inhouse_t2mv = _loader("inhouse-t2mv")
load_inhouse_t2v = _loader("inhouse-t2v")
load_inhouse_i2v = _loader("inhouse-i2v")
load_inhouse_i2orbit = _loader("inhouse-i2orbit")
