"""Loaders for the demo data sets in ``data/`` (see ``data/PROVENANCE.md``).

Plain standard-library readers (bz2, lzma, csv) so the build needs nothing beyond the server's
own dependencies. Every split is deterministic: fixed files or a hash of a stable key.
"""

from __future__ import annotations

import bz2
import csv
import lzma
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"

SENTIMENT_LABELS = ["negative", "positive"]
VOWEL_LABELS = [f"speaker_{i}" for i in range(1, 10)]
VOWEL_CHANNELS = 12


@dataclass(frozen=True)
class Review:
    text: str
    label: int  # index into SENTIMENT_LABELS
    movie: str


@dataclass(frozen=True)
class Tweet:
    tokens: list[str]
    tags: list[str]


def held_out(key: str, every: int = 5) -> bool:
    """Stable ~1/every split by a hash of ``key`` (crc32 is the same on every platform)."""
    return zlib.crc32(key.encode("utf-8")) % every == 0


# --- rotten tomatoes ------------------------------------------------------------------------
def load_reviews(path: Path = DATA_DIR / "rotten_tomatoes_corpus_full.csv.bz2") -> list[Review]:
    """Fresh/rotten review snippets; the ``plot`` rows are summaries, not reviews, and are dropped."""
    label_of = {"rotten": 0, "fresh": 1}
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        return [Review(row["text"], label_of[row["category"]], row["movie_name"])
                for row in csv.DictReader(f) if row["category"] in label_of]


def split_reviews(reviews: list[Review]) -> tuple[list[Review], list[Review]]:
    """(train, test) split by movie, so test reviews are about movies never seen in training."""
    train = [r for r in reviews if not held_out(r.movie)]
    test = [r for r in reviews if held_out(r.movie)]
    return train, test


# --- Japanese vowels (.ts format) -------------------------------------------------------------
def parse_ts(text: str) -> tuple[list[np.ndarray], list[str]]:
    """sktime/aeon ``.ts``: after ``@data`` one case a line, channels split by ``:``, values by
    ``,``, the class label last. Returns per case a float32 array [T, channels] and its label."""
    series: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *channels, label = line.split(":")
        arr = np.array([[float(v) for v in ch.split(",")] for ch in channels], dtype=np.float32)
        series.append(np.ascontiguousarray(arr.T))
        labels.append(label.strip())
    return series, labels


def load_vowels(split: str) -> tuple[list[np.ndarray], list[int]]:
    """``split`` is ``"TRAIN"`` or ``"TEST"``: arrays [T, 12] and speaker indices 0..8."""
    if split not in ("TRAIN", "TEST"):
        raise ValueError(f"split must be TRAIN or TEST, not {split!r}")
    with lzma.open(DATA_DIR / f"JapaneseVowels_{split}.ts.xz", "rt", encoding="utf-8") as f:
        series, labels = parse_ts(f.read())
    return series, [int(label) - 1 for label in labels]


# --- WNUT-16 NER tweets -----------------------------------------------------------------------
def load_tweets(path: Path = DATA_DIR / "ner.txt.xz") -> list[Tweet]:
    """``token<TAB>tag`` lines; a line with no token (empty or a lone tab) ends a tweet."""
    tweets: list[Tweet] = []
    tokens: list[str] = []
    tags: list[str] = []
    with lzma.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            token, _, tag = line.rstrip("\n").partition("\t")
            if token.strip():
                tokens.append(token)
                tags.append(tag.strip())
            elif tokens:
                tweets.append(Tweet(tokens, tags))
                tokens, tags = [], []
    if tokens:
        tweets.append(Tweet(tokens, tags))
    return tweets


def split_tweets(tweets: list[Tweet]) -> tuple[list[Tweet], list[Tweet]]:
    """(train, test): every fifth tweet held out (the file has no test part; order is stable)."""
    return ([t for i, t in enumerate(tweets) if i % 5 != 4],
            [t for i, t in enumerate(tweets) if i % 5 == 4])


def bio_labels(tweets: list[Tweet]) -> list[str]:
    """``O`` first, then ``B-x``/``I-x`` pairs sorted by entity type."""
    types = sorted({t[2:] for tw in tweets for t in tw.tags if t != "O"})
    return ["O"] + [f"{p}-{e}" for e in types for p in ("B", "I")]


# --- univariate series ------------------------------------------------------------------------
def _read_csv_column(path: Path, column: str) -> np.ndarray:
    with open(path, encoding="utf-8", newline="") as f:
        return np.array([float(row[column]) for row in csv.DictReader(f)], dtype=np.float64)


def load_airline() -> np.ndarray:
    """Monthly airline passengers (thousands), Jan 1949 .. Dec 1960: 144 values."""
    return _read_csv_column(DATA_DIR / "Airline.csv", "Passengers")


def load_sunspots() -> np.ndarray:
    """Yearly sunspot numbers 1700 .. 2008: 309 values."""
    return _read_csv_column(DATA_DIR / "sunspots.csv", "SUNACTIVITY")


# --- UCI splice junctions ------------------------------------------------------------------------
SPLICE_LABELS = ["EI", "IE", "N"]
NUCLEOTIDES = ["A", "C", "G", "T"]


def load_splice(path: Path = DATA_DIR / "splice.dat.xz") -> tuple[list[str], list[int]]:
    """60-nt primate DNA windows and their class (index into SPLICE_LABELS), in file order (sorted
    by class: shuffle before splitting). Ambiguous letters (N, D, R, S) are kept as they are."""
    seqs: list[str] = []
    labels: list[int] = []
    with lzma.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            *bases, label = [v.strip() for v in line.split(",")]
            if bases:
                seqs.append("".join(bases))
                labels.append(SPLICE_LABELS.index(label))
    return seqs, labels


# --- antimicrobial peptides -----------------------------------------------------------------------
PEPTIDE_LABELS = ["other", "antimicrobial"]


def load_peptides(path: Path = DATA_DIR / "AMPvsUniProt.csv") -> tuple[list[str], list[int]]:
    """Unique peptide sequences and labels (1 = antimicrobial), in first-seen order; duplicate
    copies are merged and sequences listed with both labels are dropped."""
    seen: dict[str, set[int]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)  # header: count,1,name0,name1
        for row in reader:
            if len(row) >= 2 and row[0].strip():
                seen.setdefault(row[0].strip(), set()).add(int(row[1]))
    kept = [(s, labels.pop()) for s, labels in seen.items() if len(labels) == 1]
    return [s for s, _ in kept], [y for _, y in kept]


def data_files() -> list[Path]:
    """Every file in ``data/``, sorted: part of the demo build's inputs (cache key)."""
    return sorted(p for p in DATA_DIR.iterdir() if p.is_file())

