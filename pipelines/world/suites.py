"""Evaluation suites: TOML lists of world scenes that a pipeline is run on and scored against.

    suite = load_suite("smoke")                 # a bundled suite by name, or a path to a .toml file
    suite.cases[0].spec, suite.cases[0].prompt  # WorldSpec('sphere', 'red', 'bounce', ...), 'a large ...'

A suite file::

    [suite]                      # optional
    name = "smoke"
    description = "..."
    resolution = 64              # held-out views are rendered at this size (default 64)

    [[case]]
    shape = "sphere"             # a scene given by its attributes (shape, colour and motion are needed) ...
    colour = "red"
    motion = "bounce"
    size = "large"               # optional: material, size, yaw (degrees)

    [[case]]
    world_seed = 7               # ... or by a world seed (sample_spec), any attribute above overriding it
    seed = 3                     # optional: the pipeline run's seed (default: the suite's, else 0)
    prompt = "a teal ring"       # optional: the prompt given to text pipelines (default: the caption)
    name = "teal-ring"           # optional: the case's folder name (default: NN-colour-shape-motion)

Parsing is strict: an unknown key, attribute value or table is one sentence naming the file and line.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipelines.world.grammar import COLOURS, MATERIALS, MOTIONS, SHAPES, SIZES, WorldSpec, sample_spec

SUITES_DIR = Path(__file__).resolve().parent / "suites"
CASE_KEYS = ("name", "world_seed", "shape", "colour", "color", "motion", "material", "size", "yaw", "seed",
             "prompt")
SUITE_KEYS = ("name", "description", "resolution", "seed")
_CHOICES = {"shape": SHAPES, "colour": COLOURS, "motion": MOTIONS, "material": MATERIALS, "size": SIZES}


class SuiteError(ValueError):
    """A suite file cannot be used; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Case:
    """One scene of a suite: its ground truth ``spec``, the ``prompt`` text pipelines get and the run ``seed``."""

    name: str
    spec: WorldSpec
    prompt: str
    seed: int = 0
    line: int = 0


@dataclass(frozen=True)
class Suite:
    name: str
    cases: tuple[Case, ...]
    description: str = ""
    resolution: int = 64
    path: Path | None = None
    text: str = field(default="", repr=False)


def suite_names() -> list[str]:
    """The bundled suites (``smoke``, ``standard``, ...)."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def suite_path(name_or_path: str | Path) -> Path:
    """The file of a bundled suite by name, or the given path; one sentence when neither exists."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = SUITES_DIR / f"{name_or_path}.toml"
    if bundled.is_file():
        return bundled
    raise SuiteError(f"no suite '{name_or_path}': give a .toml file or a bundled suite name "
                     f"({', '.join(suite_names())}).")


def load_suite(name_or_path: str | Path) -> Suite:
    path = suite_path(name_or_path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise SuiteError(f"suite file '{path}' cannot be read ({err}).") from None
    return parse_suite(text, source=str(path), default_name=path.stem, path=path)


def parse_suite(text: str, source: str = "suite", default_name: str = "suite", path: Path | None = None) -> Suite:
    """A :class:`Suite` from TOML ``text``; errors name ``source`` and the line."""
    lines = _Lines(text, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{source} is not valid TOML ({err}).") from None
    for key in data:
        if key not in ("suite", "case"):
            raise lines.error(lines.table_or_key(key), f"unknown table or key '{key}' (a suite has [suite] and "
                                                       "[[case]] tables)")
    head = data.get("suite", {})
    if not isinstance(head, dict):
        raise lines.error(lines.table_or_key("suite"), "'suite' must be a table")
    head_line = lines.table_or_key("suite")
    for key in head:
        if key not in SUITE_KEYS:
            raise lines.error(lines.key_in(head_line, key), f"unknown suite key '{key}' (known: "
                                                            f"{', '.join(SUITE_KEYS)})")
    resolution = _integer(head, "resolution", 64, lines, head_line, minimum=8)
    suite_seed = _integer(head, "seed", 0, lines, head_line)
    raw_cases = data.get("case", [])
    if not isinstance(raw_cases, list) or not raw_cases:
        raise SuiteError(f"{source} has no cases: add at least one [[case]] table.")
    cases: list[Case] = []
    for i, raw in enumerate(raw_cases):
        start = lines.case_start(i)
        cases.append(_case(raw, i, start, suite_seed, lines))
    seen: dict[str, int] = {}
    for case in cases:
        if case.name in seen:
            raise lines.error(case.line, f"case name '{case.name}' is used twice (first on line {seen[case.name]})")
        seen[case.name] = case.line
    name = head.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise lines.error(lines.key_in(head_line, "name"), "suite name must be a non-empty string")
    return Suite(name, tuple(cases), str(head.get("description", "")), resolution, path, text)


def _case(raw, index: int, start: int, suite_seed: int, lines: _Lines) -> Case:
    if not isinstance(raw, dict):
        raise lines.error(start, f"case {index + 1} must be a table")
    for key in raw:
        if key not in CASE_KEYS:
            raise lines.error(lines.key_in(start, key), f"unknown case key '{key}' (known: "
                                                        f"{', '.join(k for k in CASE_KEYS if k != 'color')})")
    if "colour" in raw and "color" in raw:
        raise lines.error(lines.key_in(start, "color"), "give 'colour' or 'color', not both")
    raw = dict(raw)
    if "color" in raw:
        raw["colour"] = raw.pop("color")
    for key, allowed in _CHOICES.items():
        if key in raw and raw[key] not in allowed:
            at = lines.key_in(start, "color" if key == "colour" and lines.has_key(start, "color") else key)
            raise lines.error(at, f"unknown {key} {raw[key]!r} (choose from: {', '.join(allowed)})")
    if "world_seed" in raw:
        seed = _integer(raw, "world_seed", 0, lines, start, minimum=0)
        spec = sample_spec(seed)
        changes = {k: raw[k] for k in ("shape", "colour", "motion", "material", "size") if k in raw}
    else:
        missing = [k for k in ("shape", "colour", "motion") if k not in raw]
        if missing:
            raise lines.error(start, f"case {index + 1} needs a world_seed or all of shape, colour and motion "
                                     f"(missing: {', '.join(missing)})")
        spec = None
        changes = {k: raw[k] for k in ("shape", "colour", "motion", "material", "size") if k in raw}
    if "yaw" in raw:
        yaw = raw["yaw"]
        if isinstance(yaw, bool) or not isinstance(yaw, (int, float)):
            raise lines.error(lines.key_in(start, "yaw"), f"yaw must be a number of degrees, got {yaw!r}")
        changes["yaw"] = float(yaw)
    try:
        spec = replace(spec, **changes) if spec is not None else WorldSpec(**changes)
    except ValueError as err:  # e.g. "a sphere cannot walk"
        key = "motion" if "motion" in raw else "shape"
        raise lines.error(lines.key_in(start, key), str(err)) from None
    run_seed = _integer(raw, "seed", suite_seed, lines, start)
    prompt = raw.get("prompt", spec.caption())
    if not isinstance(prompt, str) or not prompt.strip():
        raise lines.error(lines.key_in(start, "prompt"), "prompt must be a non-empty string")
    name = raw.get("name", f"{index + 1:02d}-{spec.colour}-{spec.shape}-{spec.motion}")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise lines.error(lines.key_in(start, "name"), f"case name {name!r} must be letters, digits, '-', '_' "
                                                       "or '.' (it names a folder)")
    return Case(name, spec, prompt, run_seed, start)


def _integer(table: dict, key: str, default: int, lines: _Lines, start: int, minimum: int | None = None) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = f" of at least {minimum}" if minimum is not None else ""
        raise lines.error(lines.key_in(start, key), f"{key} must be an integer{bound}, got {value!r}")
    return value


class _Lines:
    """Line numbers for a TOML text (tomllib has none): where each ``[[case]]`` starts and where a key is set."""

    _TABLE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines = text.splitlines()
        self.tables = []  # (line number, name, is_array)
        for n, line in enumerate(self.lines, 1):
            match = self._TABLE.match(line)
            if match:
                self.tables.append((n, match.group(1).strip("\"' "), line.strip().startswith("[[")))
        self.case_lines = [n for n, name, array in self.tables if name == "case" and array]

    def error(self, line: int, message: str) -> SuiteError:
        where = f"{self.source}, line {line}" if line else self.source
        return SuiteError(f"{where}: {message}.")

    def case_start(self, index: int) -> int:
        return self.case_lines[index] if index < len(self.case_lines) else 0

    def _section(self, start: int) -> range:
        """Lines of the table that begins at ``start`` (0: the top level, before any table)."""
        following = [n for n, _, _ in self.tables if n > start]
        end = following[0] if following else len(self.lines) + 1
        return range(start + 1 if start else 1, end)

    def key_in(self, start: int, key: str) -> int:
        """The line in the table starting at ``start`` that sets ``key`` (else the table's own line)."""
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for n in self._section(start):
            if pattern.match(self.lines[n - 1]):
                return n
        return start

    def has_key(self, start: int, key: str) -> bool:
        return self.key_in(start, key) != start

    def table_or_key(self, name: str) -> int:
        for n, table, _ in self.tables:
            if table == name:
                return n
        return self.key_in(0, name)
