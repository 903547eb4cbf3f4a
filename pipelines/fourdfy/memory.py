"""Memory profiles for 4D-fy: a setting chosen from the GPU's free memory, with an estimate of the peak.

Users of the original report that the paper's configuration needs an 80 GB GPU, runs out of memory on 24-40
GB ones, and that its low-memory configuration (few video frames) barely moves. The profiles trade memory
for time first and for picture size last, and never drop below the 8 video frames under which public
video priors are known to flatten the motion (``hybrid.motion_warnings``):

    full      the config as written
    balanced  priors in half precision; the VAE encoder and the field's renders recomputed one image at a
              time in the backward pass (score distillation backpropagates through both: at 16 frames of
              160 x 288 renders and 320 x 576 encoder inputs their activations dwarf the models); the same
              pictures for one more render and encoder forward per update
    low       balanced + priors not in use wait in CPU memory (moved in for their own update) + at most
              8 video frames, renders at most 128 px (video at half size)

``auto`` (the default) takes the richest profile whose estimated peak fits in 90 % of the free memory of
the job's CUDA device, and ``full`` on a CPU. The estimate (:func:`estimate`) is the exact parameter bytes of
the priors (read from their safetensors headers) and of the field with its Adam state, plus activation
terms measured on the CPU by counting the bytes autograd saves for the backward pass
(``python -m benchmarks.fourdfy --memory`` prints them): they are device-independent, but the CUDA
allocator's fragmentation and the UNets' transient forward activations are not in them, so treat the
figure as a guide until it is calibrated on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipelines.fourdfy.config import FourDfyConfig

PROFILES = ("full", "balanced", "low")
GIB = 2 ** 30

# Bytes autograd keeps for the backward pass, measured on the CPU with saved_bytes() below
# (`python -m benchmarks.fourdfy --memory`, float32):
FIELD_BYTES_PER_SAMPLE = 446       # one ray sample through the paper field (3-D + 4-D grid, MLPs, compositing)
VAE_BYTES_PER_PIXEL = 12_700       # SD's VAE encoder (128-256-512-512 channels) per input pixel
VAE_CHECKPOINTED_BYTES_PER_PIXEL = 12  # the same with encode_checkpointing (the chunk inputs only)
OCCUPIED = 0.25                    # share of samples the occupancy grid keeps (77 % skipped on a fitted scene)
UNET_FORWARD_GIB = 2.0             # transient activations of one guided UNet forward (no grad), a guess
OVERHEAD_GIB = 1.5                 # CUDA context, allocator slack


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensors autograd saves for the backward pass of ``fn()`` (its memory floor),
    leaving out the leaves that require grad (parameters and inputs: they are held anyway)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if not (t.is_leaf and t.requires_grad):
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def profile_overrides(name: str, config: FourDfyConfig) -> dict:
    """The config changes of profile ``name``."""
    if name not in PROFILES:
        raise ValueError(f"unknown memory profile {name!r}; choose auto or one of: {', '.join(PROFILES)}")
    if name == "full":
        return {}
    half = config.prior_dtype if config.prior_dtype != "float32" else "float16"  # a chosen bfloat16 stays
    changes: dict = {"prior_dtype": half, "encode_checkpointing": True, "render_checkpointing": True}
    if name == "low":
        h, w = config.render_video
        changes |= {"offload_priors": True, "video_frames": min(config.video_frames, 8),
                    "render_video": (max(16, h // 2), max(16, w // 2)),
                    "render_3d": min(config.render_3d, 128), "render_img": min(config.render_img, 128)}
    return changes


@dataclass(frozen=True)
class Estimate:
    """Estimated peak GPU memory (bytes) of a config, and its parts."""

    weights: int
    field: int
    activations: dict[str, int]

    @property
    def peak(self) -> int:
        return self.weights + self.field + max(self.activations.values()) + int((UNET_FORWARD_GIB + OVERHEAD_GIB) * GIB)

    def describe(self) -> str:
        worst = max(self.activations, key=self.activations.get)
        return (f"about {self.peak / GIB:.0f} GiB (priors {self.weights / GIB:.1f}, field + Adam "
                f"{self.field / GIB:.1f}, {worst} update {self.activations[worst] / GIB:.1f})")


def parameter_counts(names: dict[str, str]) -> dict[str, int]:
    """Parameters of each distinct prior, from the safetensors headers in its folder (no weights loaded)."""
    from safetensors import safe_open

    from pipelines.priors.registry import find_model

    counts = {}
    for name in dict.fromkeys(names.values()):
        total = 0
        for path in sorted(find_model(name).rglob("*.safetensors")):
            with safe_open(str(path), "pt") as f:
                total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (safe_open is not iterable)
        counts[name] = total
    return counts


def field_parameters(config: FourDfyConfig) -> int:
    """Parameters of the config's field (built once on the CPU: the paper's is 34 M, 134 MB)."""
    from renderers.field import Field4D, FieldConfig

    return sum(p.numel() for p in Field4D(FieldConfig.preset(config.field_preset)).parameters())


def estimate(config: FourDfyConfig, counts: dict[str, int], field_params: int) -> Estimate:
    """Peak memory of ``config`` given the priors' parameter counts (``parameter_counts``)."""
    width = 2 if config.prior_dtype in ("float16", "bfloat16") else 4
    sizes = [n * width for n in counts.values()]
    weights = max(sizes) if config.offload_priors else sum(sizes)
    field = field_params * 4 * 4  # parameters, gradients, Adam's two moments, float32
    samples = config.samples_per_ray * OCCUPIED * FIELD_BYTES_PER_SAMPLE
    h, w = config.render_video
    vh, vw = config.native_video

    def renders(images: int, pixels: int) -> float:
        """Saved render activations; checkpointed, the images (rgb + alpha) plus one render recomputed."""
        if config.render_checkpointing:
            return images * pixels * 16 + pixels * samples
        return images * pixels * samples

    def encoder(images: int, pixels: int) -> float:
        """Saved encoder activations; checkpointed, the chunk inputs plus one image recomputed at a time."""
        if config.encode_checkpointing:
            return (images * pixels * VAE_CHECKPOINTED_BYTES_PER_PIXEL + pixels * VAE_BYTES_PER_PIXEL) * width / 4
        return images * pixels * VAE_BYTES_PER_PIXEL * width / 4
    acts = {
        "3D": int(renders(config.views_3d, config.render_3d ** 2) + encoder(config.views_3d, config.native_3d ** 2)),
        "VSD": int(renders(1, config.render_img ** 2) + encoder(1, config.native_img ** 2)),
        "video": int(renders(config.video_frames, h * w) + encoder(config.video_frames, vh * vw)),
    }
    if config.steps_stage3 == 0:
        acts.pop("video")
    return Estimate(weights, field, acts)


def choose_profile(config: FourDfyConfig, free_bytes: int | None, counts: dict[str, int],
                   field_params: int) -> tuple[str, FourDfyConfig, list[str]]:
    """(profile, config with it applied, log lines) for ``config.memory_profile`` and ``free_bytes`` of GPU
    memory (None: not on a GPU). ``auto`` takes the richest profile whose estimate fits 90 % of it."""
    lines = []
    if config.memory_profile != "auto":
        name = config.memory_profile
    elif free_bytes is None:
        name = "full"
    else:
        fits = [p for p in PROFILES
                if estimate(config.replace(**profile_overrides(p, config)), counts, field_params).peak
                <= 0.9 * free_bytes]
        name = fits[0] if fits else "low"
        if not fits:
            lines.append(f"even the low memory profile is estimated above the {free_bytes / GIB:.0f} GiB free; "
                         "it may run out of memory (lower render_video, render_img or samples_per_ray).")
    chosen = config.replace(**profile_overrides(name, config), memory_profile=name)
    where = f" for {free_bytes / GIB:.0f} GiB free" if free_bytes is not None else ""
    lines.insert(0, f"memory profile '{name}'{where}: estimated peak "
                    f"{estimate(chosen, counts, field_params).describe()}")
    if chosen.video_frames < config.video_frames:
        lines.append(f"the memory profile renders {chosen.video_frames} video frames instead of "
                     f"{config.video_frames}: motion may be weaker than the full setting's.")
    return name, chosen, lines


def free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` when it is a CUDA device, else None."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)
