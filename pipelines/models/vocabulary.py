"""What the in-house prior's prompts may say, and what it is known to draw badly. No torch: the studio checks
prompts as they are typed.

The vocabulary is every word of the procedural world's caption grammar (the prior's training captions). A
prompt's motion is read by the same grammar (``grammar.attributes_from_text``), and a prior folder's evaluation
figures (``evaluation/evaluation.json``, written by :mod:`pipelines.models.evaluate`) say how often it drew that
motion's objects the right shape.

    print(describe_vocabulary())                  # what `fourd models words` prints
    unknown_words("a red dragon bouncing")        # ['dragon']
    motion_warning("a pink ball that orbits")     # one sentence: the bundled prior rarely gets its shape right
    prompt_warning("a pink dragon that orbits")   # both, as one message (the studio, the CLI, the priors)
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from pipelines.world import grammar

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
#: Under this share of right shapes in a prior's evaluation, a prompt with that motion gets a warning.
WEAK_SHAPE = 0.5


def split_words(text: str) -> list[str]:
    """Lower-case words of ``text`` (hyphenated words stay whole: 'leaf-green')."""
    return _WORD.findall(text.lower())


@functools.lru_cache(maxsize=1)
def grammar_words() -> tuple[str, ...]:
    """Every word the world's caption grammar can produce, sorted (the vocabulary without special tokens)."""
    phrases: set[str] = {"a", "an", "that"}
    for table in (grammar.SHAPE_WORDS, grammar.COLOUR_WORDS, grammar.MATERIAL_WORDS, grammar.SIZE_WORDS):
        for value, options in table.items():
            phrases.add(value)
            phrases.update(options)
    for value, (participles, verbs) in grammar.MOTION_WORDS.items():
        phrases.add(value)
        phrases.update(participles)
        phrases.update(verbs)
    words = {w for p in phrases for w in split_words(p)}
    return tuple(sorted(words))


def prompt_vocabulary() -> list[str]:
    """The words the in-house prior knows (what a prompt should be written with)."""
    return list(grammar_words())


def unknown_words(prompt: str) -> list[str]:
    """Words of ``prompt`` outside the prior's vocabulary, in order, without repeats (they map to [UNK])."""
    known = set(grammar_words())
    seen: list[str] = []
    for word in split_words(prompt):
        if word not in known and word not in seen:
            seen.append(word)
    return seen


def vocabulary_warning(prompt: str) -> str | None:
    """One sentence for the user when ``prompt`` has words the bundled prior ignores, else None."""
    unknown = unknown_words(prompt)
    if not unknown:
        return None
    return (f"The bundled prior does not know {', '.join(repr(w) for w in unknown)} and will ignore "
            f"{'it' if len(unknown) == 1 else 'them'}; it knows shapes ({', '.join(grammar.SHAPES)}), colours, "
            f"materials, sizes and motions (`fourd models words` lists them all).")


def describe_vocabulary() -> str:
    """The prior's vocabulary for people: one line per kind of word (shapes, colours, materials, sizes, motions),
    each naming its values with their synonyms ("torus (ring, donut)")."""
    lines = []
    for kind, table in (("shapes", grammar.SHAPE_WORDS), ("colours", grammar.COLOUR_WORDS),
                        ("materials", grammar.MATERIAL_WORDS), ("sizes", grammar.SIZE_WORDS)):
        entries = []
        for value, options in table.items():
            others = [o for o in options if o and o != value]
            entries.append(f"{value} ({', '.join(others)})" if others else value)
        lines.append(f"{kind}: {'; '.join(entries)}")
    motions = [f"{value} ({', '.join((*participles, *verbs))})"
               for value, (participles, verbs) in grammar.MOTION_WORDS.items()]
    lines.append(f"motions: {'; '.join(motions)}")
    return "\n".join(lines)


def shape_by_motion(folder: str | Path) -> dict[str, dict]:
    """``{motion: {"prompts": n, "shape": accuracy}}`` of the samples in a prior folder's evaluation, or {} when
    the folder has none."""
    path = Path(folder) / "evaluation" / "evaluation.json"
    try:
        figures = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return figures.get("shape by motion", {}).get("samples", {})


@functools.lru_cache(maxsize=1)
def bundled_shape_by_motion() -> dict[str, dict]:
    """:func:`shape_by_motion` of the bundled prior ({} when it is not installed)."""
    from assets import asset_path

    try:
        return shape_by_motion(asset_path("checkpoints", "inhouse-field-prior"))
    except FileNotFoundError:
        return {}


def motion_warning(prompt: str, figures: dict[str, dict] | None = None) -> str | None:
    """One sentence when ``prompt`` names a motion whose objects the prior rarely draws the right shape
    (under :data:`WEAK_SHAPE` in its evaluation, ``figures``; the bundled prior's by default), else None."""
    figures = bundled_shape_by_motion() if figures is None else figures
    motion = grammar.attributes_from_text(prompt).get("motion")
    f = figures.get(motion, {})
    if not f.get("prompts") or f["shape"] >= WEAK_SHAPE:
        return None
    right = round(f["shape"] * f["prompts"])
    return (f"With the bundled prior, objects {grammar.MOTION_WORDS[motion][0][0]} come out as scattered blocks "
            f"(the right shape in {right} of {f['prompts']} of its test prompts).")


def prompt_warning(prompt: str, figures: dict[str, dict] | None = None) -> str | None:
    """Everything to tell the user about ``prompt`` before a run, as one message: words the prior ignores
    (:func:`vocabulary_warning`), then a motion it rarely draws well (:func:`motion_warning`); None when neither."""
    found = [w for w in (vocabulary_warning(prompt), motion_warning(prompt, figures)) if w]
    return " ".join(found) or None
