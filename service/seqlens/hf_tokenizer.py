"""``tokenizer: huggingface``: a version's ``tokenizer.json``, run by the Hugging Face
``tokenizers`` library (an optional dependency: ``pip install 'seqlens[huggingface]'``).

Ids, tokens and character offsets are the library's own. Truncation and padding are switched
off: seqlens refuses over-long texts with its own message instead of silently cutting them.
Work per request is bounded by a character cap checked before the library runs
(docs/tokenizers.md).
"""

from __future__ import annotations

from typing import Any

from .errors import ModelConfigError
from .schema import TokenInput
from .tokenizers import TokenSpan, spans_for_tokens

# Characters a text may average per token before it is refused unread (as for ``word``).
HF_CHARS_PER_TOKEN = 64
# Largest token id accepted: the embedding needs max id + 1 rows, so a hostile file with one
# huge id must not make the server allocate for it.
MAX_TOKEN_ID = (1 << 24) - 1
INSTALL_HINT = "pip install 'seqlens[huggingface]' (the Hugging Face tokenizers library)"


def _library() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise ModelConfigError(f"tokenizer 'huggingface' needs the tokenizers library: {INSTALL_HINT}") from None
    return tokenizers


def parse_tokenizer_json(text: str, source: str = "tokenizer.json") -> Any:
    """A ``tokenizers.Tokenizer`` from JSON text, with truncation and padding off."""
    lib = _library()
    try:
        tok = lib.Tokenizer.from_str(text)
    except Exception as exc:  # noqa: BLE001 (the library raises plain Exception with serde's reason)
        raise ModelConfigError(f"{source} is not a tokenizers file this library reads: {str(exc)[:300]}") from None
    tok.no_truncation()
    tok.no_padding()
    return tok


class HuggingFaceTokenizer:
    def __init__(self, spec: TokenInput, tokenizer: Any, source: str = "tokenizer.json") -> None:
        self.spec = spec
        self._tok = tokenizer
        vocab: dict[str, int] = tokenizer.get_vocab(with_added_tokens=True)
        if not vocab:
            raise ModelConfigError(f"{source} has an empty vocabulary")
        # The embedding needs a row for the largest id, even where the file leaves gaps.
        top = max(vocab.values())
        if top > MAX_TOKEN_ID:
            raise ModelConfigError(f"{source} has token id {top}; ids above {MAX_TOKEN_ID} are refused")
        self._size = top + 1
        self._by_id = {i: token for token, i in vocab.items()}
        self._special = sorted({a.content for a in tokenizer.get_added_tokens_decoder().values() if a.special})
        self._special_set = frozenset(self._special)

    @classmethod
    def from_json(cls, spec: TokenInput, text: str, source: str = "tokenizer.json") -> HuggingFaceTokenizer:
        return cls(spec, parse_tokenizer_json(text, source), source)

    @property
    def vocab_size(self) -> int:
        return self._size

    @property
    def special_tokens(self) -> list[str]:
        return list(self._special)

    def encode(self, text: str, limit: int | None = None) -> list[TokenSpan]:
        """The library's tokens of ``text`` (callers cap ``len(text)`` by :meth:`max_chars` first)."""
        enc = self._tok.encode(text, add_special_tokens=self.spec.add_special_tokens)
        ids, tokens, offsets, special = enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask
        n = len(ids) if limit is None else min(limit, len(ids))
        return [TokenSpan(tokens[k], ids[k], offsets[k][0], offsets[k][1], bool(special[k])) for k in range(n)]

    def max_chars(self, max_tokens: int) -> int:
        return max_tokens * HF_CHARS_PER_TOKEN

    def decode_ids(self, ids: list[int]) -> list[TokenSpan]:
        """Spans for caller-given ids (offsets into the space-joined tokens)."""
        by_id = self._by_id
        tokens = [by_id.get(i, "<?>") for i in ids]
        return spans_for_tokens(tokens, ids, " ", [t in self._special_set for t in tokens])
