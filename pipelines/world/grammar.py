"""The scene grammar of the procedural world: what a sample is, how a seed picks one, how it is described.

A sample is one object: a shape, a palette colour, a material, a size, a motion and a heading
(yaw). Every field is drawn from ``numpy.random.default_rng(seed)``, so a seed names a scene
exactly and forever (PCG64 streams are stable across platforms and numpy versions).

    spec = sample_spec(7)                      # WorldSpec(shape='torus', colour='teal', ...)
    spec.caption()                             # 'a large glossy teal torus spinning' (canonical)
    spec.caption(np.random.default_rng(1))     # 'a big shiny turquoise donut that twirls' (synonyms)
    attributes_from_text("a crimson ball hops up and down")   # {'shape': 'sphere', 'colour': 'red', ...}
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

import numpy as np

SHAPES = ("sphere", "cube", "torus", "cone", "cylinder", "capsule", "walker")
MOTIONS = ("still", "bounce", "spin", "sway", "pulse", "orbit", "walk")
MATERIALS = ("matte", "glossy")
SIZES = ("small", "medium", "large")

# Albedo in display RGB; hues far enough apart that shading and the surface pattern never make
# two of them look alike (the attribute classifier must separate them).
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.10),
    "orange": (0.96, 0.50, 0.08),
    "yellow": (0.95, 0.86, 0.16),
    "green": (0.20, 0.70, 0.20),
    "teal": (0.08, 0.62, 0.62),
    "blue": (0.14, 0.30, 0.90),
    "purple": (0.55, 0.20, 0.80),
    "pink": (0.96, 0.48, 0.72),
    "brown": (0.50, 0.30, 0.14),
    "white": (0.92, 0.92, 0.92),
}
COLOURS = tuple(PALETTE)

# World radius of the object's bounding sphere for each size (motions stay inside [-1, 1]^3).
SIZE_RADIUS = {"small": 0.36, "medium": 0.46, "large": 0.56}

# Only the jointed figure can walk; every other motion applies to every shape.
_MOTIONS_FOR = {shape: tuple(m for m in MOTIONS if m != "walk") for shape in SHAPES}
_MOTIONS_FOR["walker"] = MOTIONS

SHAPE_WORDS = {
    "sphere": ("sphere", "ball", "orb"),
    "cube": ("cube", "box", "block"),
    "torus": ("torus", "ring", "donut"),
    "cone": ("cone", "traffic cone", "pointed cone"),
    "cylinder": ("cylinder", "tube", "pillar"),
    "capsule": ("capsule", "pill", "lozenge"),
    "walker": ("walker", "stick figure", "little figure", "mannequin"),
}
COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "tangerine"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "leaf-green"),
    "teal": ("teal", "turquoise", "cyan"),
    "blue": ("blue", "cobalt", "azure"),
    "purple": ("purple", "violet", "lilac"),
    "pink": ("pink", "rose", "magenta"),
    "brown": ("brown", "chocolate", "chestnut"),
    "white": ("white", "ivory", "snowy"),
}
MATERIAL_WORDS = {"matte": ("matte", "dull", "chalky"), "glossy": ("glossy", "shiny", "polished")}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "medium": ("", "medium-sized"), "large": ("large", "big")}
# (participle phrases, verb phrases): "a red ball bouncing" / "a red ball that hops up and down".
MOTION_WORDS = {
    "still": (("standing still", "at rest", "resting"), ("stays still", "does not move")),
    "bounce": (("bouncing", "hopping up and down"), ("bounces", "hops up and down")),
    "spin": (("spinning", "twirling", "rotating in place"), ("spins", "twirls", "turns around")),
    "sway": (("swaying", "rocking side to side", "wobbling"), ("sways", "rocks back and forth")),
    "pulse": (("pulsing", "growing and shrinking", "throbbing"), ("pulses", "grows and shrinks")),
    "orbit": (("orbiting", "circling around", "moving in a circle"), ("orbits", "circles around")),
    "walk": (("walking", "strolling", "striding along"), ("walks", "strolls forward")),
}


@dataclass(frozen=True)
class WorldSpec:
    """One procedural scene. ``yaw`` (degrees) turns the object about +Z; ``seed`` is where it came from
    (-1 for a hand-made spec)."""

    shape: str
    colour: str
    motion: str
    material: str = "matte"
    size: str = "medium"
    yaw: float = 0.0
    seed: int = -1

    def __post_init__(self) -> None:
        for name, allowed in (("shape", SHAPES), ("colour", COLOURS), ("motion", MOTIONS),
                              ("material", MATERIALS), ("size", SIZES)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"unknown {name} '{value}' (choose from: {', '.join(allowed)})")
        if self.motion not in _MOTIONS_FOR[self.shape]:
            raise ValueError(f"a {self.shape} cannot {self.motion}; only the walker walks")

    @property
    def albedo(self) -> tuple[float, float, float]:
        return PALETTE[self.colour]

    @property
    def radius(self) -> float:
        return SIZE_RADIUS[self.size]

    def labels(self) -> dict[str, int]:
        """Class indices of each attribute (into SHAPES, COLOURS, MOTIONS, MATERIALS, SIZES)."""
        return {"shape": SHAPES.index(self.shape), "colour": COLOURS.index(self.colour),
                "motion": MOTIONS.index(self.motion), "material": MATERIALS.index(self.material),
                "size": SIZES.index(self.size)}

    def caption(self, rng: np.random.Generator | None = None) -> str:
        """Canonical caption without ``rng``; a random phrasing with synonyms with one."""
        return caption(self, rng)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> WorldSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown world spec field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


def motions_for(shape: str) -> tuple[str, ...]:
    return _MOTIONS_FOR[shape]


def sample_spec(seed: int) -> WorldSpec:
    """The scene that ``seed`` names: uniform over shapes, colours, materials, sizes and allowed motions."""
    rng = np.random.default_rng(seed)
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = COLOURS[rng.integers(len(COLOURS))]
    material = MATERIALS[rng.integers(len(MATERIALS))]
    size = SIZES[rng.integers(len(SIZES))]
    allowed = _MOTIONS_FOR[shape]
    # The walker walks half of the time, so that 'walk' is as frequent as the other motions.
    if shape == "walker" and rng.random() < 0.5:
        motion = "walk"
    else:
        motion = allowed[rng.integers(len(allowed))]
    yaw = float(rng.uniform(-180.0, 180.0))
    return WorldSpec(shape, colour, motion, material, size, round(yaw, 3), int(seed))


def caption(spec: WorldSpec, rng: np.random.Generator | None = None) -> str:
    """"a large glossy teal torus spinning" (canonical) or a synonym phrasing drawn from ``rng``."""
    if rng is None:
        size = "" if spec.size == "medium" else spec.size
        words = [size, spec.material, spec.colour, spec.shape, MOTION_WORDS[spec.motion][0][0]]
        return "a " + " ".join(w for w in words if w)

    def pick(options):
        return options[rng.integers(len(options))]

    adjectives = []
    if rng.random() < 0.6:
        adjectives.append(pick(SIZE_WORDS[spec.size]))
    if rng.random() < 0.6:
        adjectives.append(pick(MATERIAL_WORDS[spec.material]))
    adjectives.append(pick(COLOUR_WORDS[spec.colour]))
    noun = " ".join(a for a in adjectives if a) + " " + pick(SHAPE_WORDS[spec.shape])
    participles, verbs = MOTION_WORDS[spec.motion]
    template = rng.integers(3)
    if template == 0:
        text = f"{noun} {pick(participles)}"
    elif template == 1:
        text = f"{noun} that {pick(verbs)}"
    else:
        text = f"{noun} {pick(verbs)}"
    article = "an" if text[0] in "aeiou" else "a"
    return f"{article} {text}"


def _phrase_index(table: dict[str, tuple]) -> list[tuple[str, str]]:
    """(phrase, value) pairs, longest phrase first so 'traffic cone' wins over 'cone'."""
    pairs = []
    for value, options in table.items():
        flat = options if isinstance(options[0], str) else [w for group in options for w in group]
        pairs += [(w, value) for w in flat if w]
    pairs += [(v, v) for v in table]
    return sorted(set(pairs), key=lambda p: -len(p[0]))


_TABLES = {"shape": SHAPE_WORDS, "colour": COLOUR_WORDS, "material": MATERIAL_WORDS, "size": SIZE_WORDS,
           "motion": MOTION_WORDS}
_INDEX = {name: _phrase_index(table) for name, table in _TABLES.items()}
# Verb forms not in the caption tables that users type.
_INDEX["motion"] += [(w, m) for m, words in {
    "bounce": ("bounce", "jump", "jumping", "hop"), "spin": ("spin", "rotate", "rotating", "turning"),
    "sway": ("sway", "rock", "rocking"), "pulse": ("pulse", "pulsating", "breathing"),
    "orbit": ("orbit", "circling"), "walk": ("walk",), "still": ("still", "static", "motionless"),
}.items() for w in words]
_INDEX["shape"] += [("figure", "walker"), ("person", "walker"), ("robot", "walker"), ("man", "walker")]


def attributes_from_text(text: str) -> dict[str, str]:
    """The attributes a prompt names, by the caption grammar's words and synonyms.

    Returns only the attributes found, e.g. ``{'shape': 'sphere', 'colour': 'red', 'motion': 'bounce'}``.
    """
    lowered = " " + re.sub(r"[^a-z\- ]+", " ", text.lower()) + " "
    found = {}
    for name, index in _INDEX.items():
        # Earliest mention wins (so "a ball circling a box" is a ball); ties go to the longest phrase.
        best = None
        for phrase, value in index:
            match = re.search(rf"(?<![a-z\-]){re.escape(phrase)}(?![a-z\-])", lowered)
            if match and (best is None or match.start() < best[0]):
                best = (match.start(), value)
        if best is not None:
            found[name] = best[1]
    return found
