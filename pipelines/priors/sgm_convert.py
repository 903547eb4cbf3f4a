"""SV3D_p's original checkpoint (Stability's generative-models, "sgm" layout) -> diffusers UNet and VAE folders.

Stability publishes SV3D only as ``sv3d_p.safetensors``: one state dict of the whole sgm ``DiffusionEngine``.
Its UNet (``model.diffusion_model.*``) is sgm's ``VideoUNet``, the network diffusers ports as
``UNetSpatioTemporalConditionModel``. The VAE is split in two: the conditioning image is encoded by an
``AutoencoderKLModeOnly`` (``conditioner.embedders.1.encoder.{encoder,quant_conv}``) and latents are decoded
by the ``first_stage_model`` ``AutoencodingEngine`` whose encoder is Identity (``first_stage_model.decoder``,
no post-quant conv) -- SD's image VAE with a per-frame decoder, not SVD's temporal decoder. Both halves are
standard ldm VAE layout and become one diffusers ``AutoencoderKL`` (``use_post_quant_conv=False``). The frozen
OpenCLIP ViT-H image encoder (``conditioner.embedders.0.open_clip``) is not converted: it is the same frozen
model as SVD-XT's ``image_encoder``, which the adapter borrows.

How sgm names the UNet (``sgm/modules/diffusionmodules/video_model.py``, ``openaimodel.py``,
``video_attention.py``) and where diffusers keeps the same weight:

- ``input_blocks.0.0`` conv -> ``conv_in``; ``time_embed.{0,2}`` -> ``time_embedding.linear_{1,2}``;
  ``out.{0,2}`` -> ``conv_norm_out`` / ``conv_out``.
- ``label_emb.0.{0,2}`` (``num_classes: sequential``: Linear-SiLU-Linear on the ``adm_in_channels`` = 1280
  vector) -> ``add_embedding.linear_{1,2}``. For SV3D_p that vector is the per-frame camera: sinusoidal
  embeddings of cond_aug (256), polar angle (512) and azimuth (512) concatenated in that order
  (``configs/inference/sv3d_p.yaml``), so ``addition_time_embed_dim`` is 1280 / 5 = 256.
- ``input_blocks`` are numbered through the levels: level ``b``'s ``j``-th resnet is
  ``input_blocks.{1 + b(n+1) + j}.0`` (its spatial transformer ``.1`` where the level has attention) and its
  downsampler ``input_blocks.{(b+1)(n+1)}.0.op``, with ``n`` = ``num_res_blocks``. ``output_blocks`` run the
  levels in reverse with ``n + 1`` resnets each; the upsampler ``.conv`` follows the resnet (and the
  transformer) of the level's last block. ``middle_block.{0,1,2}`` = resnet, transformer, resnet.
- A ``VideoResBlock`` is an image ResBlock (``in_layers.{0,2}``, ``emb_layers.1``, ``out_layers.{0,3}``,
  ``skip_connection``) plus ``time_stack`` (the same ResBlock with 3x1x1 convolutions) and
  ``time_mixer.mix_factor``: diffusers' ``spatial_res_block.{norm1,conv1,time_emb_proj,norm2,conv2,
  conv_shortcut}``, ``temporal_res_block.*`` and ``time_mixer.mix_factor``.
- A ``SpatialVideoTransformer`` keeps diffusers' names for ``norm``, ``proj_in``, ``proj_out``,
  ``transformer_blocks.*`` and ``time_mixer``; its ``time_stack.k`` is ``temporal_transformer_blocks.k`` and
  ``time_pos_embed.{0,2}`` is ``time_pos_embed.linear_{1,2}``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from pipelines.priors.registry import ModelNotFound

UNET_PREFIX = "model.diffusion_model."
VAE_ENCODER_PREFIX = "conditioner.embedders.1.encoder."  # AutoencoderKLModeOnly of the conditioning frame
VAE_DECODER_PREFIX = "first_stage_model."  # AutoencodingEngine: decoder.* only
SCALE_FACTOR = 0.18215  # sv3d_p.yaml scale_factor
CHECKPOINT_NAME = "sv3d_p.safetensors"
SOURCE_RECORD = "converted_from.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

log = logging.getLogger(__name__)

_PLAIN = {"input_blocks.0.0": "conv_in", "time_embed.0": "time_embedding.linear_1",
          "time_embed.2": "time_embedding.linear_2", "label_emb.0.0": "add_embedding.linear_1",
          "label_emb.0.2": "add_embedding.linear_2", "out.0": "conv_norm_out", "out.2": "conv_out"}
_RESBLOCK = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
             "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


class BadCheckpoint(ModelNotFound):
    """A checkpoint file is there but is not the model it is named for (missing, unexpected or misshapen keys)."""


def _resnet_tail(tail: str) -> str | None:
    """``in_layers.2`` / ``time_stack.out_layers.3`` / ``time_mixer`` -> diffusers' names inside a resnet."""
    if tail == "time_mixer":
        return tail
    if tail.startswith("time_stack."):
        inner = _RESBLOCK.get(tail[len("time_stack."):])
        return None if inner is None else f"temporal_res_block.{inner}"
    inner = _RESBLOCK.get(tail)
    return None if inner is None else f"spatial_res_block.{inner}"


def _attention_tail(tail: str) -> str:
    if tail.startswith("time_stack."):
        return "temporal_transformer_blocks." + tail[len("time_stack."):]
    return {"time_pos_embed.0": "time_pos_embed.linear_1", "time_pos_embed.2": "time_pos_embed.linear_2"}.get(tail,
                                                                                                            tail)


def block_map(config: dict) -> dict[str, tuple[str, str]]:
    """sgm module path -> (diffusers module path, kind) for every block of a UNet with this diffusers config.

    kind is "resnet", "attention", "down" or "up" and says how the names inside the module change.
    """
    levels = len(config["block_out_channels"])
    n = config["layers_per_block"]
    attention = [kind.startswith("CrossAttn") for kind in config["down_block_types"]]
    out: dict[str, tuple[str, str]] = {}
    for b in range(levels):
        for j in range(n):
            i = 1 + b * (n + 1) + j
            out[f"input_blocks.{i}.0"] = (f"down_blocks.{b}.resnets.{j}", "resnet")
            if attention[b]:
                out[f"input_blocks.{i}.1"] = (f"down_blocks.{b}.attentions.{j}", "attention")
        if b < levels - 1:
            out[f"input_blocks.{(b + 1) * (n + 1)}.0"] = (f"down_blocks.{b}.downsamplers.0", "down")
    out["middle_block.0"] = ("mid_block.resnets.0", "resnet")
    out["middle_block.1"] = ("mid_block.attentions.0", "attention")
    out["middle_block.2"] = ("mid_block.resnets.1", "resnet")
    for u in range(levels):
        has_attention = attention[levels - 1 - u]
        for i in range(n + 1):
            k = u * (n + 1) + i
            out[f"output_blocks.{k}.0"] = (f"up_blocks.{u}.resnets.{i}", "resnet")
            if has_attention:
                out[f"output_blocks.{k}.1"] = (f"up_blocks.{u}.attentions.{i}", "attention")
            if u < levels - 1 and i == n:
                out[f"output_blocks.{k}.{2 if has_attention else 1}"] = (f"up_blocks.{u}.upsamplers.0", "up")
    return out


def diffusers_name(key: str, blocks: dict[str, tuple[str, str]]) -> str | None:
    """One sgm UNet key (without ``model.diffusion_model.``) -> its diffusers key, or None if it has no place."""
    head, _, param = key.rpartition(".")
    if head in _PLAIN:
        return f"{_PLAIN[head]}.{param}"
    parts = head.split(".")
    depth = 2 if parts[0] == "middle_block" else 3
    module, tail = ".".join(parts[:depth]), ".".join(parts[depth:])
    if module not in blocks:
        return None
    target, kind = blocks[module]
    if kind == "resnet":
        tail = _resnet_tail(tail)
    elif kind == "attention":
        tail = _attention_tail(tail)
    elif kind in ("down", "up"):
        tail = "conv" if tail == ("op" if kind == "down" else "conv") else None
    return None if tail is None else f"{target}.{tail}.{param}"


def sv3d_unet_config(unet: dict[str, torch.Tensor], head_channels: int = 64, num_frames: int = 21,
                     sample_size: int = 72) -> dict:
    """The diffusers UNetSpatioTemporalConditionModel config of an sgm VideoUNet state dict (prefix removed).

    Widths, levels, blocks per level, where attention sits, transformer depth, context width and the camera
    vector width are read off the weights; ``head_channels`` (sgm's ``num_head_channels``, 64 in sv3d_p.yaml)
    leaves no trace in the shapes and is given. For the real checkpoint this is SVD-XT's UNet config with
    ``projection_class_embeddings_input_dim`` 1280 (SVD's is 768) and 21 frames.
    """
    try:
        conv_in, adm = unet["input_blocks.0.0.weight"], unet["label_emb.0.0.weight"]
        downs = sorted({int(k.split(".")[1]) for k in unet if k.startswith("input_blocks.") and ".0.op." in k})
        n = downs[0] - 1 if downs else max(int(k.split(".")[1]) for k in unet if k.startswith("input_blocks."))
        levels = len(downs) + 1
        widths = [int(unet[f"input_blocks.{1 + b * (n + 1)}.0.out_layers.3.weight"].shape[0]) for b in range(levels)]
        attention = [f"input_blocks.{1 + b * (n + 1)}.1.proj_in.weight" in unet for b in range(levels)]
        context = int(unet["middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1])
        out_channels = int(unet["out.2.weight"].shape[0])
    except (KeyError, ValueError) as err:
        raise BadCheckpoint(f"The checkpoint holds no sgm VideoUNet under {UNET_PREFIX!r} (looked for {err}).") from err

    def depth(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in unet if k.startswith(prefix)}) or 1
    depths = [depth(f"input_blocks.{1 + b * (n + 1)}.1.transformer_blocks.") for b in range(levels)]
    depths[-1] = depth("middle_block.1.transformer_blocks.")  # diffusers' mid block takes the last level's depth
    if adm.shape[1] % 5 or any(w % head_channels for w in widths):
        raise BadCheckpoint(f"The checkpoint's camera vector ({adm.shape[1]} wide) or widths {widths} do not fit "
                            f"SV3D_p's 256/512/512 camera embedding with {head_channels}-channel heads.")
    return {
        "sample_size": sample_size, "in_channels": int(conv_in.shape[1]), "out_channels": out_channels,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal"
                             for a in attention],
        "up_block_types": ["CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal"
                           for a in reversed(attention)],
        "block_out_channels": widths, "layers_per_block": n, "cross_attention_dim": context,
        "transformer_layers_per_block": depths[0] if len(set(depths)) == 1 else depths,
        "num_attention_heads": [w // head_channels for w in widths],
        "addition_time_embed_dim": int(adm.shape[1]) // 5,  # cond_aug d, polar 2d, azimuth 2d (sv3d_p.yaml)
        "projection_class_embeddings_input_dim": int(adm.shape[1]), "num_frames": num_frames,
    }


def _few(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def convert_sv3d_unet(state_dict: dict[str, torch.Tensor], head_channels: int = 64,
                      ) -> tuple[dict[str, torch.Tensor], dict]:
    """An sgm SV3D state dict (``model.diffusion_model.*`` keys; other parts ignored) -> (diffusers UNet state
    dict, its config). The result loads into :func:`pipelines.priors.video_diffusion.sv3d_unet_class` with
    ``strict=True``: every UNet weight is placed once and shapes are checked against the diffusers model
    (built on the meta device, so no memory is spent). Raises :class:`BadCheckpoint` naming a few offenders.
    """
    from pipelines.priors.video_diffusion import sv3d_unet_class

    unet = {k[len(UNET_PREFIX):]: v for k, v in state_dict.items() if k.startswith(UNET_PREFIX)}
    config = sv3d_unet_config(unet, head_channels)
    blocks = block_map(config)
    converted, unplaced = {}, []
    for key, value in unet.items():
        name = diffusers_name(key, blocks)
        if name is None or name in converted:
            unplaced.append(UNET_PREFIX + key)
        else:
            converted[name] = value
    with torch.device("meta"):
        expected = {k: v.shape for k, v in sv3d_unet_class().from_config(config).state_dict().items()}
    _check(converted, expected, unplaced, "UNet")
    return converted, config


def _source_record(checkpoint: Path) -> dict:
    stat = checkpoint.stat()
    return {"checkpoint": checkpoint.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def is_current(model_dir: Path, checkpoint: Path) -> bool:
    """Whether ``model_dir`` holds a conversion of this very ``checkpoint`` (same name, size and mtime)."""
    record = model_dir / SOURCE_RECORD
    return (model_dir / WEIGHTS_NAME).is_file() and record.is_file() and \
        json.loads(record.read_text()) == _source_record(checkpoint)


def ldm_vae_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The SV3D checkpoint's two VAE halves as one ldm-layout VAE state dict (encoder.*, quant_conv.*, decoder.*);
    empty when the checkpoint carries no VAE (e.g. a UNet-only file)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(VAE_ENCODER_PREFIX + "encoder.") or key.startswith(VAE_ENCODER_PREFIX + "quant_conv."):
            out[key[len(VAE_ENCODER_PREFIX):]] = value
        elif key.startswith(VAE_DECODER_PREFIX + "decoder."):
            out[key[len(VAE_DECODER_PREFIX):]] = value
    return out


def sv3d_vae_config(ldm: dict[str, torch.Tensor], sample_size: int = 576) -> dict:
    """diffusers AutoencoderKL config of an ldm-layout VAE state dict (sv3d_p.yaml: ch 128, ch_mult 1,2,4,4,
    2 res blocks, z 4, no attention outside the mid block), without the post-quant conv SV3D's decoder lacks."""
    try:
        levels = 1 + max(int(k.split(".")[2]) for k in ldm if k.startswith("encoder.down."))
        widths = [int(ldm[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(levels)]
        blocks = len({k.split(".")[4] for k in ldm if k.startswith("encoder.down.0.block.")})
        latent = int(ldm["decoder.conv_in.weight"].shape[1])
        in_channels = int(ldm["encoder.conv_in.weight"].shape[1])
        out_channels = int(ldm["decoder.conv_out.weight"].shape[0])
    except (KeyError, ValueError) as err:
        raise BadCheckpoint(f"The checkpoint's VAE is incomplete (looked for {err}).") from err
    return {"in_channels": in_channels, "out_channels": out_channels, "latent_channels": latent,
            "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
            "block_out_channels": widths, "layers_per_block": blocks, "norm_num_groups": 32,
            "sample_size": sample_size, "scaling_factor": SCALE_FACTOR, "use_quant_conv": True,
            "use_post_quant_conv": False}


def convert_sv3d_vae(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The SV3D checkpoint's VAE -> (diffusers AutoencoderKL state dict, config), or None if it lacks a half.

    The ldm -> diffusers renaming (``down.i.block.j`` -> ``down_blocks.i.resnets.j``, reversed ``up`` indices,
    1x1-conv attention -> linear) is diffusers' own ``convert_ldm_vae_checkpoint``; the result is checked key by
    key and shape by shape against the model as for the UNet.
    """
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    ldm = ldm_vae_state(state_dict)
    halves = {k.split(".")[0] for k in ldm}
    if not {"encoder", "decoder"} <= halves:
        if ldm:  # a pruned file: better svd-xt's VAE than half of this one
            log.warning("The SV3D checkpoint holds only the VAE's %s; using svd-xt's VAE instead", ", ".join(halves))
        return None
    config = sv3d_vae_config(ldm)
    converted = {k: v for k, v in convert_ldm_vae_checkpoint(ldm, config).items() if v is not None}
    with torch.device("meta"):
        expected = {k: v.shape for k, v in AutoencoderKL.from_config(config).state_dict().items()}
    _check(converted, expected, [], "VAE")
    return converted, config


def _check(converted: dict, expected: dict, unplaced: list, what: str) -> None:
    missing = expected.keys() - converted.keys()
    unplaced = unplaced + [k for k in converted if k not in expected]
    misshapen = [f"{k} {tuple(converted[k].shape)} vs {tuple(s)}" for k, s in expected.items()
                 if k in converted and converted[k].shape != s]
    if missing or unplaced or misshapen:
        problems = [f"{kind} {_few(keys)}" for kind, keys in (("it lacks the diffusers weights", missing),
                    ("it has weights with no place in the model:", unplaced), ("shapes differ for", misshapen))
                    if keys]
        raise BadCheckpoint(f"The checkpoint is not an SV3D_p {what} of the expected architecture: "
                            f"{'; '.join(problems)}.")


def _write_model(model_cls, config: dict, state: dict[str, torch.Tensor], checkpoint: Path, out_dir: Path) -> Path:
    """config.json + weights + the source record into ``out_dir``, written under a temporary name and renamed,
    so an interrupted conversion leaves nothing that looks finished."""
    from safetensors.torch import save_file

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with torch.device("meta"):
        model_cls.from_config(config).save_config(tmp)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    (tmp / SOURCE_RECORD).write_text(json.dumps(_source_record(checkpoint)))
    if out_dir.exists():  # a stale conversion (or one finished meanwhile by another process)
        shutil.rmtree(out_dir, ignore_errors=True)
    try:
        tmp.rename(out_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_current(out_dir, checkpoint):
            raise
    return out_dir


def write_converted(checkpoint: Path, root: Path, head_channels: int = 64) -> Path:
    """Convert ``checkpoint`` (sv3d_p.safetensors) into diffusers folders ``root/unet`` and, when the checkpoint
    carries its VAE, ``root/vae``. Reads only those tensors, in the checkpoint's dtype. Returns ``root``."""
    from diffusers import AutoencoderKL
    from safetensors import safe_open

    from pipelines.priors.video_diffusion import sv3d_unet_class

    checkpoint, root = Path(checkpoint), Path(root)
    log.info("Converting %s to diffusers folders in %s (once; the real checkpoint takes a minute or two)",
             checkpoint, root)
    wanted = (UNET_PREFIX, VAE_ENCODER_PREFIX + "encoder.", VAE_ENCODER_PREFIX + "quant_conv.",
              VAE_DECODER_PREFIX + "decoder.")
    try:
        with safe_open(str(checkpoint), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys() if k.startswith(wanted)}  # noqa: SIM118 (not iterable)
    except Exception as err:  # safetensors raises its own error types for truncated or foreign files
        raise BadCheckpoint(f"{checkpoint} cannot be read as a safetensors file ({err}); download it again with "
                            "`fourd models download sv3d-p`.") from err
    unet, unet_config = convert_sv3d_unet(state, head_channels)
    vae = convert_sv3d_vae(state)
    del state
    if vae is not None:
        _write_model(AutoencoderKL, vae[1], vae[0], checkpoint, root / "vae")
    elif (root / "vae" / SOURCE_RECORD).is_file():  # converted from an earlier checkpoint that had a VAE
        shutil.rmtree(root / "vae")
    # The UNet goes last: a current unet/ tells a later load that the whole conversion finished.
    _write_model(sv3d_unet_class(), unet_config, unet, checkpoint, root / "unet")
    log.info("Converted SV3D_p written to %s", root)
    return root
