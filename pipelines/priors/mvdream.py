"""MVDream (Shi et al. 2023) on diffusers building blocks: SD 2.1's UNet with cross-view self-attention.

MVDream changes SD 2.1-base in two places: every transformer block's self-attention runs over the tokens
of all views of an object at once (``(b v) l c -> b (v l) c``), and the flattened 4x4 camera-to-world
matrix of each view goes through a two-layer MLP (``camera_embed``) whose output is added to the timestep
embedding. Here the UNet is diffusers' UNet2DConditionModel with ``class_embed_type="projection"`` (a
Linear-SiLU-Linear on a 16-vector: the same layers as ``camera_embed``) and :class:`MultiViewAttnProcessor`
on every ``attn1``. The published checkpoint (``sd-v2.1-base-4view.pt``, ldm key names) converts with
:func:`convert_original_unet`; its VAE and OpenCLIP text encoder are SD 2.1-base's, taken from ``sd21-base``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from pipelines.priors.denoiser import Conditioning
from pipelines.priors.registry import ModelNotFound, installed_path
from pipelines.priors.stable_diffusion import StableDiffusion, load_text_encoder, load_vae, read_scheduler

UNET_PREFIX = "model.diffusion_model."
CHECKPOINT_NAMES = ("sd-v2.1-base-4view.safetensors", "sd-v2.1-base-4view.pt")


class MultiViewAttnProcessor:
    """Self-attention across the ``views`` images of one object: hidden states [(B V), L, C]."""

    def __init__(self, views: int = 4):
        self.views = views

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
        n, length, channels = hidden_states.shape
        v = self.views
        x = hidden_states.reshape(n // v, v * length, channels)
        heads = attn.heads

        def split(t):
            return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(split(attn.to_q(x)), split(attn.to_k(x)), split(attn.to_v(x)))
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).reshape(n // v, v * length, -1)))
        return out.reshape(n, length, -1)


def mvdream_unet_config(sd_unet_config: dict) -> dict:
    """SD 2.1-base's UNet config plus MVDream's camera MLP as a 16 -> time-embedding projection."""
    config = {k: v for k, v in sd_unet_config.items() if not k.startswith("_")}
    return config | {"class_embed_type": "projection", "projection_class_embeddings_input_dim": 16}


def convert_original_unet(state_dict: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """MVDream's ldm-layout state dict (``model.diffusion_model.*``, ``camera_embed.*``) -> diffusers keys."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    renamed = {}
    for key, value in state_dict.items():
        if key.startswith(UNET_PREFIX + "camera_embed."):
            # camera_embed.{0,2} sit where diffusers' converter expects a projection class embedding.
            key = key.replace("camera_embed.", "label_emb.0.")
        renamed[key] = value
    converted = convert_ldm_unet_checkpoint(renamed, config)
    missing = [k for k, v in converted.items() if v is None]
    if missing:
        raise ValueError(f"the MVDream checkpoint lacks {len(missing)} UNet weights, e.g. {missing[0]}")
    return converted


def to_original_keys(state_dict: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """diffusers UNet keys -> MVDream's ldm key names (the inverse of :func:`convert_original_unet`)."""
    per = config["layers_per_block"] + 1
    resnet = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
              ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "class_embedding.linear_1": "camera_embed.0", "class_embedding.linear_2": "camera_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    up_has_attention = {int(k.split(".")[1]) for k in state_dict if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        head = next((h for h in fixed if key.startswith(h + ".")), None)
        if head is not None:
            new = fixed[head] + key[len(head):]
        elif parts[0] in ("down_blocks", "up_blocks", "mid_block"):
            if parts[0] == "mid_block":
                kind, j, tail = parts[1], int(parts[2]), parts[3:]
                where = f"middle_block.{2 * j if kind == 'resnets' else 1}"
            else:
                b, kind, j, tail = int(parts[1]), parts[2], int(parts[3]), parts[4:]
                if parts[0] == "down_blocks":
                    index = (b + 1) * per if kind == "downsamplers" else b * per + j + 1
                    slot = {"resnets": 0, "attentions": 1, "downsamplers": 0}[kind]
                    where = f"input_blocks.{index}.{slot}"
                    if kind == "downsamplers":
                        tail = ["op", *tail[1:]]
                else:
                    index = b * per + (per - 1 if kind == "upsamplers" else j)
                    slot = {"resnets": 0, "attentions": 1, "upsamplers": 2 if b in up_has_attention else 1}[kind]
                    where = f"output_blocks.{index}.{slot}"
            tail = ".".join(tail)
            if kind == "resnets":
                for new_name, old_name in resnet:
                    tail = tail.replace(new_name, old_name)
            new = f"{where}.{tail}"
        else:
            raise ValueError(f"unexpected UNet weight {key!r}")
        out[UNET_PREFIX + new] = value
    return out


class MVDream(StableDiffusion):
    """Latents [B, V, F, 4, h, w] (V = 4 in the published model); ``cond.cameras`` [B, V, 16].

    Cameras are MVDream's: camera-to-world in OpenGL axes, world +Z up, unit distance (see
    :func:`mvdream_cameras`).
    """

    name = "mvdream-sd21"
    views = 4

    def __init__(self, unet, vae, text, scheduler_config: dict):
        super().__init__(unet, vae, text, scheduler_config)
        self.processor = MultiViewAttnProcessor(self.views)
        unet.set_attn_processor({name: (self.processor if ".attn1." in name else proc)
                                 for name, proc in unet.attn_processors.items()})

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b, v, f = x_t.shape[:3]
        self.processor.views = v
        # Views of one frame must be adjacent for the cross-view attention: [B, F, V] order inside.
        x = x_t.transpose(1, 2)
        cams = cond.cameras.reshape(b, 1, v, 16).expand(-1, f, -1, -1).reshape(-1, 16)
        t = self.schedule.model_timestep(level).to(x_t.device).repeat_interleave(v * f)
        out = self.unet(x.flatten(0, 2), t, encoder_hidden_states=cond.text.repeat_interleave(v * f, 0),
                        class_labels=cams).sample
        return out.reshape(b, f, v, *x_t.shape[3:]).transpose(1, 2)


def mvdream_cameras(c2w: torch.Tensor) -> torch.Tensor:
    """Our cameras (OpenCV axes, +Z up world) [..., 4, 4] -> MVDream's flattened conditioning [..., 16].

    MVDream's cameras look down -z with +y up (OpenGL) in a +Z-up world, at unit distance from the origin.
    """
    gl = c2w.clone()
    gl[..., :3, 1:3] = -gl[..., :3, 1:3]
    gl[..., :3, 3] = F.normalize(gl[..., :3, 3], dim=-1)
    return gl.flatten(-2)


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return state.get("state_dict", state)


def load_mvdream(folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 text_device: str | torch.device | None = None, gradient_checkpointing: bool = False) -> MVDream:
    """MVDream from a folder with the original checkpoint; SD 2.1-base parts from it or from ``sd21-base``."""
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    checkpoint = folder if folder.is_file() else next((folder / n for n in CHECKPOINT_NAMES
                                                       if (folder / n).is_file()), None)
    if checkpoint is None:
        raise ModelNotFound(f"No MVDream checkpoint ({' or '.join(CHECKPOINT_NAMES)}) in {folder}; run "
                            "`fourd models download mvdream-sd21` on a machine with network access.")
    base = folder if (folder / "unet" / "config.json").is_file() else installed_path("sd21-base")
    if base is None:
        raise ModelNotFound("MVDream borrows its VAE and text encoder from 'sd21-base', which is not installed; "
                            "run `fourd models download sd21-base` on a machine with network access.")
    base = Path(base)
    config = mvdream_unet_config(json.loads((base / "unet" / "config.json").read_text()))
    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(convert_original_unet(_read_checkpoint(checkpoint), config))
    unet = unet.to(device) if dtype == torch.float32 else unet.to(device, dtype)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet = unet.eval().requires_grad_(False)
    text = load_text_encoder(base, text_device or device, dtype)
    return MVDream(unet, load_vae(base, device, dtype), text, read_scheduler(base))
