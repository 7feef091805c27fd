from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seqlens.errors import ModelConfigError
from seqlens.schema import TokenInput
from seqlens.tokenizers import Tokenizer, Vocabulary, read_vocabulary, write_vocabulary


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


# --- vocabulary files --------------------------------------------------------------------
# Characters that broke or could break a vocabulary file: line breaks of every kind, tabs,
# controls, BOM, zero-width and bidi marks, combining marks, quotes and backslashes, astral.
HOSTILE = "\n\r\t\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\ufeff\u200b\u200d\u202e\u0301 \"\\[],{}:\U0001F600\uffff"
TOKEN = st.text(alphabet=st.one_of(st.sampled_from(HOSTILE), st.characters(exclude_categories=["Cs"])),
                max_size=6)
TOKENS = st.lists(TOKEN, unique=True, max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=TOKENS)
def test_json_vocabulary_round_trips_every_token(tmp_path: Path, tokens: list[str]) -> None:
    path = write_vocabulary(tmp_path / "vocab.json", tokens)
    assert read_vocabulary(path) == tokens
    assert Vocabulary.load(path).tokens == tokens
    # The {token: id} object Hugging Face writes reads to the same list, whatever its key order.
    obj = tmp_path / "hf.json"
    obj.write_text(json.dumps(dict(reversed(list({t: i for i, t in enumerate(tokens)}.items())))), encoding="utf-8")
    assert read_vocabulary(obj) == tokens


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=TOKENS)
def test_line_vocabulary_round_trips_or_names_the_line_break(tmp_path: Path, tokens: list[str]) -> None:
    path = tmp_path / "vocab.txt"
    breaking = [i for i, t in enumerate(tokens) if "\n" in t or "\r" in t]
    if breaking:
        with pytest.raises(ModelConfigError, match=f"token {breaking[0]} .*write vocab.json instead"):
            write_vocabulary(path, tokens)
    else:
        write_vocabulary(path, tokens)
        assert read_vocabulary(path) == tokens  # \x0b, \x85, \u2028 ... are not line breaks here


@pytest.mark.parametrize("name", ["vocab.json", "vocab.txt"])
def test_duplicates_are_refused_and_named(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelConfigError, match=r'token "\\t" appears twice \(ids 2 and 4\)'):
        write_vocabulary(tmp_path / name, ["<pad>", "<unk>", "\t", "a", "\t"])
    (tmp_path / name).write_text('["<pad>", "a", "b", "a"]' if name.endswith(".json") else "<pad>\na\nb\na\n",
                                 encoding="utf-8")
    with pytest.raises(ModelConfigError, match=f'{name}: token "a" appears twice \\(ids 1 and 3\\)'):
        read_vocabulary(tmp_path / name)
    with pytest.raises(ModelConfigError, match="appears twice"):
        Vocabulary(["x", "x"])


@pytest.mark.parametrize("content, message", [
    ('{"a": 0, "b": 2}', "integer ids 0..1"),
    ('{"a": 0, "b": "1"}', "integer ids"),
    ('{"a": 0, "b": true}', "integer ids"),
    ('["a", 3]', "token 1 is int, not a string"),
    ('"a"', "expected a JSON array"),
    ('["a", "\\ud800"]', "token 1 .* lone surrogate"),
    ("[" * 200_000, "not valid JSON"),
    ('["a", ', "not valid JSON"),
])
def test_hostile_json_vocabularies_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ModelConfigError, match=message):
        read_vocabulary(path)
    with pytest.raises(ModelConfigError, match="lone surrogate"):
        write_vocabulary(tmp_path / "out.json", ["\udc80"])


def test_char_tokenizer_feeds_newline_and_tab_when_the_vocabulary_has_them() -> None:
    vocab = Vocabulary(["<pad>", "<unk>", "\n", "\t", "x"])
    tok = Tokenizer(TokenInput(tokenizer="char", lowercase=False), vocab)
    assert [s.id for s in tok.encode("x\n\tx\r\n")] == [4, 2, 3, 4, 1, 2]
    word = Tokenizer(TokenInput(), vocab)  # word pieces never hold whitespace: unchanged
    assert [s.text for s in word.encode("x\n\tx")] == ["x", "x"]


# --- huggingface -------------------------------------------------------------------------
def _byte_level_bpe(path: Path) -> None:
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HfTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["def f(x):\n\treturn x + 1\n", "a witty film, truly", "naïve café 😀"] * 5,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<unk>"],
                                                show_progress=False))
    tok.save(str(path))


def test_byte_level_bpe_spans_are_the_librarys(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    from seqlens.hf_tokenizer import HuggingFaceTokenizer
    from tokenizers import Tokenizer as HfTokenizer

    _byte_level_bpe(tmp_path / "tokenizer.json")
    spec = TokenInput.model_validate({"tokenizer": "huggingface"})
    assert spec.vocabulary == "tokenizer.json" and spec.lowercase is False
    ours = HuggingFaceTokenizer.from_json(spec, (tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    lib = HfTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in ["def f(x):\n\treturn x + 1\n", "naïve café 😀 \x00\x1b", "a" * 300, "  \t\n"]:
        enc = lib.encode(text)
        spans = ours.encode(text)
        assert [(s.text, s.id, s.start, s.end) for s in spans] == [
            (t, i, a, b) for t, i, (a, b) in zip(enc.tokens, enc.ids, enc.offsets, strict=True)]
        assert ours.encode(text, limit=3) == spans[:3]
    assert ours.vocab_size == lib.get_vocab_size() and ours.special_tokens == ["<pad>", "<unk>"]
    assert [s.text for s in ours.decode_ids([0, 5, 10**6])] == ["<pad>", lib.id_to_token(5), "<?>"]


def test_huggingface_config_rules() -> None:
    with pytest.raises(ValueError, match="remove input.lowercase"):
        TokenInput.model_validate({"tokenizer": "huggingface", "lowercase": True})
    spec = TokenInput.model_validate({"tokenizer": "huggingface", "vocabulary": "tok.json"})
    assert spec.vocabulary == "tok.json"
    assert TokenInput().vocabulary == "vocab.json"


@pytest.mark.parametrize("content, message", [
    ("{}", "not a tokenizers file"),
    ("[" * 100_000, "not a tokenizers file"),
    ('{"version": "1.0", "model": {"type": "WordLevel", "vocab": {}, "unk_token": "x"}}', "empty vocabulary"),
    ('{"version": "1.0", "model": {"type": "WordLevel", "vocab": {"x": 0, "y": 4000000000}, "unk_token": "x"}}',
     "token id 4000000000"),
])
def test_hostile_tokenizer_json_is_refused(content: str, message: str) -> None:
    pytest.importorskip("tokenizers")
    from seqlens.hf_tokenizer import HuggingFaceTokenizer

    with pytest.raises(ModelConfigError, match=message):
        HuggingFaceTokenizer.from_json(TokenInput.model_validate({"tokenizer": "huggingface"}), content)


def test_missing_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from seqlens.hf_tokenizer import HuggingFaceTokenizer

    monkeypatch.setitem(sys.modules, "tokenizers", None)  # what an install without the extra sees
    with pytest.raises(ModelConfigError, match=r"pip install 'seqlens\[huggingface\]'"):
        HuggingFaceTokenizer.from_json(TokenInput.model_validate({"tokenizer": "huggingface"}), "{}")
