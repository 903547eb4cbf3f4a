"""Stable Diffusion 2.1 (UNet2DConditionModel + CLIP text encoder + AutoencoderKL) as a Denoiser."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipelines.priors.denoiser import Conditioning, Denoiser, vae_decode, vae_encode
from pipelines.priors.schedules import DiscreteSchedule


class TextEncoder:
    """CLIP tokenizer + text encoder that may live on its own device (e.g. the CPU, to spare the GPU)."""

    def __init__(self, tokenizer, text_encoder):
        self.tokenizer, self.model = tokenizer, text_encoder
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """Prompts [B] -> last hidden states [B, L, D] on the encoder's device (cached per prompt)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            hidden = self.model(ids.to(self.model.device))[0]
            self._cache.update(zip(missing, hidden, strict=True))
        return torch.stack([self._cache[p] for p in prompts])


def read_scheduler(folder: Path) -> dict:
    path = folder / "scheduler" / "scheduler_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


class StableDiffusion(Denoiser):
    """Text-to-image latent diffusion; latents [B, V, F, 4, h, w] are denoised as B*V*F independent images.

    ``cond.text`` [B, L, D]; ``cond.cameras`` [B, V, 16] feeds the UNet's class embedding when it has
    one (MVDream's camera MLP, the VSD LoRA's camera embedding).
    """

    name = "sd21-base"

    def __init__(self, unet, vae, text: TextEncoder, scheduler_config: dict):
        super().__init__()
        self.unet, self.vae, self.text = unet, vae, text
        self.schedule = DiscreteSchedule.from_scheduler_config(scheduler_config)
        self.parameterization = scheduler_config.get("prediction_type", "epsilon")
        self.latent_channels = unet.config.in_channels
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        self._empty: torch.Tensor | None = None

    def encode_prompt(self, prompts: list[str] | str) -> Conditioning:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return Conditioning(text=self.text(prompts))

    def uncond(self, cond: Conditioning) -> Conditioning:
        """The empty prompt's embedding (what SD was trained to use for the unconditional branch)."""
        if self._empty is None:
            self._empty = self.text([""])
        neg = self._empty.expand(cond.text.shape[0], -1, -1) if cond.text is not None else None
        return Conditioning(text=neg, cameras=cond.cameras, elevations=cond.elevations, azimuths=cond.azimuths)

    def unet_kwargs(self, cond: Conditioning, views: int, frames: int) -> dict:
        """Extra UNet inputs for B*V*F flattened images (the camera class label when the UNet takes one)."""
        if self.unet.class_embedding is None:
            return {}
        if cond.cameras is None:
            raise ValueError(f"{self.name} needs cameras [B, V, 16] in its conditioning")
        cams = cond.cameras.reshape(cond.cameras.shape[0], views, 1, 16).expand(-1, -1, frames, -1)
        return {"class_labels": cams.reshape(-1, 16)}

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b, v, f = x_t.shape[:3]
        text = cond.text.repeat_interleave(v * f, 0)
        t = self.schedule.model_timestep(level).to(x_t.device).repeat_interleave(v * f)
        out = self.unet(x_t.flatten(0, 2), t, encoder_hidden_states=text,
                        **self.unet_kwargs(cond, v, f)).sample
        return out.reshape(x_t.shape)

    def encode_images(self, images: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        return vae_encode(self.vae, images, chunk, checkpoint=self.encode_checkpointing)

    def decode_latents(self, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        return vae_decode(self.vae, latents, chunk)


def load_text_encoder(folder: Path, device, dtype) -> TextEncoder:
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    model = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True, dtype=dtype)
    return TextEncoder(tokenizer, model.to(device).eval().requires_grad_(False))


def load_vae(folder: Path, device, dtype, cls_name: str = "AutoencoderKL"):
    import diffusers

    vae = getattr(diffusers, cls_name).from_pretrained(folder / "vae", local_files_only=True, torch_dtype=dtype)
    return vae.to(device).eval().requires_grad_(False)


def load_sd(folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
            text_device: str | torch.device | None = None, gradient_checkpointing: bool = False,
            unet_cls: str = "UNet2DConditionModel") -> StableDiffusion:
    """Load an SD-2-style diffusers folder; the text encoder may sit on ``text_device`` (e.g. "cpu")."""
    import diffusers

    folder = Path(folder)
    unet = getattr(diffusers, unet_cls).from_pretrained(folder / "unet", local_files_only=True, torch_dtype=dtype)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet = unet.to(device).eval().requires_grad_(False)
    text = load_text_encoder(folder, text_device or device, dtype)
    return StableDiffusion(unet, load_vae(folder, device, dtype), text, read_scheduler(folder))
