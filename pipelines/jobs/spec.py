"""A job specification: which pipeline, with which inputs, config, seed and priors. Saved as TOML
in the run folder, so a spec file reruns the same job (``fourd run spec.toml``)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config import Config, ConfigError, config_from_mapping, config_to_dict

# Inputs with these names are files: they are copied into the run folder's inputs/.
FILE_INPUTS = ("image", "video", "mesh", "images", "reference")


class SpecError(ConfigError):
    """A spec file cannot be used; the message names the file and the problem."""


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fourd-studio")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class JobSpec:
    pipeline: str
    inputs: dict[str, str]
    config: Config
    seed: int = 0
    preset: str = "preview"
    priors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, pipeline: str, preset: str = "preview", *, inputs: dict[str, str] | None = None, seed: int = 0,
               priors: dict[str, str] | None = None, overrides: dict[str, Any] | None = None) -> JobSpec:
        """The spec of ``pipeline`` at ``preset`` with dotted config ``overrides`` (``--set``)."""
        from pipelines.registry import get_pipeline

        info = get_pipeline(pipeline)
        config = info.config_cls.preset(preset)
        if overrides:
            config = config.override(overrides)
        inputs = dict(inputs or {})
        missing = [name for name in info.inputs if name not in inputs]
        if missing:
            raise SpecError(f"pipeline '{pipeline}' needs the input '{missing[0]}'.")
        return cls(pipeline, inputs, config, seed, preset, dict(priors or {}))

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps({
            "run": {"pipeline": self.pipeline, "preset": self.preset, "seed": self.seed,
                    "fourd_version": package_version()},
            "inputs": dict(self.inputs),
            "priors": dict(self.priors),
            "schema": {"name": type(self.config).__name__, "version": type(self.config).schema_version},
            "config": config_to_dict(self.config),
        })

    @classmethod
    def from_toml(cls, text: str, source: str = "spec") -> JobSpec:
        from pipelines.registry import UnknownPipelineError, get_pipeline

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SpecError(f"{source} is not a valid spec file (bad TOML: {err}).") from None
        run = data.get("run")
        if not isinstance(run, dict) or not isinstance(run.get("pipeline"), str):
            raise SpecError(f"{source} is not a valid spec file: it has no [run] table naming the pipeline.")
        try:
            info = get_pipeline(run["pipeline"])
        except UnknownPipelineError as err:
            raise SpecError(f"{source}: {err}") from None
        seed, preset = run.get("seed", 0), run.get("preset", "preview")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SpecError(f"{source}: run.seed must be an integer, got {seed!r}.")
        for table in ("inputs", "priors"):
            value = data.get(table, {})
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise SpecError(f"{source}: [{table}] must map names to strings.")
        try:
            config = config_from_mapping(info.config_cls, data, source=source)
        except ConfigError as err:
            raise SpecError(f"{source}: {err}") from None
        return cls(info.name, dict(data.get("inputs", {})), config, seed, str(preset), dict(data.get("priors", {})))

    def save(self, path: str | Path) -> Path:
        from pipelines.atomic_files import write_atomic

        return write_atomic(path, self.to_toml())

    @classmethod
    def load(cls, path: str | Path) -> JobSpec:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise SpecError(f"spec file '{path}' does not exist.") from None
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"spec file '{path}' cannot be read ({err}).") from None
        return cls.from_toml(text, source=f"spec file '{path}'")
