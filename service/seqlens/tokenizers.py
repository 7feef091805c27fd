"""Word- and character-level tokenizers with character offsets, and the vocabulary file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from .schema import TokenInput

# Words (letters, digits, apostrophes inside words) or single punctuation marks.
_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]", re.UNICODE)
# Characters per word token (with its whitespace) a text may average before it is refused
# unread: bounds tokenization cost by the model's max_length, whatever the text.
WORD_CHARS_PER_TOKEN = 64


@dataclass(frozen=True)
class TokenSpan:
    text: str
    id: int
    start: int
    end: int


class Vocabulary:
    """Token <-> id; line i of the file is token i."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self._ids = {t: i for i, t in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str, unk_id: int) -> int:
        return self._ids.get(token, unk_id)

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        text = path.read_text(encoding="utf-8")
        return cls(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"))

    def save(self, path: Path) -> None:
        for t in self.tokens:
            if "\n" in t:
                raise ValueError(f"vocabulary token {t!r} contains a newline")
        path.write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")


class Tokenizer:
    def __init__(self, spec: TokenInput, vocab: Vocabulary) -> None:
        self.spec = spec
        self.vocab = vocab

    def iter_split(self, text: str) -> Iterator[tuple[str, int, int]]:
        """Surface pieces with their [start, end) character offsets in ``text``, lazily."""
        if self.spec.tokenizer == "char":
            return ((ch, i, i + 1) for i, ch in enumerate(text))
        return ((m.group(0), m.start(), m.end()) for m in _WORD.finditer(text))

    def split(self, text: str) -> list[tuple[str, int, int]]:
        return list(self.iter_split(text))

    def normalize(self, piece: str) -> str:
        return piece.lower() if self.spec.lowercase else piece

    def encode(self, text: str, limit: int | None = None) -> list[TokenSpan]:
        """Tokens of ``text``; with ``limit``, at most that many (the rest is never scanned),
        so callers checking a length limit pay for ``limit`` tokens, not for the whole text."""
        unk = self.spec.unk_id
        pieces = self.iter_split(text) if limit is None else islice(self.iter_split(text), limit)
        return [TokenSpan(p, self.vocab.id(self.normalize(p), unk), s, e) for p, s, e in pieces]

    def max_chars(self, max_tokens: int) -> int:
        """Longest text worth tokenizing for ``max_tokens`` tokens: every character is a token
        for ``char``; words get ``WORD_CHARS_PER_TOKEN`` characters each (spaces included)."""
        return max_tokens if self.spec.tokenizer == "char" else max_tokens * WORD_CHARS_PER_TOKEN

    def decode_ids(self, ids: list[int]) -> list[TokenSpan]:
        """Spans for caller-given ids (offsets into the space-joined tokens)."""
        out: list[TokenSpan] = []
        pos = 0
        sep = "" if self.spec.tokenizer == "char" else " "
        for i in ids:
            tok = self.vocab.tokens[i] if 0 <= i < len(self.vocab) else "<?>"
            out.append(TokenSpan(tok, i, pos, pos + len(tok)))
            pos += len(tok) + len(sep)
        return out
