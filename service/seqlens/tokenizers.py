"""Word- and character-level tokenizers with character offsets, and the vocabulary files.

Vocabulary formats (docs/tokenizers.md): ``*.json`` is a JSON array of strings (id = index),
or an object ``{token: id}`` with ids 0..n-1; it holds any token. Any other name is the legacy
text format, one token a line, which cannot hold a newline or a carriage return.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Protocol

from .errors import ModelConfigError
from .schema import TokenInput

# Words (letters, digits, apostrophes inside words) or single punctuation marks.
_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]", re.UNICODE)
# Characters per word token (with its whitespace) a text may average before it is refused
# unread: bounds tokenization cost by the model's max_length, whatever the text.
WORD_CHARS_PER_TOKEN = 64
JSON_SUFFIX = ".json"


@dataclass(frozen=True)
class TokenSpan:
    text: str
    id: int
    start: int
    end: int
    special: bool = False  # added by the tokenizer (e.g. [CLS]); not a piece of the text


class TextTokenizer(Protocol):
    """What serving needs from a tokenizer, whatever its kind."""

    spec: TokenInput

    @property
    def vocab_size(self) -> int: ...

    @property
    def special_tokens(self) -> list[str]: ...

    def encode(self, text: str, limit: int | None = None) -> list[TokenSpan]: ...

    def max_chars(self, max_tokens: int) -> int: ...

    def decode_ids(self, ids: list[int]) -> list[TokenSpan]: ...


def _describe(token: str) -> str:
    return json.dumps(token)  # escapes newlines, tabs and controls: the token stays readable


def check_tokens(tokens: Sequence[object], source: str = "vocabulary") -> list[str]:
    """``tokens`` as a list of valid strings; raises ModelConfigError naming the first problem
    (a non-string, a lone surrogate, a duplicate with both of its ids)."""
    seen: dict[str, int] = {}
    out: list[str] = []
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str):
            raise ModelConfigError(f"{source}: token {i} is {type(tok).__name__}, not a string")
        try:
            tok.encode("utf-8")
        except UnicodeEncodeError:
            raise ModelConfigError(f"{source}: token {i} ({tok!a}) has a lone surrogate; "
                                   "tokens must be valid Unicode") from None
        first = seen.setdefault(tok, i)
        if first != i:
            raise ModelConfigError(f"{source}: token {_describe(tok)} appears twice (ids {first} and {i}); "
                                   "each token needs exactly one id")
        out.append(tok)
    return out


def _parse_json_tokens(text: str, source: str) -> list[str]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelConfigError(f"{source}: not valid JSON: {str(exc)[:200]}") from None
    if isinstance(data, dict):  # {token: id}, as Hugging Face writes vocab.json
        values = list(data.values())
        if any(type(v) is not int for v in values) or sorted(values) != list(range(len(values))):
            raise ModelConfigError(f"{source}: a {{token: id}} object needs integer ids 0..{len(values) - 1}, "
                                   "each once")
        return check_tokens(sorted(data, key=data.__getitem__), source)
    if not isinstance(data, list):
        raise ModelConfigError(f"{source}: expected a JSON array of token strings (id = index)")
    return check_tokens(data, source)


def read_vocabulary(path: str | Path) -> list[str]:
    """Tokens of a vocabulary file, by its suffix: ``.json`` or one token a line."""
    path = Path(path)
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelConfigError(f"{path.name} is not UTF-8 text: {exc.reason}") from None
    if path.suffix == JSON_SUFFIX:
        return _parse_json_tokens(raw, path.name)
    # Split on "\n" only (no universal newlines), dropping one final empty line.
    lines = raw.split("\n") if raw else []
    if raw.endswith("\n"):
        lines.pop()
    return check_tokens(lines, path.name)


def write_vocabulary(path: str | Path, tokens: Sequence[str]) -> Path:
    """Write ``tokens`` (id = index) to ``path``: a JSON array for ``*.json`` (holds any token),
    else one token a line (refusing tokens that hold a newline or carriage return)."""
    target = Path(path)
    checked = check_tokens(list(tokens), target.name)
    if target.suffix == JSON_SUFFIX:
        # One token a line inside the array: diffable, and ensure_ascii=False keeps it readable.
        body = ",\n".join(json.dumps(t, ensure_ascii=False) for t in checked)
        target.write_text(f"[\n{body}\n]\n" if checked else "[]\n", encoding="utf-8")
        return target
    for i, t in enumerate(checked):
        if "\n" in t or "\r" in t:
            raise ModelConfigError(f"{target.name}: token {i} ({_describe(t)}) holds a line break, which a "
                                   "one-token-a-line file cannot; write vocab.json instead")
    target.write_bytes("".join(t + "\n" for t in checked).encode("utf-8"))
    return target


class Vocabulary:
    """Token <-> id; token i has id i. Duplicates are refused."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = check_tokens(tokens)
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str, unk_id: int) -> int:
        return self._ids.get(token, unk_id)

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls(read_vocabulary(path))

    def save(self, path: Path) -> None:
        write_vocabulary(path, self.tokens)


class Tokenizer:
    """The ``word`` and ``char`` tokenizers over a :class:`Vocabulary`."""

    def __init__(self, spec: TokenInput, vocab: Vocabulary) -> None:
        self.spec = spec
        self.vocab = vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def special_tokens(self) -> list[str]:
        n = len(self.vocab)
        return [self.vocab.tokens[i] for i in sorted({self.spec.pad_id, self.spec.unk_id}) if i < n]

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
        sep = "" if self.spec.tokenizer == "char" else " "
        return spans_for_tokens([self.vocab.tokens[i] if 0 <= i < len(self.vocab) else "<?>" for i in ids],
                                ids, sep)


def spans_for_tokens(tokens: list[str], ids: list[int], sep: str,
                     special: Sequence[bool] | None = None) -> list[TokenSpan]:
    """Spans of tokens laid end to end with ``sep`` between them (token-id inputs have no text)."""
    out: list[TokenSpan] = []
    pos = 0
    step = len(sep)
    if special is None:  # the hot path of token-id requests: no per-token extras
        for tok, i in zip(tokens, ids, strict=True):
            out.append(TokenSpan(tok, i, pos, pos + len(tok)))
            pos += len(tok) + step
        return out
    for tok, i, sp in zip(tokens, ids, special, strict=True):
        out.append(TokenSpan(tok, i, pos, pos + len(tok), bool(sp)))
        pos += len(tok) + step
    return out
