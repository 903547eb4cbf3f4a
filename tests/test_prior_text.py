"""The field prior's tokenizer and prompt vocabulary."""

from __future__ import annotations

import torch

from pipelines.models.text import PromptTokenizer, TextEncoder
from pipelines.models.vocabulary import prompt_vocabulary, unknown_words, vocabulary_warning
from pipelines.world import grammar
from pipelines.world.grammar import sample_spec


def test_vocabulary_covers_every_caption_the_world_writes():
    vocab = set(prompt_vocabulary())
    for name in grammar.SHAPES + grammar.COLOURS + grammar.MOTIONS:
        assert name in vocab
    for seed in range(200):
        spec = sample_spec(seed)
        import numpy as np

        assert unknown_words(spec.caption(np.random.default_rng(seed))) == []
        assert unknown_words(spec.caption()) == []


def test_unknown_words_are_named_and_map_to_unk():
    assert unknown_words("A Red DRAGON bouncing over the dragon") == ["dragon", "over", "the"]
    warning = vocabulary_warning("a red dragon")
    assert "'dragon'" in warning and "sphere" in warning
    assert vocabulary_warning("a red ball bouncing") is None
    tok = PromptTokenizer(length=8)
    ids = tok.encode(["a red dragon", "", "a leaf-green ball " * 10])
    assert ids.shape == (3, 8)
    assert ids[0, 0] == tok.bos_id and ids[0, 3] == tok.unk_id and ids[0, 4] == tok.pad_id
    assert ids[1, 0] == tok.bos_id and (ids[1, 1:] == tok.pad_id).all()
    assert (ids[2] != tok.unk_id).all()  # hyphenated word stays one known token; long prompts are truncated
    features = TextEncoder(tok.vocab_size, width=16, layers=1, heads=2, length=8)(ids)
    assert features.shape == (3, 8, 16) and torch.isfinite(features).all()


def test_a_prompts_motion_is_read_and_a_weak_one_is_named():
    from pipelines.models.vocabulary import bundled_shape_by_motion, motion_warning, prompt_warning

    figures = {"orbit": {"prompts": 10, "shape": 0.2}, "bounce": {"prompts": 10, "shape": 0.9}}
    warning = motion_warning("a pink ball that orbits", figures)
    assert "objects orbiting" in warning and "2 of 10" in warning
    assert motion_warning("a pink ball bouncing", figures) is None
    assert "objects orbiting" in motion_warning("a small pink ball circling around", figures)  # any of its phrases
    assert motion_warning("a pink ring", figures) is None  # no motion named
    assert motion_warning("a pink ball that orbits", {}) is None  # a prior without an evaluation says nothing
    both = prompt_warning("a pink dragon that orbits", figures)
    assert both.index("'dragon'") < both.index("objects orbiting")
    assert prompt_warning("a pink ball bouncing", figures) is None
    # the bundled prior's own evaluation: its orbiting prompts are weak, its spinning ones are not
    bundled = bundled_shape_by_motion()
    assert bundled["orbit"]["shape"] < 0.5 <= bundled["spin"]["shape"]
    assert motion_warning("a blue cube that orbits") and motion_warning("a blue cube spinning") is None
