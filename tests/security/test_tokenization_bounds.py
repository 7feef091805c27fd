"""Tokenization cost is bounded by the token limit, not by the size of the text."""

from __future__ import annotations

import time

import pytest
from seqlens.schema import TokenInput
from seqlens.tokenizers import WORD_CHARS_PER_TOKEN, Tokenizer, Vocabulary

VOCAB = Vocabulary(["<pad>", "<unk>", "good", "film"])


@pytest.mark.parametrize("kind", ["word", "char"])
def test_limit_stops_tokenizing_early(kind: str) -> None:
    tok = Tokenizer(TokenInput.model_validate({"tokenizer": kind}), VOCAB)
    text = "good film " * 500_000  # 5 MB
    start = time.perf_counter()
    spans = tok.encode(text, limit=65)
    elapsed = time.perf_counter() - start
    # full tokenization of such a text takes seconds; stopping at the limit takes ~1 ms (the
    # bound is loose so that a busy VM does not fail it)
    assert len(spans) == 65 and elapsed < 0.5, elapsed
    assert [s.text for s in spans[:3]] == (["good", "film", "good"] if kind == "word" else ["g", "o", "o"])
    assert tok.encode(text[:30], limit=None) == tok.encode(text[:30], limit=1000)  # same tokens, same offsets


def test_character_cap_per_tokenizer() -> None:
    assert Tokenizer(TokenInput.model_validate({"tokenizer": "char"}), VOCAB).max_chars(64) == 64
    assert Tokenizer(TokenInput.model_validate({"tokenizer": "word"}), VOCAB).max_chars(64) == 64 * WORD_CHARS_PER_TOKEN


@pytest.mark.parametrize("text", ["a'" * 100_000, "'" * 200_000, "a" * 200_000, "\u0301" * 200_000,
                                  "é\u200d" * 100_000])
def test_no_pathological_regex_backtracking(text: str) -> None:
    """Inputs shaped against the word pattern ``\\w+(?:'\\w+)*|[^\\w\\s]`` stay linear."""
    tok = Tokenizer(TokenInput.model_validate({"tokenizer": "word"}), VOCAB)
    start = time.perf_counter()
    tok.encode(text, limit=10)
    tok.encode(text[:4096])
    # linear: ~0.1 s here; catastrophic backtracking on 200k characters would take minutes
    assert time.perf_counter() - start < 3.0
