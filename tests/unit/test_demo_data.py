"""The demo data loaders read the shipped files exactly as documented (no training here)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from seqlens.demo import data as D
from seqlens.demo.cache import build_hash, build_inputs
from seqlens.demo.metrics import spans, tagging_scores
from seqlens.demo.models import retokenize
from seqlens.schema import TokenInput
from seqlens.tokenizers import Tokenizer, Vocabulary


def test_reviews_counts_labels_and_split() -> None:
    reviews = D.load_reviews()
    assert len(reviews) == 7403 + 5405  # the 1,097 plot rows are dropped
    assert Counter(r.label for r in reviews) == {1: 7403, 0: 5405}
    assert all(r.text.strip() for r in reviews)
    train, test = D.split_reviews(reviews)
    assert len(train) + len(test) == len(reviews)
    assert not {r.movie for r in train} & {r.movie for r in test}  # split by movie
    assert 0.15 < len(test) / len(reviews) < 0.25
    assert D.SENTIMENT_LABELS == ["negative", "positive"]


@pytest.mark.parametrize(("split", "rows", "longest"), [("TRAIN", 270, 26), ("TEST", 370, 29)])
def test_vowels_shapes_lengths_labels(split: str, rows: int, longest: int) -> None:
    series, labels = D.load_vowels(split)
    assert len(series) == len(labels) == rows
    assert all(s.dtype == np.float32 and s.ndim == 2 and s.shape[1] == 12 for s in series)
    lengths = [s.shape[0] for s in series]
    assert min(lengths) == 7 and max(lengths) == longest
    assert set(labels) == set(range(9))
    assert all(np.isfinite(s).all() for s in series)
    if split == "TRAIN":
        assert set(Counter(labels).values()) == {30}


def test_vowels_rejects_unknown_split() -> None:
    with pytest.raises(ValueError):
        D.load_vowels("VALID")


def test_parse_ts_channels_are_columns() -> None:
    text = "#comment\n@problemName x\n@data\n1,2,3:4,5,6:a\n7,8:9,10:b\n"
    series, labels = D.parse_ts(text)
    assert labels == ["a", "b"]
    np.testing.assert_array_equal(series[0], [[1, 4], [2, 5], [3, 6]])
    assert series[1].shape == (2, 2)


def test_tweets_counts_and_bio_tags() -> None:
    tweets = D.load_tweets()
    assert len(tweets) == 2394
    assert sum(len(t.tokens) for t in tweets) == 46469
    labels = D.bio_labels(tweets)
    assert labels[0] == "O" and len(labels) == 1 + 2 * 10
    assert {t for tw in tweets for t in tw.tags} <= set(labels)
    assert all(len(t.tokens) == len(t.tags) and t.tokens for t in tweets)
    train, test = D.split_tweets(tweets)
    assert len(train) + len(test) == len(tweets) and len(test) == 2394 // 5


def test_retokenize_follows_the_serving_tokenizer() -> None:
    splitter = Tokenizer(TokenInput(tokenizer="word", lowercase=True), Vocabulary([]))
    tweet = D.Tweet(["@Paul", "Empire", "State", "'s"], ["O", "B-facility", "I-facility", "O"])
    pieces, tags = retokenize(tweet, splitter)
    assert pieces == ["@", "paul", "empire", "state", "'", "s"]
    assert tags == ["O", "O", "B-facility", "I-facility", "O", "O"]
    user = D.Tweet(["@Paul_W"], ["B-person"])
    assert retokenize(user, splitter)[1] == ["B-person", "I-person"]


def test_bio_spans_and_scores() -> None:
    assert spans(["B-x", "I-x", "O", "I-y", "B-x", "B-x"]) == {(0, 2, "x"), (3, 4, "y"), (4, 5, "x"), (5, 6, "x")}
    gold = [["B-x", "I-x", "O"]]
    perfect = tagging_scores(gold, gold)
    assert perfect["entity_f1"] == perfect["token_accuracy"] == 1.0
    none = tagging_scores([["O", "O", "O"]], gold)
    assert none["entity_f1"] == none["entity_token_recall"] == 0.0


def test_series() -> None:
    airline = D.load_airline()
    assert airline.shape == (144,) and airline[0] == 112 and (airline > 0).all()
    sunspots = D.load_sunspots()
    assert sunspots.shape == (309,) and sunspots[0] == 5 and (sunspots >= 0).all()


def test_build_hash_covers_sources_and_data(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = {p.name: p for p in build_inputs()}
    assert {"models.py", "train.py", "ner.txt.xz", "Airline.csv", "families.py"} <= set(inputs)
    original = build_hash()
    assert len(original) == 16 and all(c in "0123456789abcdef" for c in original)
    read = Path.read_bytes
    for name in ("train.py", "Airline.csv", "families.py"):  # one byte more in a source or a data file
        changed = inputs[name]
        monkeypatch.setattr(Path, "read_bytes", lambda self, c=changed: read(self) + (b" " if self == c else b""))
        assert build_hash() != original, f"{name} is not covered by the build hash"
    monkeypatch.setattr(Path, "read_bytes", read)
    assert build_hash() == original  # and it depends on nothing else that changed meanwhile


def test_provenance_names_every_data_file() -> None:
    text = (D.DATA_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    for path in D.data_files():
        if path.name != "PROVENANCE.md":
            assert path.name in text
