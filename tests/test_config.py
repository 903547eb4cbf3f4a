from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from pipelines.config import (
    Config,
    ConfigError,
    config_fields,
    config_from_dict,
    config_from_toml,
    config_to_toml,
)


@dataclass(frozen=True)
class RenderSettings(Config):
    resolution: int = 64
    samples: tuple[int, int] = (32, 64)


@dataclass(frozen=True)
class FitConfig(Config):
    schema_version: ClassVar[int] = 2
    presets: ClassVar[dict] = {"preview": {"steps": 5, "render": {"resolution": 32}}, "paper": {"steps": 10_000}}
    steps: int = field(default=100, metadata={"help": "optimisation steps"})
    lr: float = 1e-2
    shading: Literal["albedo", "lambertian"] = "albedo"
    prompt: str | None = None
    render: RenderSettings = field(default_factory=RenderSettings)


def test_presets_and_toml_round_trip():
    cfg = FitConfig.preset("preview").replace(lr=3e-3, prompt="a red ball")
    assert cfg.steps == 5 and cfg.render.resolution == 32 and cfg.render.samples == (32, 64)
    text = config_to_toml(cfg)
    assert "version = 2" in text
    assert config_from_toml(FitConfig, text) == cfg
    assert config_from_toml(FitConfig, config_to_toml(FitConfig())) == FitConfig()


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'render\.resolutoin'"):
        config_from_dict(FitConfig, {"render": {"resolutoin": 3}})
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        FitConfig.preset("fast")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": "ten"}, r"'steps' must be an integer"),
        ({"steps": 1.5}, r"'steps' must be an integer"),
        ({"steps": True}, r"'steps' must be an integer"),
        ({"lr": "fast"}, r"'lr' must be a number"),
        ({"shading": "phong"}, r"'shading' must be one of 'albedo', 'lambertian'"),
        ({"render": {"samples": [1, 2, 3]}}, r"'render\.samples' must have 2 items"),
        ({"render": {"samples": [1, "x"]}}, r"'render\.samples\[1\]' must be an integer"),
        ({"render": 5}, r"'render' must be a table"),
    ],
)
def test_wrong_types_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(FitConfig, data)


def test_ints_are_accepted_for_floats_and_overrides_use_dotted_keys():
    cfg = config_from_dict(FitConfig, {"lr": 1})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert FitConfig().override({"render.resolution": 128}).render.resolution == 128
    with pytest.raises(ConfigError, match="no section 'rendr'"):
        FitConfig().override({"rendr.resolution": 128})


def test_newer_schema_and_bad_toml_are_refused():
    with pytest.raises(ConfigError, match="newer version"):
        config_from_toml(FitConfig, "[schema]\nversion = 3\n[config]\nsteps = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_from_toml(FitConfig, "steps = = 3")


def test_fields_listing_for_generated_forms():
    names = {name: help for name, _, _, help in config_fields(FitConfig)}
    assert names["steps"] == "optimisation steps"
    assert "render.resolution" in names and "render.samples" in names


def test_parse_overrides_reads_toml_values_and_names_a_malformed_item():
    from pipelines.config import ConfigError, parse_overrides

    assert parse_overrides(["steps=20", "lr=0.5", "flag=true", "levels=[1, 2]", "name=red ball"]) == {
        "steps": 20, "lr": 0.5, "flag": True, "levels": [1, 2], "name": "red ball"}
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE, got 'steps'"):
        parse_overrides(["steps"])
