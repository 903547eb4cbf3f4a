"""Zeroscope v2 (UNet3DConditionModel, text-to-video, eps-prediction) as a Denoiser."""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.priors.denoiser import Conditioning
from pipelines.priors.stable_diffusion import StableDiffusion, load_text_encoder, load_vae, read_scheduler


class Zeroscope(StableDiffusion):
    """Latents [B, V, F, 4, h, w]: each of the B*V items is one F-frame clip; ``cond.text`` [B, L, D].

    The VAE (SD's AutoencoderKL) codes frame by frame, so encode/decode are inherited.
    """

    name = "zeroscope-v2-576w"

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b, v, f = x_t.shape[:3]
        clips = x_t.flatten(0, 1).permute(0, 2, 1, 3, 4)  # UNet3D wants [N, C, F, h, w]
        t = self.schedule.model_timestep(level).to(x_t.device).repeat_interleave(v)
        out = self.unet(clips, t, encoder_hidden_states=cond.text.repeat_interleave(v, 0)).sample
        return out.permute(0, 2, 1, 3, 4).reshape(x_t.shape)


def load_zeroscope(folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   text_device: str | torch.device | None = None, gradient_checkpointing: bool = False) -> Zeroscope:
    from diffusers import UNet3DConditionModel

    folder = Path(folder)
    unet = UNet3DConditionModel.from_pretrained(folder / "unet", local_files_only=True, torch_dtype=dtype)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet = unet.to(device).eval().requires_grad_(False)
    text = load_text_encoder(folder, text_device or device, dtype)
    return Zeroscope(unet, load_vae(folder, device, dtype), text, read_scheduler(folder))
