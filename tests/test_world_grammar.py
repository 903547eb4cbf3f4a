"""The scene grammar: seeds name scenes, captions come back to their attributes, bad names are refused."""

import numpy as np
import pytest

from pipelines.world.grammar import COLOURS, MOTIONS, PALETTE, SHAPES, WorldSpec, attributes_from_text, sample_spec


def test_a_seed_names_one_scene_forever():
    assert sample_spec(123) == sample_spec(123)
    assert sample_spec(123) != sample_spec(124)
    assert sample_spec(123).seed == 123


def test_the_grammar_covers_every_attribute():
    specs = [sample_spec(s) for s in range(600)]
    assert {s.shape for s in specs} == set(SHAPES)
    assert {s.colour for s in specs} == set(COLOURS)
    assert {s.motion for s in specs} == set(MOTIONS)
    assert len(PALETTE) >= 10
    assert all(s.motion != "walk" or s.shape == "walker" for s in specs)


def test_synonym_captions_parse_back_to_their_attributes():
    for seed in range(300):
        spec = sample_spec(seed)
        for text in (spec.caption(), spec.caption(np.random.default_rng(seed))):
            found = attributes_from_text(text)
            assert (found.get("shape"), found.get("colour"), found.get("motion")) == \
                (spec.shape, spec.colour, spec.motion), text


def test_the_brief_examples_parse():
    assert attributes_from_text("a red ball bouncing") == {"shape": "sphere", "colour": "red", "motion": "bounce"}
    found = attributes_from_text("A crimson sphere hops up and down!")
    assert (found["shape"], found["colour"], found["motion"]) == ("sphere", "red", "bounce")
    assert attributes_from_text("a dragon") == {}


def test_unknown_names_are_refused_with_the_name():
    with pytest.raises(ValueError, match="unknown shape 'dragon'"):
        WorldSpec("dragon", "red", "still")
    with pytest.raises(ValueError, match="only the walker walks"):
        WorldSpec("cube", "red", "walk")
    with pytest.raises(ValueError, match="unknown world spec field"):
        WorldSpec.from_dict({"shape": "cube", "colour": "red", "motion": "spin", "texture": "wood"})
    spec = sample_spec(5)
    assert WorldSpec.from_dict(spec.to_dict()) == spec
