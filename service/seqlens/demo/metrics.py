"""Held-out metrics and the baselines each demo model must beat."""

from __future__ import annotations

from collections import Counter

import numpy as np


def accuracy(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted) == np.asarray(actual)))


def majority_accuracy(train_labels: list[int], test_labels: list[int]) -> float:
    """Accuracy of always answering the most frequent training label (ties: the smallest)."""
    counts = Counter(train_labels)
    top = min(counts, key=lambda k: (-counts[k], k))
    return accuracy(np.full(len(test_labels), top), np.asarray(test_labels))


def best_constant_accuracy(test_labels: list[int]) -> float:
    """The best any constant answer can do on the test set (an oracle: it peeks at the test
    labels); a stronger bar than the training majority when training classes are balanced."""
    return max(Counter(test_labels).values()) / len(test_labels)


def spans(tags: list[str]) -> set[tuple[int, int, str]]:
    """Entity spans (start, end, type) from BIO tags; an ``I-x`` without a ``B-x`` opens a span
    (the lenient conlleval reading)."""
    out: set[tuple[int, int, str]] = set()
    start, kind = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, ent = tag.partition("-")
        continues = prefix == "I" and ent == kind and start >= 0
        if start >= 0 and not continues:
            out.add((start, i, kind))
            start, kind = -1, ""
        if prefix in ("B", "I") and not continues:
            start, kind = i, ent
    return out


def tagging_scores(predicted: list[list[str]], actual: list[list[str]]) -> dict[str, float]:
    """Token accuracy, recall/precision on entity tokens (tag != O, exact tag), and exact-span
    entity precision/recall/F1. Token accuracy alone is dominated by ``O``."""
    flat_p = [t for seq in predicted for t in seq]
    flat_a = [t for seq in actual for t in seq]
    correct = sum(p == a for p, a in zip(flat_p, flat_a, strict=True))
    ent_tok = [(p, a) for p, a in zip(flat_p, flat_a, strict=True) if a != "O"]
    pred_ent = [(p, a) for p, a in zip(flat_p, flat_a, strict=True) if p != "O"]
    hit = sum(p == a for p, a in ent_tok)
    tp = n_pred = n_gold = 0
    for p_seq, a_seq in zip(predicted, actual, strict=True):
        ps, gs = spans(p_seq), spans(a_seq)
        tp += len(ps & gs)
        n_pred += len(ps)
        n_gold += len(gs)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    return {
        "token_accuracy": correct / len(flat_a),
        "entity_token_recall": hit / len(ent_tok) if ent_tok else 0.0,
        "entity_token_precision": hit / len(pred_ent) if pred_ent else 0.0,
        "entity_precision": precision,
        "entity_recall": recall,
        "entity_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def forecast_errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2)))}
