"""Training the field prior on the procedural world: mixed-role batches, resumable, with progress and ETA.

Every step draws a batch of 4-view view sets, each in a random role (4 orbit views at one time, 4 frames
of one camera, the same with view/frame 0 given clean, or a 2 x 2 block of views x frames), plus a batch of
single images, all cut from cached V x F matrices of world scenes (T1 Sec. 3.1, view-wise sampling: the
network sees a few views of a field at a time, never the whole field). Noise is shared across the views of
an item with probability ``shared_noise`` (T1 Eq. 1, cross-view noise consistency); prompts are dropped with
probability ``p_uncond`` for classifier-free guidance.

Randomness of step ``k`` comes from generators seeded by ``(seed, k)``, so a run resumed from a checkpoint
takes exactly the steps an uninterrupted one would. A checkpoint is ``ckpt-<step>.safetensors`` (model, EMA
and Adam moments) plus ``state.json`` naming it, both written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from pipelines.config import Config, ConfigError, config_from_dict, config_to_dict
from pipelines.events import EtaEstimator, Progress
from pipelines.models.field_dit import FieldDiT, FieldPriorArch, images_to_latents
from pipelines.models.text import PromptTokenizer
from pipelines.world import grammar

TRAIN_ROLES = ("multiview", "video", "image-to-video", "image-to-orbit", "block")


@dataclass(frozen=True)
class TrainPriorConfig(Config):
    """How to train a field prior. ``cpu`` is the bundled model's preset (about 3 h on 2 cores)."""

    schema_version: ClassVar[int] = 1
    presets: ClassVar[dict] = {
        "tiny": {"width": 32, "depth": 2, "heads": 2, "text_width": 32, "text_layers": 1, "train_size": 8,
                 "batch": 2, "image_batch": 2, "steps": 20, "resolution": 16, "warmup": 2},
        "cpu": {},
        "gpu": {"width": 256, "depth": 8, "heads": 8, "text_width": 256, "train_size": 20000, "batch": 64,
                "image_batch": 64, "steps": 40000, "lr": 2e-4, "checkpoint_minutes": 10.0},
    }

    # architecture (FieldPriorArch)
    resolution: int = 32
    downsample: int = 4
    width: int = 96
    depth: int = 4
    heads: int = 4
    text_width: int = 64
    text_layers: int = 1
    text_length: int = 16
    cross_attention: bool = True
    # Condition on the object's heading (FieldPriorArch.heading), given for the text roles' items and dropped
    # (unknown) with probability p_drop_heading; the image-conditioned roles never get it (the reference
    # image shows it, and a pipeline that has an image knows no heading).
    heading: bool = False
    p_drop_heading: float = 0.2
    # Condition on the background's grey level (FieldPriorArch.background): each item is composited over white
    # with probability p_white (its alpha from the world's renders), over black otherwise, and told which.
    background: bool = False
    p_white: float = 0.5
    # Self-conditioning (FieldPriorArch.self_condition): for a share p_self_condition of the items the network first
    # estimates x0 without an estimate (no gradient), then is trained with that estimate as an input.
    self_condition: bool = False
    p_self_condition: float = 0.5
    # data: the first ``train_size`` scenes of the world's train split, rendered as 4 x 4 matrices
    train_size: int = 1536
    held_out: int = 24          # shape/colour/motion combinations never trained on (for the evaluation)
    cache_dir: str = ""         # "" = <data>/world-cache
    # optimisation
    steps: int = 4000
    batch: int = 6              # 4-view items per step
    image_batch: int = 8        # single images per step
    lr: float = 1e-3
    warmup: int = 50
    ema: float = 0.999
    p_uncond: float = 0.1
    # Captions dropped for the image-conditioned roles: with the caption present the clean reference view
    # is redundant, and a model trained so ignores the image when a pipeline gives none (Diffusion²).
    p_uncond_image: float = 0.1
    p_drop_image: float = 0.1
    shared_noise: float = 0.5
    # Extra weight on the part of the error that differs between two frames of one view (a temporal-difference
    # loss): the plain MSE is dominated by appearance, which is the same in every frame, and a model trained on
    # it alone draws still clips. 0 = off (the first 14000 steps of the bundled model).
    motion_weight: float = 0.0
    # How often scenes of a motion are drawn, relative to the others: "orbit=3,walk=3" draws orbiting and walking
    # scenes three times as often. "" = every scene equally (the bundled runs). The bundled model's samples of
    # orbiting (random phase on a ring) and walking (random heading) prompts are mostly the wrong shape.
    motion_weights: str = ""
    seed: int = 0
    # An exported prior folder (model.safetensors + config.json, e.g. the bundled one) whose weights start a
    # new run instead of random ones: training continues a model whose run folder is gone. The optimiser
    # starts fresh (export keeps only the EMA weights); ignored when the run folder resumes.
    init_from: str = ""
    device: str = "cpu"
    threads: int = 0            # torch threads; 0 = leave torch's default
    checkpoint_minutes: float = 5.0
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for name in ("p_uncond", "p_uncond_image", "p_drop_image", "p_drop_heading", "shared_noise", "p_white",
                     "p_self_condition"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"config key '{name}' is a probability and must lie in [0, 1].")
        for name in ("steps", "batch", "image_batch", "train_size", "width", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config key '{name}' must be at least 1.")
        if not 0.0 <= self.ema < 1.0 or self.lr <= 0 or self.motion_weight < 0:
            raise ConfigError("config keys 'ema' (in [0, 1)), 'lr' (> 0) and 'motion_weight' (>= 0) are out of range.")

    def arch(self, vocab_size: int) -> FieldPriorArch:
        return FieldPriorArch(self.resolution, self.downsample, self.width, self.depth, self.heads, self.text_width,
                              self.text_layers, self.text_length, vocab_size, self.cross_attention,
                              heading=self.heading, background=self.background,
                              self_condition=self.self_condition)


def held_out_combinations(n: int, seed: int = 1234) -> list[tuple[str, str, str]]:
    """``n`` (shape, colour, motion) triples that training skips, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    combos = [(s, c, m) for s in grammar.SHAPES for c in grammar.COLOURS for m in grammar.motions_for(s)]
    picks = rng.choice(len(combos), size=min(n, len(combos)), replace=False)
    return [combos[i] for i in sorted(picks)]


@dataclass
class WorldTensors:
    """The training scenes in memory: rgb uint8 [S, V, F, H, W, 3] (premultiplied: over black), c2w
    [S, V, 4, 4], K [S, V, 3, 3], times [S, F], specs (for fresh caption phrasings every step) and, when
    loaded for a background-conditioned model, alpha uint8 [S, V, F, H, W, 1]."""

    rgb: torch.Tensor
    c2w: torch.Tensor
    K: torch.Tensor
    times: torch.Tensor
    specs: list
    alpha: torch.Tensor | None = None


def load_world(config: TrainPriorConfig, log: Callable[[str], None] = print) -> WorldTensors:
    """Render (once, cached) and load the training matrices, without the held-out combinations."""
    from pipelines.world.datasets import MatrixDataset

    kwargs = {"resolution": config.resolution, "views": 4, "frames": 4}
    if config.cache_dir:
        kwargs["cache_dir"] = config.cache_dir
    data = MatrixDataset("train", config.train_size, **kwargs)
    t0 = time.perf_counter()
    built = data.build(workers=max(1, min(2, os.cpu_count() or 1)))
    if built:
        log(f"rendered {built} world shards in {time.perf_counter() - t0:.0f} s")
    skip = set(held_out_combinations(config.held_out))
    rgb, c2w, K, times, specs, alpha = [], [], [], [], [], []
    for shard in range(data.num_shards):
        arrays = data._shard(shard)
        for row, seed in enumerate(arrays["seeds"]):
            spec = grammar.sample_spec(int(seed))
            if (spec.shape, spec.colour, spec.motion) in skip:
                continue
            rgb.append(arrays["rgb"][row])
            if config.background:
                alpha.append(arrays["alpha"][row])
            c2w.append(arrays["c2w"][row])
            K.append(arrays["K"][row])
            times.append(arrays["times"][row])
            specs.append(spec)
    return WorldTensors(torch.from_numpy(np.stack(rgb)), torch.from_numpy(np.stack(c2w)),
                        torch.from_numpy(np.stack(K)), torch.from_numpy(np.stack(times)), specs,
                        torch.from_numpy(np.stack(alpha)) if alpha else None)


def _latents(rgb_u8: torch.Tensor, downsample: int, alpha_u8: torch.Tensor | None = None,
             grey: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [..., H, W, 3] (over black) -> latents [..., C, h, w]; with ``alpha_u8`` [..., H, W, 1] and
    ``grey`` [B] (one level per leading item) composited over that grey instead."""
    rgb = rgb_u8.float().div(255)
    if grey is not None:
        level = grey.view(-1, *([1] * (rgb.dim() - 1)))
        rgb = rgb + level * (1 - alpha_u8.float().div(255))
    return images_to_latents(rgb.movedim(-1, -3), downsample)


def motion_weight_table(text: str) -> dict[str, float]:
    """``"orbit=3,walk=3"`` -> ``{"orbit": 3.0, "walk": 3.0}``; one clear sentence for anything else."""
    weights = {}
    for item in filter(str.strip, text.split(",")):
        name, _, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if name.strip() not in grammar.MOTIONS or not weight > 0:
            raise ConfigError(f"motion_weights takes MOTION=WEIGHT pairs with a positive weight and a motion from "
                              f"{', '.join(grammar.MOTIONS)}; got {item.strip()!r}.")
        weights[name.strip()] = weight
    return weights


def scene_probabilities(world: WorldTensors, config: TrainPriorConfig) -> np.ndarray | None:
    """Each training scene's chance to be drawn under ``config.motion_weights`` (None: uniform)."""
    weights = motion_weight_table(config.motion_weights)
    if not weights:
        return None
    p = np.array([weights.get(spec.motion, 1.0) for spec in world.specs], dtype=np.float64)
    return p / p.sum()


def make_batch(world: WorldTensors, config: TrainPriorConfig, tokenizer: PromptTokenizer, step: int,
               rank: int = 0) -> dict:
    """The mixed-role batch of step ``step`` for process ``rank`` (deterministic in (seed, step, rank)).

    Returns ``sets`` (4-view items) and ``images`` (single views), each a dict with x0 [B, N, C, h, w],
    c2w [B, N, 4, 4], K [B, N, 3, 3], times [B, N], clean [B, N], ids [B, L], roles, and with
    ``config.heading`` also heading [B] (radians, NaN = unknown), with ``config.background`` also background
    [B] (the grey level each item is composited over).
    """
    rng = np.random.default_rng([config.seed, step, 7] + ([rank] if rank else []))
    S = world.rgb.shape[0]
    chance = scene_probabilities(world, config)

    def scene() -> int:
        return int(rng.integers(S)) if chance is None else int(rng.choice(S, p=chance))

    def caption(i: int, role: str) -> str:
        if rng.random() < (config.p_uncond_image if role.startswith("image-to") else config.p_uncond):
            return ""
        spec = world.specs[i]
        return spec.caption() if rng.random() < 0.3 else spec.caption(rng)

    def pack(entries, roles):
        idx = torch.tensor([e[0] for e in entries])
        vv = torch.tensor([e[1] for e in entries])             # [B, N] view indices
        ff = torch.tensor([e[2] for e in entries])             # [B, N] frame indices
        rows = idx[:, None].expand_as(vv)
        grey = None
        if config.background:
            grey = torch.tensor([float(rng.random() < config.p_white) for _ in entries])
        x0 = _latents(world.rgb[rows, vv, ff], config.downsample,
                      None if grey is None else world.alpha[rows, vv, ff], grey)
        clean = torch.tensor([e[3] for e in entries], dtype=torch.bool)
        ids = tokenizer.encode([caption(e[0], role) for e, role in zip(entries, roles)])
        # consecutive entries that show one view at two times: where the temporal-difference loss looks
        motion_pairs = (vv[:, 1:] == vv[:, :-1]) & (ff[:, 1:] != ff[:, :-1]) & ~clean[:, 1:] & ~clean[:, :-1]
        part = {"x0": x0, "c2w": world.c2w[rows, vv], "K": world.K[rows, vv], "times": world.times[rows, ff],
                "clean": clean, "ids": ids, "roles": roles, "motion_pairs": motion_pairs}
        if config.heading:
            part["heading"] = torch.tensor([
                math.radians(world.specs[e[0]].yaw)
                if not role.startswith("image-to") and rng.random() >= config.p_drop_heading else math.nan
                for e, role in zip(entries, roles)])
        if grey is not None:
            part["background"] = grey
        return part

    sets, roles = [], []
    for _ in range(config.batch):
        i, role = scene(), TRAIN_ROLES[rng.integers(len(TRAIN_ROLES))]
        v, f = int(rng.integers(4)), int(rng.integers(4))
        keep = rng.random() >= config.p_drop_image
        if role in ("multiview", "image-to-orbit"):
            start = int(rng.integers(4))
            views, frames = [(start + k) % 4 for k in range(4)], [f] * 4
        elif role in ("video", "image-to-video"):
            views, frames = [v] * 4, [0, 1, 2, 3]
        else:  # a 2 x 2 block of views x frames
            a, b = rng.choice(4, 2, replace=False), rng.choice(4, 2, replace=False)
            views, frames = [int(a[0]), int(a[0]), int(a[1]), int(a[1])], [int(b[0]), int(b[1])] * 2
        clean = [role.startswith("image-to") and keep, False, False, False]
        sets.append((i, views, frames, clean))
        roles.append(role)
    images = [(scene(), [int(rng.integers(4))], [int(rng.integers(4))], [False])
              for _ in range(config.image_batch)]
    return {"sets": pack(sets, roles), "images": pack(images, ["image"] * len(images)),
            "seed": int(rng.integers(2 ** 31))}


def diffusion_loss(model: FieldDiT, part: dict, schedule, shared_noise: float, generator: torch.Generator,
                   device, motion_weight: float = 0.0, self_condition: float = 0.0) -> torch.Tensor:
    """v-prediction MSE over the noisy views of one packed part of a batch.

    ``self_condition``: the share of items trained with the network's own x0 estimate as an input (the estimate
    from a first, gradient-free pass without one; Chen et al. 2022); the others get none.

    ``motion_weight`` adds that weight times the MSE of the error's change between consecutive entries that
    show one view at two times (``part["motion_pairs"]``): the error common to the frames is counted once, the
    error in how they differ (the motion) about 1 + 2 ``motion_weight`` times.
    """
    x0 = part["x0"].to(device)
    B, N = x0.shape[:2]
    level = torch.randint(0, schedule.num_steps, (B,), generator=generator).float()
    eps = torch.randn(x0.shape, generator=generator)
    # T1 Eq. 1: the same noise component for every view of a field (for a share of the items).
    shared = torch.rand(B, generator=generator) < shared_noise
    eps = torch.where(shared[:, None, None, None, None], eps[:, :1].expand_as(eps), eps).to(device)
    alpha, sigma = (a.to(device).view(B, 1, 1, 1, 1) for a in schedule.alpha_sigma(level))
    clean = part["clean"].to(device)
    x_t = torch.where(clean[:, :, None, None, None], x0, alpha * x0 + sigma * eps)
    text = model.encode_text(part["ids"].to(device))
    heading, background = part.get("heading"), part.get("background")
    inputs = (x_t, level.to(device), text, part["c2w"].to(device), part["K"].to(device), part["times"].to(device),
              clean, None if heading is None else heading.to(device),
              None if background is None else background.to(device))
    estimate = None
    if self_condition > 0:
        with torch.no_grad():
            first = alpha * x_t - sigma * model(*inputs)  # x0 from the v-prediction
        use = (torch.rand(B, generator=generator) < self_condition).to(device)[:, None] & ~clean
        estimate = torch.where(use[:, :, None, None, None], first, torch.zeros_like(first))
    out = model(*inputs, estimate=estimate)
    target = alpha * eps - sigma * x0
    weight = (~clean).float()[:, :, None, None, None]
    error = out - target
    loss = (error ** 2 * weight).sum() / (weight.sum() * x0[0, 0].numel()).clamp_min(1)
    pairs = part.get("motion_pairs")
    if motion_weight and pairs is not None and bool(pairs.any()):
        pairs = pairs.to(device).float()[:, :, None, None, None]
        change = error[:, 1:] - error[:, :-1]
        loss = loss + motion_weight * (change ** 2 * pairs).sum() / (pairs.sum() * x0[0, 0].numel())
    return loss


class StepLoss(torch.nn.Module):
    """The loss of one mixed-role batch as a module, so DistributedDataParallel can wrap the whole step."""

    def __init__(self, model: FieldDiT, schedule, shared_noise: float, motion_weight: float = 0.0,
                 self_condition: float = 0.0) -> None:
        super().__init__()
        self.model, self.schedule, self.shared_noise, self.motion_weight = model, schedule, shared_noise, motion_weight
        self.self_condition = self_condition

    def forward(self, batch: dict, generator: torch.Generator, device) -> torch.Tensor:
        return (diffusion_loss(self.model, batch["sets"], self.schedule, self.shared_noise, generator, device,
                               self.motion_weight, self.self_condition)
                + diffusion_loss(self.model, batch["images"], self.schedule, self.shared_noise, generator, device,
                                 self_condition=self.self_condition))


def _distributed() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group this process is in, (0, 1) when there is none."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ------------------------------------------------------------------------------------------------ checkpoints
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_checkpoint(out_dir: Path, step: int, model: FieldDiT, ema: dict, optimizer: torch.optim.Optimizer,
                    config: TrainPriorConfig, extra: dict, keep: int = 2) -> Path:
    """``ckpt-<step>.safetensors`` + ``state.json`` (written last, so it always names a complete file)."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.items()})
    opt = optimizer.state_dict()
    for pid, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"opt.{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    path = out_dir / f"ckpt-{step:07d}.safetensors"
    _atomic_write_bytes(path, save(tensors))
    state = {"step": step, "checkpoint": path.name, "config": config_to_dict(config),
             "arch": model.arch.to_dict(), "param_groups": opt["param_groups"], **extra}
    _atomic_write_bytes(out_dir / "state.json", json.dumps(state, indent=1).encode())
    for old in sorted(out_dir.glob("ckpt-*.safetensors"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read_training_checkpoint(out_dir: Path, ema: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
    """(state.json, model weights) of the newest checkpoint in ``out_dir`` (EMA weights when ``ema``)."""
    from safetensors.torch import load_file

    state = json.loads((Path(out_dir) / "state.json").read_text())
    tensors = load_file(Path(out_dir) / state["checkpoint"])
    prefix = "ema." if ema else "model."
    return state, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def export_prior(out_dir: Path, dest: Path, card: dict | None = None, half: bool = True) -> Path:
    """The EMA weights of the newest checkpoint as ``dest/model.safetensors`` (fp16) + ``dest/config.json``."""
    from safetensors.torch import save

    state, weights = read_training_checkpoint(out_dir, ema=True)
    dest.mkdir(parents=True, exist_ok=True)
    weights = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    _atomic_write_bytes(dest / "model.safetensors", save(weights))
    config = {"arch": state["arch"], "training": state["config"], "step": state["step"],
              "train_seconds": state.get("train_seconds"), "held_out": state.get("held_out"), **(card or {})}
    _atomic_write_bytes(dest / "config.json", json.dumps(config, indent=1).encode())
    return dest


# ------------------------------------------------------------------------------------------------ training
def _lr(config: TrainPriorConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / max(1, config.warmup))
    decay = 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, config.steps))))
    return config.lr * warm * (0.1 + 0.9 * decay)


def train_prior(config: TrainPriorConfig, out_dir: str | Path, resume: bool = True,
                progress: Callable[[Progress], None] | None = None, world: WorldTensors | None = None,
                stop_after: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Train (or continue training) a field prior into ``out_dir``; returns a summary dict.

    ``resume``: continue from ``out_dir/state.json`` when it exists (the config must match). ``stop_after``
    ends this sitting after that many steps (a checkpoint is written), as a killed run would. ``world``
    passes preloaded data (tests). Progress events carry loss, samples/s and the ETA.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = out_dir / "train.log"

    rank, world_size = _distributed()

    def say(line: str) -> None:
        if rank != 0:
            return
        with log_file.open("a") as fh:
            fh.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")
        if log is not None:
            log(line)

    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    tokenizer = PromptTokenizer(config.text_length)
    torch.manual_seed(config.seed)
    model = FieldDiT(config.arch(tokenizer.vocab_size)).to(device)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0, fused=fused)
    step, train_seconds = 0, 0.0
    state_path = out_dir / "state.json"
    if resume and state_path.is_file():
        step, train_seconds = _restore(out_dir, config, model, ema, optimizer, device)
        say(f"resumed at step {step} ({train_seconds / 60:.1f} min trained so far)")
    elif config.init_from:
        say(_initialise(Path(config.init_from).expanduser(), config, model, ema))
    from pipelines.priors.inhouse import cosine_schedule

    schedule = cosine_schedule()
    step_loss = StepLoss(model, schedule, config.shared_noise, config.motion_weight,
                         config.p_self_condition if config.self_condition else 0.0)
    if world_size > 1:  # torchrun: each process takes its own batch, gradients are averaged
        from torch.nn.parallel import DistributedDataParallel

        step_loss = DistributedDataParallel(step_loss, device_ids=[device.index] if device.type == "cuda" else None)
    motion_weight_table(config.motion_weights)  # a bad table is refused before the world is loaded
    if world is None:
        world = load_world(config, say)
    say(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {world.rgb.shape[0]} scenes, "
        f"steps {step} -> {config.steps}")
    eta = EtaEstimator(config.steps)
    last_ckpt = time.perf_counter()
    sitting_end = config.steps if stop_after is None else min(config.steps, step + stop_after)
    losses: list[float] = []
    summary = {"held_out": [list(c) for c in held_out_combinations(config.held_out)]}
    per_step = config.batch * 4 + config.image_batch
    while step < sitting_end:
        t0 = time.perf_counter()
        batch = make_batch(world, config, tokenizer, step, rank)
        gen = torch.Generator().manual_seed(batch["seed"])
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, step)
        loss = step_loss(batch, gen, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        decay = min(config.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    ema[k].lerp_(v, 1 - decay)
                else:
                    ema[k].copy_(v)
        dt = time.perf_counter() - t0
        train_seconds += dt
        losses.append(loss.item())
        remaining = eta.update(step)
        if progress is not None and rank == 0:
            progress(Progress("train prior", step, config.steps, {"loss": losses[-1], "views_per_s": per_step / dt},
                              remaining))
        if step % 25 == 0 or step == sitting_end:
            recent = float(np.mean(losses[-25:]))
            eta_text = f"{remaining / 60:.0f} min" if remaining is not None else "?"
            say(f"step {step}/{config.steps} loss {recent:.4f} ({per_step / dt:.1f} views/s, ETA {eta_text})")
        due = (time.perf_counter() - last_ckpt) / 60 >= config.checkpoint_minutes or step == sitting_end
        if world_size > 1:  # every process agrees on when to write (clocks differ); rank 0 writes
            import torch.distributed as dist

            flag = torch.tensor([float(due)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            due = bool(flag.item())
        if due and rank == 0:
            save_checkpoint(out_dir, step, model, ema, optimizer, config,
                            {"train_seconds": train_seconds, **summary}, config.keep_checkpoints)
        if due:
            last_ckpt = time.perf_counter()
    return {"step": step, "train_seconds": train_seconds, "losses": losses, "out_dir": str(out_dir),
            "model": model, "ema": ema}


# Optional inputs of FieldPriorArch whose layers start at zero: a model with one can start from a model without it.
ADDED_INPUTS = ("heading", "background", "self_condition")


def _initialise(folder: Path, config: TrainPriorConfig, model: FieldDiT, ema: dict) -> str:
    """Model and EMA weights from an exported prior ``folder`` whose architecture is ``config``'s, or the same
    with fewer blocks: a deeper model keeps the exported blocks first and its extra blocks start as the identity
    (adaLN-Zero gates and the cross-attention output at zero), so it begins as the exported model's function;
    likewise a model with ``heading``, ``background`` or ``self_condition`` grown from one without.
    Returns how it started (one sentence)."""
    from safetensors.torch import load_file

    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise FileNotFoundError(f"init_from '{folder}' is not an exported prior (it needs model.safetensors "
                                "and config.json).")
    saved = json.loads((folder / "config.json").read_text()).get("arch", {})
    wanted = config.arch(model.arch.vocab_size).to_dict()
    added = [k for k in ADDED_INPUTS if wanted[k] and not saved.get(k, False)]
    changed = [k for k in wanted if k in saved and saved[k] != wanted[k] and k not in added]
    grow = changed == ["depth"] and saved["depth"] < wanted["depth"]
    if changed and not grow:
        raise ValueError(f"init_from '{folder}' has a different architecture ({', '.join(changed)}); "
                         "set the same sizes (or a larger depth) or start from random weights.")
    tensors = {k: v.float() for k, v in load_file(folder / "model.safetensors").items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    new = ("blocks.",) * grow + tuple(k + "_" for k in added)
    if unexpected or any(not k.startswith(new) for k in missing):
        raise ValueError(f"init_from '{folder}' does not match the model's layers.")
    for k, v in model.state_dict().items():
        ema[k].copy_(v)
    how = f"started from the weights in {folder}"
    if grow:
        how += f", grown from {saved['depth']} to {wanted['depth']} blocks (the new blocks start as the identity)"
    for k in added:
        how += f", with a new {k} input (it starts at zero)"
    return how


def _restore(out_dir: Path, config: TrainPriorConfig, model: FieldDiT, ema: dict, optimizer, device) -> tuple:
    from safetensors.torch import load_file

    state = json.loads((out_dir / "state.json").read_text())
    saved = config_from_dict(TrainPriorConfig, state["config"])
    arch_keys = ("resolution", "downsample", "width", "depth", "heads", "text_width", "text_layers", "text_length",
                 *ADDED_INPUTS)
    changed = [k for k in arch_keys if getattr(saved, k) != getattr(config, k)]
    if changed:
        raise ValueError(f"{out_dir} holds a run with a different architecture ({', '.join(changed)}); "
                         "train into a new folder or pass resume=False.")
    tensors = load_file(out_dir / state["checkpoint"])
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for k, v in tensors.items():
        if k.startswith("ema."):
            ema[k[4:]].copy_(v)
    opt_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, key = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = v.to(device) if key != "step" else v
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    model.to(device)
    return int(state["step"]), float(state.get("train_seconds", 0.0))
