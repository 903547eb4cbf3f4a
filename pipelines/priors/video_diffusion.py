"""Stable Video Diffusion (image -> video) and SV3D_p (image -> orbit) as Denoisers.

Both are EDM v-prediction models on the UNetSpatioTemporalConditionModel: the UNet sees
``x_t = x_edm / sqrt(1 + sigma^2)`` (the VP frame of :mod:`pipelines.priors.schedules`) concatenated on the
channel axis with the conditioning image's unscaled VAE latent, timestep ``log(sigma) / 4``, the image's
CLIP embedding as the only cross-attention token, and added "time ids". For SVD those are
(fps - 1, motion bucket, noise augmentation) per clip; for SV3D_p they are (noise augmentation,
polar angle, azimuth) per frame, embedded with 256/512/512 sinusoidal channels (sgm's sv3d_p config).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from pipelines.priors.denoiser import Conditioning, Denoiser, vae_decode, vae_encode
from pipelines.priors.registry import ModelNotFound, installed_path
from pipelines.priors.schedules import EDMSchedule


class StableVideoDiffusion(Denoiser):
    """Latents [B, V, F, 4, h, w]: each of the B*V items is one F-frame clip.

    ``cond`` from :meth:`encode_image_condition`: image_embeds [B, 1, D], image_latents [B, 4, h, w].
    """

    name = "svd-xt"
    parameterization = "v_prediction"

    def __init__(self, unet, vae, image_encoder, clip_mean, clip_std, clip_size: int, scheduler_config: dict):
        super().__init__()
        self.unet, self.vae, self.image_encoder = unet, vae, image_encoder
        self.register_buffer("clip_mean", torch.tensor(clip_mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(clip_std).reshape(1, 3, 1, 1), persistent=False)
        self.clip_size = clip_size
        self.schedule = EDMSchedule(float(scheduler_config.get("sigma_min", 0.002)),
                                    float(scheduler_config.get("sigma_max", 700.0)))
        self.parameterization = scheduler_config.get("prediction_type", "v_prediction")
        self.latent_channels = unet.config.out_channels
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode_image_condition(self, image: torch.Tensor, fps: float = 7.0, motion_bucket_id: float = 127.0,
                               noise_aug: float = 0.02, generator: torch.Generator | None = None) -> Conditioning:
        """The conditioning of images [B, 3, H, W] in [0, 1] at the generation resolution."""
        x = image.to(self.device, self.dtype) * 2 - 1
        # CLIP sees a 224 px antialiased resize, normalised with its own statistics.
        small = F.interpolate(x.float(), (self.clip_size, self.clip_size), mode="bicubic", antialias=True,
                              align_corners=False)
        small = (((small + 1) / 2).clamp(0, 1) - self.clip_mean) / self.clip_std
        embeds = self.image_encoder(small.to(self.dtype)).image_embeds[:, None]
        noisy = x + noise_aug * torch.randn(x.shape, generator=generator).to(x)
        latents = vae_encode(self.vae, (noisy + 1) / 2, scale=False)
        return Conditioning(image_embeds=embeds, image_latents=latents, fps=fps, motion_bucket_id=motion_bucket_id,
                            noise_aug=noise_aug)

    def added_time_ids(self, cond: Conditioning, batch: int, frames: int) -> torch.Tensor:
        """[batch, 3]: (fps - 1, motion bucket id, noise augmentation), as the SVD pipeline passes them."""
        ids = torch.tensor([cond.fps - 1, cond.motion_bucket_id, cond.noise_aug], device=self.device)
        return ids.to(self.dtype).expand(batch, -1)

    def _run(self, x_t: torch.Tensor, level: torch.Tensor, cond: Conditioning, repeat: int,
             added: torch.Tensor) -> torch.Tensor:
        """x_t [N, T, C, h, w] clips; cond items repeated ``repeat`` times to reach N."""
        frames = x_t.shape[1]
        image = cond.image_latents.repeat_interleave(repeat, 0)[:, None].expand(-1, frames, -1, -1, -1)
        t = self.schedule.model_timestep(level).to(x_t.device).repeat_interleave(repeat)
        return self.unet(torch.cat([x_t, image.to(x_t)], dim=2), t,
                         encoder_hidden_states=cond.image_embeds.repeat_interleave(repeat, 0),
                         added_time_ids=added).sample

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b, v, f = x_t.shape[:3]
        out = self._run(x_t.flatten(0, 1), level, cond, v, self.added_time_ids(cond, b * v, f))
        return out.reshape(x_t.shape)

    def encode_images(self, images: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        return vae_encode(self.vae, images, chunk, checkpoint=self.encode_checkpointing)

    def decode_latents(self, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """Latents [N, 4, h, w] of consecutive frames -> images; a temporal decoder mixes the frames of a chunk,
        an image VAE (SV3D's own) decodes each alone."""
        temporal = "num_frames" in inspect.signature(self.vae.decode).parameters
        return vae_decode(self.vae, latents, chunk, **({"num_frames": "chunk"} if temporal else {}))


def sv3d_unet_class():
    """SV3D_p's UNet: the SVD UNet with a per-frame camera vector in place of the per-clip time ids."""
    from diffusers import UNetSpatioTemporalConditionModel
    from diffusers.models.embeddings import get_timestep_embedding

    class SV3DUNet(UNetSpatioTemporalConditionModel):
        def camera_embedding(self, added_time_ids: torch.Tensor) -> torch.Tensor:
            """added_time_ids [B, F, 3] (noise aug, polar, azimuth in radians) -> [B*F, time embedding dim]."""
            d = self.config.addition_time_embed_dim
            ids = added_time_ids.flatten(0, 1).float()
            parts = [get_timestep_embedding(ids[:, i], width, flip_sin_to_cos=True, downscale_freq_shift=0)
                     for i, width in enumerate((d, 2 * d, 2 * d))]
            return self.add_embedding(torch.cat(parts, -1).to(self.add_embedding.linear_1.weight.dtype))

        def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True):
            """sample [B, F, C, h, w]; timestep [B]; encoder_hidden_states [B, 1, D]; added_time_ids [B, F, 3]."""
            from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

            batch, frames = sample.shape[:2]
            t_emb = self.time_proj(timestep.reshape(-1).expand(batch)).to(sample.dtype)
            emb = self.time_embedding(t_emb).repeat_interleave(frames, 0) + self.camera_embedding(added_time_ids)
            hidden = encoder_hidden_states.repeat_interleave(frames, 0)
            x = self.conv_in(sample.flatten(0, 1))
            only_images = torch.zeros(batch, frames, dtype=x.dtype, device=x.device)
            skips = (x,)
            for block in self.down_blocks:
                extra = {"encoder_hidden_states": hidden} if getattr(block, "has_cross_attention", False) else {}
                x, res = block(hidden_states=x, temb=emb, image_only_indicator=only_images, **extra)
                skips += res
            x = self.mid_block(hidden_states=x, temb=emb, encoder_hidden_states=hidden,
                               image_only_indicator=only_images)
            for i, block in enumerate(self.up_blocks):
                res, skips = skips[-len(block.resnets):], skips[:-len(block.resnets)]
                size = skips[-1].shape[2:] if i < len(self.up_blocks) - 1 and skips else None
                extra = {"encoder_hidden_states": hidden} if getattr(block, "has_cross_attention", False) else {}
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=size,
                          image_only_indicator=only_images, **extra)
            x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
            x = x.reshape(batch, frames, *x.shape[1:])
            return UNetSpatioTemporalConditionOutput(sample=x) if return_dict else (x,)

    return SV3DUNet


class SV3D(StableVideoDiffusion):
    """Latents [B, V, F, 4, h, w]: for each of the B*F items the V views form one orbit (SV3D's frame axis).

    ``cond.elevations`` / ``cond.azimuths`` [B, V] in radians (elevation above the horizon; SV3D is fed the
    polar angle pi/2 - elevation); ``cond.noise_aug`` is SV3D's ``cond_aug`` (1e-5 in its sampler). As in
    SV3D's sampler, azimuths are measured from the input view, which is the orbit's last view (azimuth 0).
    """

    name = "sv3d-p"

    def added_time_ids(self, cond: Conditioning, batch: int, frames: int) -> torch.Tensor:
        if cond.elevations is None or cond.azimuths is None:
            raise ValueError("SV3D needs per-view elevations and azimuths [B, V] in its conditioning")
        polar = torch.pi / 2 - cond.elevations
        aug = torch.full_like(polar, cond.noise_aug)
        return torch.stack([aug, polar, cond.azimuths % (2 * torch.pi)], -1).to(self.device, self.dtype)

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b, v, f = x_t.shape[:3]
        orbits = x_t.transpose(1, 2).flatten(0, 1)  # [B*F, V, C, h, w]
        added = self.added_time_ids(cond, b, v).repeat_interleave(f, 0)
        out = self._run(orbits, level, cond, f, added)
        return out.reshape(b, f, v, *x_t.shape[3:]).transpose(1, 2)


def _image_encoder(folder: Path, device, dtype):
    """CLIP image encoder of ``folder/image_encoder`` with its preprocessing: (encoder, mean, std, size)."""
    from transformers import CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder", local_files_only=True,
                                                            dtype=dtype).to(device).eval().requires_grad_(False)
    pre = json.loads((folder / "feature_extractor" / "preprocessor_config.json").read_text())
    crop = pre.get("crop_size", 224)
    size = crop["height"] if isinstance(crop, dict) else int(crop)
    return encoder, pre["image_mean"], pre["image_std"], size


def _vae(folder: Path, device, dtype):
    """``folder/vae``: SVD's temporal-decoder VAE, or the image VAE converted from SV3D's checkpoint."""
    from pipelines.priors.stable_diffusion import load_vae

    config = json.loads((folder / "vae" / "config.json").read_text())
    return load_vae(folder, device, dtype, config.get("_class_name", "AutoencoderKLTemporalDecoder"))


def _image_parts(folder: Path, device, dtype):
    return (_vae(folder, device, dtype), *_image_encoder(folder, device, dtype))


def _scheduler(folder: Path) -> dict:
    path = folder / "scheduler" / "scheduler_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def load_svd(folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             gradient_checkpointing: bool = False, **_) -> StableVideoDiffusion:
    from diffusers import UNetSpatioTemporalConditionModel

    folder = Path(folder)
    unet = UNetSpatioTemporalConditionModel.from_pretrained(folder / "unet", local_files_only=True,
                                                            torch_dtype=dtype)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    vae, encoder, mean, std, size = _image_parts(folder, device, dtype)
    return StableVideoDiffusion(unet.to(device).eval().requires_grad_(False), vae, encoder, mean, std, size,
                                _scheduler(folder))


def sv3d_model_root(folder: Path) -> Path:
    """The folder holding SV3D_p's diffusers ``unet/`` (and ``vae/``), converting ``sv3d_p.safetensors`` once.

    A folder with its own ``unet/config.json`` (diffusers layout) is used as it is. Otherwise the original
    checkpoint is converted (:mod:`pipelines.priors.sgm_convert`) into ``folder/unet`` and ``folder/vae``, or,
    when the folder is not ours to write (the Hugging Face cache), into ``<data dir>/converted/sv3d-p``;
    the conversion is redone when the checkpoint's size or modification time changes.
    """
    from pipelines.paths import data_dir, hf_cache_dir
    from pipelines.priors.sgm_convert import CHECKPOINT_NAME, SOURCE_RECORD, is_current, write_converted

    folder = Path(folder)
    checkpoint = folder / CHECKPOINT_NAME
    unet = folder / "unet"
    if (unet / "config.json").is_file() and not ((unet / SOURCE_RECORD).is_file() and checkpoint.is_file()):
        return folder  # a diffusers-layout folder, or a conversion whose checkpoint was deleted to save space
    if not checkpoint.is_file():
        raise ModelNotFound(f"{folder} holds neither SV3D_p's checkpoint {CHECKPOINT_NAME} nor a diffusers-layout "
                            "unet/ folder; run `fourd models download sv3d-p` on a machine with network access.")
    ours = os.access(folder, os.W_OK) and not folder.resolve().is_relative_to(hf_cache_dir().resolve())
    root = folder if ours else data_dir() / "converted" / "sv3d-p"
    if not is_current(root / "unet", checkpoint):
        write_converted(checkpoint, root)
    return root


def load_sv3d(folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              gradient_checkpointing: bool = False, **_) -> SV3D:
    """SV3D_p from its folder: the original ``sv3d_p.safetensors`` (converted once, see :func:`sv3d_model_root`)
    or a diffusers-layout ``unet/``. The VAE is the checkpoint's own (SD's image VAE, decoding frame by frame)
    or a ``vae/`` in the folder, else svd-xt's; the CLIP image encoder is the folder's ``image_encoder/`` or
    svd-xt's (SV3D kept SVD's OpenCLIP ViT-H frozen, so they are the same weights).
    """
    folder = Path(folder)
    if folder.is_file():  # the checkpoint file itself was given
        folder = folder.parent
    root = sv3d_model_root(folder)
    unet = sv3d_unet_class().from_pretrained(root / "unet", local_files_only=True, torch_dtype=dtype)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()

    def home(part: str) -> Path:
        for place in (root, folder):
            if (place / part).is_dir():
                return place
        svd = installed_path("svd-xt")
        if svd is None:
            raise ModelNotFound(f"SV3D borrows its {part.replace('_', ' ')} from 'svd-xt', which is not installed; "
                                "run `fourd models download svd-xt` on a machine with network access.")
        return Path(svd)
    vae = _vae(home("vae"), device, dtype)
    encoder, mean, std, size = _image_encoder(home("image_encoder"), device, dtype)
    return SV3D(unet.to(device).eval().requires_grad_(False), vae, encoder, mean, std, size, _scheduler(folder))
