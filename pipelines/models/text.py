"""The prompt tokenizer and the small text encoder trained with the field prior.

Tokenizer: a word-level vocabulary built from the procedural world's caption grammar (every word its
captions and synonym tables use) plus ``[UNK]``, run by the ``tokenizers`` library. CLIP's BPE vocabulary
ships on PyPI only inside ``open_clip_torch`` / ``clip-anytorch``, which pull in torchvision and timm (and with
them a second torch); a model trained only on the world's captions gains nothing from 49k sub-words it never
saw, and the word-level vocabulary lets ``vocabulary.unknown_words`` name exactly the words it will ignore.

    tok = PromptTokenizer()
    tok.encode(["a red ball bouncing"])      # LongTensor [1, 16]: [BOS] a red ball bouncing [PAD] ...

The vocabulary itself, and the prompt checks built on it, live in :mod:`pipelines.models.vocabulary` (no torch).
"""

from __future__ import annotations

import torch
from torch import nn

from pipelines.models.vocabulary import grammar_words

PAD, UNK, BOS = "[PAD]", "[UNK]", "[BOS]"
SPECIAL = (PAD, UNK, BOS)


class PromptTokenizer:
    """Word-level tokenizer over :func:`grammar_words`; ids 0..2 are [PAD], [UNK], [BOS]."""

    def __init__(self, length: int = 16) -> None:
        from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

        vocab = {w: i for i, w in enumerate(SPECIAL + grammar_words())}
        tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        tok.normalizer = normalizers.Lowercase()
        # Hyphenated words stay whole, everything that is not a letter separates words.
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[^a-z\-]+"), behavior="removed")
        self._tok = tok
        self.length = length
        self.vocab_size = len(vocab)
        self.pad_id, self.unk_id, self.bos_id = 0, 1, 2

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Token ids [B, length]: [BOS], the words (truncated), then [PAD]. An empty prompt is [BOS] + pads."""
        out = torch.full((len(prompts), self.length), self.pad_id, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids = [self.bos_id] + self._tok.encode(prompt).ids
            ids = ids[:self.length]
            out[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


class TextEncoder(nn.Module):
    """A small transformer over prompt tokens: ids [B, L] -> token features [B, L, D].

    Position 0 ([BOS]) is the pooled prompt embedding used by adaLN; the whole sequence feeds the
    cross-attention. Trained from scratch jointly with the denoiser.
    """

    def __init__(self, vocab_size: int, width: int = 128, layers: int = 2, heads: int = 4, length: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.position[: ids.shape[1]]
        return self.norm(self.layers(x))
