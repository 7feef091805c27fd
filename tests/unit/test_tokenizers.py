from __future__ import annotations

from seqlens.schema import TokenInput
from seqlens.tokenizers import Tokenizer, Vocabulary


def test_word_tokens_carry_offsets_and_unknowns() -> None:
    tok = Tokenizer(TokenInput(), Vocabulary(["<pad>", "<unk>", "it's", "great", "!"]))
    text = "It's  GREAT, truly!"
    spans = tok.encode(text)
    assert [(s.text, s.id) for s in spans] == [("It's", 2), ("GREAT", 3), (",", 1), ("truly", 1), ("!", 4)]
    assert all(text[s.start:s.end] == s.text for s in spans)


def test_char_tokens_and_unicode() -> None:
    tok = Tokenizer(TokenInput(tokenizer="char", lowercase=False), Vocabulary(["<pad>", "<unk>", "a", "é"]))
    spans = tok.encode("aé\U0001F600")
    assert [s.id for s in spans] == [2, 3, 1]
    assert [(s.start, s.end) for s in spans] == [(0, 1), (1, 2), (2, 3)]


def test_vocabulary_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    v = Vocabulary(["<pad>", "<unk>", " ", "x"])
    v.save(tmp_path / "v.txt")
    assert Vocabulary.load(tmp_path / "v.txt").tokens == v.tokens
