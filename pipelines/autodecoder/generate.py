"""Stage 2 and sampling: latents of the trained autodecoder, robust statistics, diffusion training, and
sampling new objects as :class:`renderers.voxels.VoxelScene` (Fig. 1, right).

    norm, z = training_latents(model)                          # normalised latents of every embedding
    edm = EDM(LatentUNet3d(DiffusionConfig(num_classes=7), *model.latent_shape()[:2]))
    train_diffusion(edm, z, labels=shape_labels)
    scenes = sample_scenes(model, edm, norm, labels=torch.tensor([2]), generator=g)
    save_bundle(path, model, norm, edm); model, norm, edm = load_bundle(path)

A bundle is one safetensors file (weights of both networks and the normaliser's statistics) whose metadata
holds both configs as JSON, written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from pipelines.autodecoder.diffusion import EDM, DiffusionConfig, LatentUNet3d
from pipelines.autodecoder.model import Autodecoder, AutodecoderConfig
from pipelines.autodecoder.normalize import RobustNormalizer

BUNDLE_FORMAT = "fourd-autodecoder-1"


@torch.no_grad()
def training_latents(model: Autodecoder, per_channel: bool = False,
                     before_relu: bool = False) -> tuple[RobustNormalizer, Tensor]:
    """G_1 latents of every training embedding at ``latent_level``, the normaliser fitted over all of them,
    and the normalised latents ``[N, C, R, R, R]``.

    ``before_relu`` takes the features before the level's final ReLU. After it, half of them are exactly 0:
    the median sits on that point mass, so Sec. 3.3's robust normalisation centres a one-sided distribution
    and the diffusion model must hit exact zeros; before it they are the signed, bell-shaped features of
    Fig. 9, and sampling errors where the ReLU will cut are harmless."""
    level = model.config.latent_level
    if before_relu and (level == 0 or model.levels[level - 1].attention is not None):
        raise ValueError(f"the autodecoder's latent level {level} does not end in a ReLU; set "
                         "latent_before_relu=false.")
    model.eval()
    device = next(model.parameters()).device
    ids = torch.arange(model.config.num_objects, device=device).split(16)
    latents = torch.cat([model.latent(i, before_relu=before_relu) for i in ids])
    norm = RobustNormalizer.fit(latents, per_channel=per_channel)
    return norm, norm.normalize(latents)


def train_diffusion(edm: EDM, latents: Tensor, labels: Tensor | None = None, tokens: Tensor | None = None, *,
                    attributes: Tensor | None = None, steps: int | None = None, seed: int = 0,
                    checkpoint_dir: str | Path | None = None, checkpoint_every: int = 200,
                    stop_after: int | None = None,
                    on_step: Callable[[int, dict[str, float]], None] | None = None) -> int:
    """Adam with linear learning-rate decay (App. C.2) on the EDM loss over normalised ``latents``; returns the
    step reached. With ``checkpoint_dir`` it resumes from the newest checkpoint there and writes one every
    ``checkpoint_every`` steps and at the end; step ``k`` draws from a generator seeded by ``(seed, k)``, so a
    resumed run takes the steps an uninterrupted one would. ``stop_after`` ends this sitting early."""
    from pipelines.checkpoints import latest_checkpoint, load_optimizer_state, optimizer_state, save_checkpoint

    cfg = edm.config
    steps = cfg.steps if steps is None else steps
    optimizer = torch.optim.Adam(edm.parameters(), lr=cfg.lr)
    start = 0
    if checkpoint_dir is not None and (ckpt := latest_checkpoint(checkpoint_dir)) is not None:
        edm.net.load_state_dict({k[len("net."):]: v for k, v in ckpt.state.items() if k.startswith("net.")})
        load_optimizer_state(optimizer, ckpt.state, ckpt.extra["optimizer"])
        start = ckpt.step
    end = steps if stop_after is None else min(steps, start + stop_after)

    def save(step: int) -> None:
        tensors, meta = optimizer_state(optimizer)
        save_checkpoint(checkpoint_dir, {f"net.{k}": v for k, v in edm.net.state_dict().items()} | tensors, step,
                        {"optimizer": meta})

    edm.train()
    for step in range(start, end):
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * (1 - step / max(steps, 1))
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(latents), (min(cfg.batch_size, len(latents)),), generator=g)
        loss = edm.loss(latents[idx], None if labels is None else labels[idx],
                        None if tokens is None else tokens[idx], generator=g,
                        attributes=None if attributes is None else attributes[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step + 1, {"loss": loss.item()})
        if checkpoint_dir is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == end):
            save(step + 1)
    edm.eval()
    return end


@torch.no_grad()
def sample_scenes(model: Autodecoder, edm: EDM, norm: RobustNormalizer, count: int = 1, *,
                  labels: Tensor | None = None, tokens: Tensor | None = None, attributes: Tensor | None = None,
                  guidance: float | None = None, steps: int | None = None,
                  generator: torch.Generator | None = None) -> list:
    """Sample normalised latents, de-normalise (F = F_hat s + m) and decode with G_2: ``count`` VoxelScenes
    (``count`` is taken from the conditions when given, e.g. ``**caption_conditions(prompts, edm.config)``)."""
    model.eval()
    for condition in (labels, tokens, attributes):
        if condition is not None:
            count = len(condition)
    z = edm.sample((count, *model.latent_shape()), labels, tokens, attributes=attributes, guidance=guidance,
                   steps=steps, generator=generator)
    latent = norm.denormalize(z)
    grids = model.decode_latent(latent.relu() if edm.config.latent_before_relu else latent)
    return [model.scene(g.detach()).detach() for g in grids]


@torch.no_grad()
def warm_start(edm: EDM, previous: EDM) -> list[str]:
    """Start ``edm`` from ``previous``'s weights (fine-tuning on the same latents); returns the names of the
    tensors that start fresh. A class-conditional ``previous`` over the world's shapes hands its class table
    (shapes in ``SHAPES`` order, then the "none" row) to the "shape" attribute table, which has the same
    layout; every other new table starts at zero, so the warm-started model begins as ``previous`` did."""
    from pipelines.world.grammar import SHAPES

    if (edm.net.latent_channels, edm.net.latent_resolution) != (previous.net.latent_channels,
                                                                  previous.net.latent_resolution):
        raise ValueError("the bundle to start from models latents of another shape; train from scratch.")
    old = previous.net.state_dict()
    attrs = edm.config.attributes
    if previous.config.num_classes == len(SHAPES) and "shape" in attrs and not edm.config.num_classes:
        old[f"attribute_emb.{attrs.index('shape')}.weight"] = old["class_emb.weight"]
    fresh = []
    for name, tensor in edm.net.state_dict().items():
        if name in old and old[name].shape == tensor.shape:
            tensor.copy_(old[name])
        else:
            fresh.append(name)
            if name.startswith("attribute_emb."):
                tensor.zero_()
    return fresh


def save_bundle(path: str | Path, model: Autodecoder, norm: RobustNormalizer, edm: EDM | None = None) -> Path:
    """Both networks, the normaliser and both configs in one safetensors file, written atomically."""
    from safetensors.torch import save

    from pipelines.atomic_files import write_atomic
    from pipelines.config import config_to_dict

    tensors = {f"autodecoder.{k}": v for k, v in model.state_dict().items()} | norm.state_dict()
    meta = {"format": BUNDLE_FORMAT, "autodecoder": json.dumps(config_to_dict(model.config))}
    if edm is not None:
        tensors |= {f"diffusion.{k}": v for k, v in edm.net.state_dict().items()}
        meta["diffusion"] = json.dumps(config_to_dict(edm.config))
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    return write_atomic(Path(path), save(tensors, metadata=meta))


def load_bundle(path: str | Path, device: str = "cpu") -> tuple[Autodecoder, RobustNormalizer, EDM | None]:
    from safetensors import SafetensorError, safe_open

    from pipelines.config import config_from_dict

    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(f"autodecoder bundle '{path}' cannot be read ({err}).") from None
    if meta.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"'{path}' is not an autodecoder bundle.")
    model = Autodecoder(config_from_dict(AutodecoderConfig, json.loads(meta["autodecoder"]))).to(device)
    model.load_state_dict({k[len("autodecoder."):]: v for k, v in state.items() if k.startswith("autodecoder.")})
    model.eval()
    norm = RobustNormalizer.from_state_dict(state)
    edm = None
    if "diffusion" in meta:
        c, r = model.latent_shape()[:2]
        net = LatentUNet3d(config_from_dict(DiffusionConfig, json.loads(meta["diffusion"])), c, r).to(device)
        net.load_state_dict({k[len("diffusion."):]: v for k, v in state.items() if k.startswith("diffusion.")})
        edm = EDM(net).eval()
    return model, norm, edm
