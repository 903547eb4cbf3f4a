"""`text-to-3d`: sample an object from a trained autodecoder bundle with latent 3D diffusion.

The bundle (see :mod:`pipelines.autodecoder.generate`) is ``models_dir()/autodecoder/bundle.safetensors``
unless the config names another. The prompt conditions through hashed word tokens when the diffusion
model was trained with text, and through the world's shape class named in the prompt when it was trained
with classes (``"a red cube"`` -> class ``cube``).
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


def prompt_class(prompt: str) -> int | None:
    """Index of the world shape the prompt names (:data:`pipelines.world.grammar.SHAPES`), synonyms included
    ("ball" -> sphere, "box" -> cube), or None."""
    from pipelines.world.grammar import SHAPES, attributes_from_text

    shape = attributes_from_text(prompt).get("shape")
    return SHAPES.index(shape) if shape in SHAPES else None


def run(inputs: dict[str, str], config: TextTo3DConfig, context) -> Iterator:
    import torch

    from pipelines.autodecoder.diffusion import tokenize
    from pipelines.autodecoder.generate import load_bundle, sample_scenes
    from pipelines.events import Log, Preview, Progress
    from renderers.cameras import orbit_cameras

    preflight(inputs, config)
    prompt = inputs.get("prompt", "")
    model, norm, edm = load_bundle(bundle_path(config), device=str(context.device))
    if edm is None:
        raise ValueError(f"the bundle '{bundle_path(config)}' holds no diffusion model.")
    labels = tokens = None
    if edm.config.num_classes and (cls := prompt_class(prompt)) is not None:
        labels = torch.tensor([cls], device=context.device)
    if edm.config.vocab_size and prompt:
        tokens = tokenize([prompt], edm.config.vocab_size, edm.config.context_length).to(context.device)
    if labels is None and tokens is None:
        yield Log("the prompt gives no condition this model knows: sampling unconditionally")
    yield Progress("sample", 0, 1)
    scene = sample_scenes(model, edm, norm, 1, labels=labels, tokens=tokens, guidance=config.guidance,
                          steps=config.steps, generator=context.generator())[0]
    context.check_cancelled()
    yield Progress("sample", 1, 1)
    cams = orbit_cameras(2.7, 20.0, torch.tensor([0.0, 90.0, 180.0, 270.0]), 40.0, config.preview_size,
                         config.preview_size)
    with torch.no_grad():
        rgb = scene.render(cams, 0.0).rgb.cpu()
    image = (torch.cat(list(rgb), 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    yield Preview("sample", image=image, grid=(1, 4))
    return scene


register_pipeline(PipelineInfo(
    name="text-to-3d",
    title="Text to 3D with an autodecoder and latent 3D diffusion",
    config_cls=TextTo3DConfig,
    entry="pipelines.autodecoder.pipeline:run",
    inputs=("prompt",),
    preflight="pipelines.autodecoder.pipeline:preflight",
))
