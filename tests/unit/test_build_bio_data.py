"""The biology demos' data loaders against the counts stated in data/PROVENANCE.md."""

from __future__ import annotations

import csv
from collections import Counter

from seqlens.demo import data as D


def test_splice_rows_classes_and_the_known_dinucleotides() -> None:
    seqs, labels = D.load_splice()
    assert len(seqs) == 3190 and {len(s) for s in seqs} == {60}
    assert Counter(D.SPLICE_LABELS[y] for y in labels) == {"EI": 767, "IE": 768, "N": 1655}
    ei = [s for s, y in zip(seqs, labels, strict=True) if D.SPLICE_LABELS[y] == "EI"]
    ie = [s for s, y in zip(seqs, labels, strict=True) if D.SPLICE_LABELS[y] == "IE"]
    assert sum(s[30:32] == "GT" for s in ei) == 759  # positions 31-32, 1-based
    assert sum(s[28:30] == "AG" for s in ie) == 764  # of 768 (data/PROVENANCE.md)
    assert sum(any(c not in "ACGT" for c in s) for s in seqs) == 15


def test_peptides_deduplicated_and_conflicts_dropped() -> None:
    seqs, labels = D.load_peptides()
    with open(D.DATA_DIR / "AMPvsUniProt.csv", encoding="utf-8", newline="") as f:
        rows = [(r[0].strip(), int(r[1])) for r in list(csv.reader(f))[1:]]
    by_seq: dict[str, set[int]] = {}
    for s, y in rows:
        by_seq.setdefault(s, set()).add(y)
    conflicts = {s for s, ys in by_seq.items() if len(ys) > 1}
    assert len(rows) == 5200 and len(conflicts) == 22
    assert len(seqs) == len(set(seqs)) == len(by_seq) - 22
    assert not conflicts & set(seqs)
    assert all(by_seq[s] == {y} for s, y in zip(seqs, labels, strict=True))
