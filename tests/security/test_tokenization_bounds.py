"""Tokenization cost is bounded by the token limit, not by the size of the text."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from seqlens.schema import TokenInput
from seqlens.tokenizers import WORD_CHARS_PER_TOKEN, Tokenizer, Vocabulary

VOCAB = Vocabulary(["<pad>", "<unk>", "good", "film"])


@pytest.mark.parametrize("kind", ["word", "char"])
def test_limit_stops_tokenizing_early(kind: str) -> None:
    tok = Tokenizer(TokenInput.model_validate({"tokenizer": kind}), VOCAB)
    text = "good film " * 500_000  # 5 MB
    pulled = 0
    split = tok.iter_split

    def counted(t: str) -> Iterator[tuple[str, int, int]]:
        nonlocal pulled
        for piece in split(t):
            pulled += 1
            yield piece

    tok.iter_split = counted  # type: ignore[method-assign]
    start = time.thread_time()  # CPU time of this thread: a busy machine does not bend it
    spans = tok.encode(text, limit=65)
    cpu = time.thread_time() - start
    assert len(spans) == 65 and pulled == 65  # the rest of the text is never split
    # full tokenization of such a text takes seconds of CPU; stopping at the limit ~1 ms
    assert cpu < 0.5, cpu
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
    start = time.thread_time()  # CPU time of this thread: a busy machine does not bend it
    tok.encode(text, limit=10)
    tok.encode(text[:4096])
    # linear: ~0.1 s of CPU here; catastrophic backtracking on 200k characters would take minutes
    assert time.thread_time() - start < 3.0
