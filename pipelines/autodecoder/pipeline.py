"""`text-to-3d`: sample an object from a trained autodecoder bundle with latent 3D diffusion.

The bundle (see :mod:`pipelines.autodecoder.generate`) is ``models_dir()/autodecoder/bundle.safetensors``
unless the config names another. The prompt conditions through every condition the diffusion model was
trained with (:func:`pipelines.autodecoder.diffusion.caption_conditions`): hashed word tokens, the world's
shape class, and the shape / colour / size / material the world grammar reads in it (``"a crimson ball"`` ->
red sphere).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pipelines.config import Config
from pipelines.registry import PipelineInfo, register_pipeline

BUNDLE_NAME = "autodecoder/bundle.safetensors"
BUNDLED = "text-to-3d-autodecoder.safetensors"  # under assets/checkpoints


@dataclass(frozen=True)
class TextTo3DConfig(Config):
    schema_version: ClassVar[int] = 1
    presets: ClassVar[dict] = {"preview": {"steps": 12}, "standard": {}, "paper": {"steps": 64}}

    bundle: str = field(default="", metadata={"help": "autodecoder bundle file (default: the installed one)"})
    steps: int = field(default=18, metadata={"help": "EDM Heun steps (paper figures: 64)"})
    guidance: float = field(default=3.0, metadata={"help": "classifier-free guidance weight (paper: 3)"})
    preview_size: int = field(default=96, metadata={"help": "preview image size in pixels"})

    def __post_init__(self) -> None:
        if self.steps < 1 or self.preview_size < 8:
            raise ValueError("'steps' must be at least 1 and 'preview_size' at least 8")


def bundle_path(config: TextTo3DConfig) -> Path:
    """``config.bundle``, else the installed bundle (``fourd train latent-diffusion --install``), else the one
    shipped in ``assets`` (where the installed one is missing)."""
    from pipelines.paths import models_dir

    if config.bundle:
        return Path(config.bundle)
    installed = models_dir() / BUNDLE_NAME
    if not installed.is_file():
        try:
            from assets import asset_path

            return asset_path("checkpoints", BUNDLED)
        except FileNotFoundError:
            pass
    return installed


def preflight(inputs: dict, config: TextTo3DConfig, priors: dict | None = None) -> None:
    path = bundle_path(config)
    if not path.is_file():
        raise FileNotFoundError(f"no autodecoder bundle at '{path}': train one with `fourd train autodecoder` and "
                                "`fourd train latent-diffusion --install`, or set 'bundle'.")


def _names_anything(conditions: dict) -> bool:
    """Whether any condition of one prompt carries information (a class, a non-padding word, an attribute)."""
    labels, tokens, attributes = conditions["labels"], conditions["tokens"], conditions["attributes"]
    return ((labels is not None and bool((labels >= 0).any())) or (tokens is not None and bool((tokens > 0).any()))
            or (attributes is not None and bool((attributes >= 0).any())))


def _value_name(attribute: str, index: int) -> str:
    from pipelines.autodecoder.diffusion import attribute_values

    return attribute_values()[attribute][index]


def sample_for_prompt(prompt: str, config: TextTo3DConfig, device, generator) -> tuple:
    """One object for ``prompt`` from the bundle: ``(VoxelScene, line)``, where the line says what the sample
    was conditioned on. Also the 3D start of `text-to-4d` (its ``init_text_to_3d`` switch)."""
    from pipelines.autodecoder.diffusion import caption_conditions
    from pipelines.autodecoder.generate import load_bundle, sample_scenes

    preflight({"prompt": prompt}, config)
    model, norm, edm = load_bundle(bundle_path(config), device=str(device))
    if edm is None:
        raise ValueError(f"the bundle '{bundle_path(config)}' holds no diffusion model.")
    conditions = {k: None if v is None else v.to(device)
                  for k, v in caption_conditions([prompt], edm.config).items()}
    if not _names_anything(conditions):
        line = "the prompt gives no condition this model knows: sampling unconditionally"
        conditions = dict.fromkeys(conditions)
    elif conditions["attributes"] is not None:
        named = dict(zip(edm.config.attributes, conditions["attributes"][0].tolist()))
        line = "conditioned on " + (", ".join(f"{k} {_value_name(k, v)}" for k, v in named.items() if v >= 0)
                                    or "the words alone")
    else:
        line = "conditioned on the prompt's words"
    scene = sample_scenes(model, edm, norm, 1, **conditions, guidance=config.guidance, steps=config.steps,
                          generator=generator)[0]
    return scene, line


def run(inputs: dict[str, str], config: TextTo3DConfig, context) -> Iterator:
    import torch

    from pipelines.events import Log, Preview, Progress, preview_pixels
    from renderers.cameras import orbit_cameras

    yield Progress("sample", 0, 1)
    scene, line = sample_for_prompt(inputs.get("prompt", ""), config, context.device, context.generator())
    yield Log(line)
    context.check_cancelled()
    yield Progress("sample", 1, 1)
    cams = orbit_cameras(2.7, 20.0, torch.tensor([0.0, 90.0, 180.0, 270.0]), 40.0, config.preview_size,
                         config.preview_size)
    with torch.no_grad():
        rgb = scene.render(cams, 0.0).rgb.cpu()
    yield Preview("sample", image=preview_pixels(torch.cat(list(rgb), 1)), grid=(1, 4))
    return scene


register_pipeline(PipelineInfo(
    name="text-to-3d",
    title="Text to 3D with an autodecoder and latent 3D diffusion",
    config_cls=TextTo3DConfig,
    entry="pipelines.autodecoder.pipeline:run",
    inputs=("prompt",),
    preflight="pipelines.autodecoder.pipeline:preflight",
))
