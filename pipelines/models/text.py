"""The prompt tokenizer and the small text encoder trained with the field prior.

Tokenizer: a word-level vocabulary built from the procedural world's caption grammar (every word its
captions and synonym tables use) plus ``[UNK]``, run by the ``tokenizers`` library. CLIP's BPE vocabulary
ships on PyPI only inside ``open_clip_torch`` / ``clip-anytorch``, which pull in torchvision and timm (and with
them a second torch); a model trained only on the world's captions gains nothing from 49k sub-words it never
saw, and the word-level vocabulary lets :func:`unknown_words` name exactly the words it will ignore.

    tok = PromptTokenizer()
    tok.encode(["a red ball bouncing"])      # LongTensor [1, 16]: [BOS] a red ball bouncing [PAD] ...
    unknown_words("a red dragon bouncing")   # ['dragon']
"""

from __future__ import annotations

import functools
import re

import torch
from torch import nn

from pipelines.world import grammar

PAD, UNK, BOS = "[PAD]", "[UNK]", "[BOS]"
SPECIAL = (PAD, UNK, BOS)
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


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
    return (f"The bundled prior does not know the word(s) {', '.join(repr(w) for w in unknown)} and will ignore "
            f"them; it knows shapes ({', '.join(grammar.SHAPES)}), colours ({', '.join(grammar.COLOURS)}), "
            f"motions ({', '.join(grammar.MOTIONS)}), materials and sizes (see `prompt_vocabulary()`).")


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
