"""Tiny random-weight models with the real architectures, written to folders the way the real ones ship.

Used by the tests and the CPU benchmark (diffusers' own testing style: a UNet of a few 8-32 channel blocks
built from a config and saved with ``save_pretrained``). ``scale`` multiplies the channel widths.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SD_SCHEDULER = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
                "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def _bytes_to_unicode() -> list[str]:
    # GPT-2 / CLIP byte-level BPE alphabet: printable bytes map to themselves, the rest above 255.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_clip_tokenizer(folder: Path, max_length: int = 16) -> None:
    """A byte-level CLIP tokenizer (no merges) with the special tokens SD uses."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": 256 + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": 512, "<|endoftext|>": 513}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(folder)


def _clip_text(width: int, seq: int = 16):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=520, hidden_size=width, intermediate_size=2 * width,
                                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=seq,
                                        projection_dim=width, bos_token_id=512, eos_token_id=513, pad_token_id=513))


def _vae(channels: tuple[int, ...]):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=channels, in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * len(channels),
                         up_block_types=("UpDecoderBlock2D",) * len(channels), norm_num_groups=8)


def write_tiny_sd(folder: Path, prediction_type: str = "epsilon", scale: int = 1) -> Path:
    """A Stable-Diffusion-2-shaped pipeline folder (unet, vae, text_encoder, tokenizer, scheduler)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    c = 16 * scale
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(c, 2 * c), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=c, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8)
    unet.save_pretrained(folder / "unet")
    _vae((8 * scale, 8 * scale, 8 * scale, 8 * scale)).save_pretrained(folder / "vae")
    _clip_text(c).save_pretrained(folder / "text_encoder")
    write_tiny_clip_tokenizer(folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(SD_SCHEDULER | {"prediction_type": prediction_type}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def write_tiny_zeroscope(folder: Path, scale: int = 1) -> Path:
    """A Zeroscope-shaped text-to-video folder (UNet3DConditionModel + SD VAE and CLIP text encoder)."""
    from diffusers import UNet3DConditionModel

    torch.manual_seed(0)
    c = 16 * scale
    unet = UNet3DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(c, 2 * c), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=c, attention_head_dim=4, norm_num_groups=8)
    unet.save_pretrained(folder / "unet")
    _vae((8 * scale,) * 4).save_pretrained(folder / "vae")
    _clip_text(c).save_pretrained(folder / "text_encoder")
    write_tiny_clip_tokenizer(folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(SD_SCHEDULER | {"prediction_type": "epsilon"}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "TextToVideoSDPipeline"}))
    return folder


def write_tiny_svd(folder: Path, scale: int = 1, sv3d: bool = False) -> Path:
    """An SVD-shaped image-to-video folder; ``sv3d`` gives SV3D_p's 1280-wide camera conditioning vector."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    c = 32 * scale  # the SVD blocks normalise with 32 groups
    unet = UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4, block_out_channels=(c, 2 * c), layers_per_block=1,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=c, num_attention_heads=(2, 4), addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=4 * 5 if sv3d else 4 * 3, num_frames=4)
    unet.save_pretrained(folder / "unet")
    AutoencoderKLTemporalDecoder(block_out_channels=(c, c), latent_channels=4,
                                 down_block_types=("DownEncoderBlock2D",) * 2).save_pretrained(folder / "vae")
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=c, intermediate_size=2 * c, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=c)).save_pretrained(folder / "image_encoder")
    (folder / "feature_extractor").mkdir(parents=True, exist_ok=True)
    (folder / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 32, "width": 32},
         "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "EulerDiscreteScheduler", "prediction_type": "v_prediction", "sigma_min": 0.002,
         "sigma_max": 700.0, "use_karras_sigmas": True}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableVideoDiffusionPipeline"}))
    return folder
