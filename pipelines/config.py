"""Pipeline configs: frozen dataclasses with named presets that round-trip through TOML.

    @dataclass(frozen=True)
    class FitConfig(Config):
        schema_version: ClassVar[int] = 1
        presets: ClassVar[dict] = {"preview": {"steps": 50}, "paper": {"steps": 10_000}}
        steps: int = 200
        lr: float = 1e-2

    cfg = FitConfig.preset("preview").replace(lr=3e-3)
    text = config_to_toml(cfg)
    assert config_from_toml(FitConfig, text) == cfg

Every value is checked on the way in: an unknown key or a wrong type raises :class:`ConfigError`
with one sentence naming the key (``render.resolution``) and what was expected.
"""

from __future__ import annotations

import dataclasses
import enum
import tomllib
import types
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

PRESET_NAMES = ("preview", "standard", "paper")


class ConfigError(ValueError):
    """A config value a user gave is not acceptable; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every pipeline config. Subclasses are frozen dataclasses.

    Class attributes:
        schema_version: bumped when a field changes meaning; files with a newer schema are refused.
        presets: preset name -> overrides of the defaults (nested dicts for nested configs).
    """

    schema_version: ClassVar[int] = 1
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def preset(cls, name: str):
        if name not in cls.presets:
            known = ", ".join(cls.presets) or "none"
            raise ConfigError(f"unknown preset '{name}' for {cls.__name__} (known: {known}).")
        return config_from_dict(cls, cls.presets[name])

    def replace(self, **changes):
        """A copy with fields changed; values are validated like a loaded file's."""
        merged = config_to_dict(self)
        for key, value in changes.items():
            merged[key] = config_to_dict(value) if dataclasses.is_dataclass(value) else value
        return config_from_dict(type(self), merged)

    def override(self, dotted: dict[str, Any]):
        """A copy with ``{"render.resolution": 64}``-style overrides applied (as from a CLI)."""
        merged = config_to_dict(self)
        for key, value in dotted.items():
            node = merged
            *parents, leaf = key.split(".")
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"config has no section '{part}' (in '{key}').")
                node = node[part]
            node[leaf] = value
        return config_from_dict(type(self), merged)


# ------------------------------------------------------------------------ to / from plain data
def config_to_dict(config) -> dict[str, Any]:
    """Plain nested dict (tuples become lists; enums their value; None values are dropped as TOML
    has no null and the default of an optional field is None)."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None:
            continue
        out[field.name] = _to_plain(value)
    return out


def _to_plain(value):
    if dataclasses.is_dataclass(value):
        return config_to_dict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def config_from_dict(cls, data: dict[str, Any], *, path: str = ""):
    """Build ``cls`` from a plain dict, checking every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{path or cls.__name__}' must be a table, got {type(data).__name__}.")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = _join(path, unknown[0])
        raise ConfigError(f"unknown config key '{key}' (known keys here: {', '.join(sorted(fields))}).")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], _join(path, name))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config '{path or cls.__name__}' is invalid: {err}") from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, key: str):
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(repr, choices))}, got {value!r}.")
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        return config_from_dict(tp, value, path=key)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise ConfigError(f"config key '{key}' must be one of {choices}, got {value!r}.") from None
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {type(value).__name__} {value!r}.")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}' must have {len(args)} items, got {len(value)}.")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a table, got {type(value).__name__}.")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {type(value).__name__} {value!r}.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {type(value).__name__} {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {type(value).__name__} {value!r}.")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}.")


# ------------------------------------------------------------------------ TOML
def config_to_toml(config, *, section: str = "config") -> str:
    """TOML text with the schema version and the config under ``[section]``."""
    import tomli_w

    return tomli_w.dumps({"schema": {"name": type(config).__name__, "version": type(config).schema_version},
                          section: config_to_dict(config)})


def config_from_toml(cls, text: str, *, section: str = "config", source: str = "config"):
    """Parse TOML written by :func:`config_to_toml` (or by hand) into ``cls``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source} is not valid TOML: {err}.") from None
    return config_from_mapping(cls, data, section=section, source=source)


def config_from_mapping(cls, data: dict, *, section: str = "config", source: str = "config"):
    schema = data.get("schema", {})
    version = schema.get("version", cls.schema_version) if isinstance(schema, dict) else None
    if not isinstance(version, int):
        raise ConfigError(f"{source} has an invalid schema version {version!r}.")
    if version > cls.schema_version:
        raise ConfigError(f"{source} was written by a newer version (schema {version}; this version reads "
                          f"up to {cls.schema_version}): upgrade fourd-studio.")
    return config_from_dict(cls, data.get(section, {}))


def config_fields(cls) -> list[tuple[str, Any, Any, str]]:
    """``(dotted name, type, default, help)`` for every leaf field: the studio's advanced panel and
    the CLI's ``--set`` help are generated from this. Help comes from ``field(metadata={"help": ...})``."""
    out = []
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        default = (field.default if field.default is not dataclasses.MISSING
                   else field.default_factory() if field.default_factory is not dataclasses.MISSING
                   else None)
        if dataclasses.is_dataclass(tp):
            out += [(f"{field.name}.{n}", t, d, h) for n, t, d, h in config_fields(tp)]
        else:
            out.append((field.name, tp, default, field.metadata.get("help", "")))
    return out


__all__ = [
    "Config", "ConfigError", "PRESET_NAMES", "config_fields", "config_from_dict", "config_from_mapping",
    "config_from_toml", "config_to_dict", "config_to_toml",
]


def parse_overrides(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """Command-line ``KEY=VALUE`` overrides as a dict; values read as TOML (``20`` -> 20, ``true`` -> True,
    ``[1, 2]`` -> a list), anything else kept as a string. A malformed item is a :class:`ConfigError`."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got '{item}'.")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value.strip()
    return out
