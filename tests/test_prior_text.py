"""The field prior's tokenizer and prompt vocabulary."""

from __future__ import annotations

import torch

from pipelines.models.text import PromptTokenizer, TextEncoder, prompt_vocabulary, unknown_words, vocabulary_warning
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
