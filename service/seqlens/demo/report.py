"""Held-out results as text: one progress line per model and the markdown table of RESULTS.md."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    data: str
    architecture: str
    metrics: tuple[tuple[str, str, str], ...]  # (label, our key, baseline key)
    baseline: str


ROWS: dict[str, Row] = {
    "sentiment": Row(
        "Rotten Tomatoes snippets (Pang & Lee): 10,109 train (717 validate) / 2,699 test reviews, split by movie",
        "embedding 64 → LSTM 64 → last", (("accuracy", "accuracy", "majority_accuracy"),),
        "majority class"),
    "vowels": Row(
        "Japanese vowels (UCI): 9 speakers, 12 channels, T 7–29; given 270 train / 370 test",
        "linear 32 → GRU 64 → last", (("accuracy", "accuracy", "best_constant_accuracy"),),
        "most frequent test speaker; the training classes are balanced"),
    "airline": Row(
        "Airline passengers 1949–1960: train 1949–1958, test origins with the 12 months in 1959–1960",
        "linear 16 → LSTM 64 → horizon 12",
        (("MAE", "mae", "seasonal_naive_mae"), ("RMSE", "rmse", "seasonal_naive_rmse")),
        "seasonal naive: same month last year"),
    "sunspots": Row(
        "Yearly sunspots 1700–2008: train to 1948, test origins with the horizon in 1949–2008",
        "linear 16 → LSTM 64 → horizon 6",
        (("MAE", "mae", "seasonal_naive_mae"), ("RMSE", "rmse", "seasonal_naive_rmse")),
        "seasonal naive: 11-year cycle"),
    "ner": Row(
        "WNUT-16 NER tweets: 1,916 train (191 validate) / 478 test tweets, BIO over 10 types",
        "embedding 64 → BiLSTM 64+64 → per step",
        (("entity F1 (exact span)", "entity_f1", "all_o_entity_f1"),
         ("entity-token recall", "entity_token_recall", "all_o_entity_token_recall"),
         ("token accuracy", "token_accuracy", "all_o_token_accuracy")),
        "all `O`"),
    "splice": Row(
        "UCI splice junctions (primate DNA, 60 nt): 2,233 train (319 validate) / 638 test, shuffled with a fixed seed",
        "one-hot 6 → the seed's `MyRNN` cell (linear state 32) → last step, `kind: onnx`",
        (("accuracy", "accuracy", "majority_accuracy"),), "majority class, N"),
    "peptides": Row(
        "modlAMP AMPvsUniProt peptides, deduplicated, conflicts dropped: 3,355 train (345 validate) / 920 test",
        "embedding 16 → LSTM 32 → attention pooling, `kind: onnx`",
        (("accuracy", "accuracy", "majority_accuracy"),), "majority class"),
}


def headline(name: str, metrics: dict[str, float]) -> str:
    row = ROWS.get(name)
    if row is None:
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    return ", ".join(f"{label} {metrics[ours]:.3f} (baseline {metrics[base]:.3f})"
                     for label, ours, base in row.metrics)


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """One line per (model, metric); the model's columns are filled on its first line only."""
    lines = ["| model | data | architecture | metric (held out) | ours | baseline | build s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, metrics in results.items():
        row = ROWS[name]
        for k, (label, ours, base) in enumerate(row.metrics):
            head = (f"`{name}`", row.data, row.architecture) if k == 0 else ("", "", "")
            baseline = f"{metrics[base]:.3f}" + (f" ({row.baseline})" if k == 0 else "")
            seconds = f"{metrics['build_seconds']:.0f}" if k == 0 else ""
            lines.append(f"| {' | '.join(head)} | {label} | {metrics[ours]:.3f} | {baseline} | {seconds} |")
    return "\n".join(lines) + "\n"
