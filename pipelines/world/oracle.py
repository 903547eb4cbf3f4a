"""`world-oracle`: the world scene a caption names, as if a pipeline had read the prompt perfectly.

It is the ceiling of every evaluation figure and a check of the harness itself: on a suite whose scenes
have heading 0 (the one thing a caption does not say) it scores PSNR 100 dB and mask IoU 1.

    fourd eval smoke --pipeline world-oracle
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from pipelines.config import Config
from pipelines.registry import PipelineInfo, register_pipeline


@dataclass(frozen=True)
class WorldOracleConfig(Config):
    schema_version: ClassVar[int] = 1
    presets: ClassVar[dict] = {"preview": {}, "standard": {}, "paper": {}}


def spec_from_prompt(prompt: str):
    """The :class:`WorldSpec` a prompt names (heading 0); one sentence when it misses shape, colour or motion."""
    from pipelines.world.grammar import WorldSpec, attributes_from_text

    found = attributes_from_text(prompt)
    missing = [k for k in ("shape", "colour", "motion") if k not in found]
    if missing:
        raise ValueError(f"the prompt {prompt!r} names no {' or '.join(missing)} the world knows.")
    return WorldSpec(**found)


def run(inputs: dict[str, str], config: WorldOracleConfig, context) -> Iterator:
    from pipelines.events import Log, Progress
    from pipelines.world.scene import WorldScene

    yield Progress("read prompt", 0, 1)
    spec = spec_from_prompt(inputs.get("prompt", ""))
    context.check_cancelled()
    yield Log(f"the prompt names {spec.caption()!r}")
    yield Progress("read prompt", 1, 1)
    return WorldScene(spec)


register_pipeline(PipelineInfo(
    name="world-oracle",
    title="The world scene a caption names (the ceiling of evaluation figures)",
    config_cls=WorldOracleConfig,
    entry="pipelines.world.oracle:run",
    inputs=("prompt",),
))
