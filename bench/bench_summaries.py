"""State summaries vs a plain torch forward, same model and input: medians of alternating runs.

    .venv/bin/python bench/bench_summaries.py [--repeats 41] [--threads 1]

A: ``summaries.compute_state`` with every default summary (the step-by-step recurrence with
   gates, then norms, deltas, gate means, saturation, timescales, top units, prefix predictions,
   unit contributions, active counts and PCA projections), on one sequence.
B: ``module(inputs, lengths)`` under ``torch.no_grad()`` on the same sequence (batch 1).
R: ``recurrence.recompute`` alone (the part of A that is the step loop, input projections and
   gate reordering), to show where A's time goes.
A, B and R alternate; each sample is the mean of ``--inner`` calls; the ratio is A over B, of the medians.
The PCA fit (once per loaded version) happens before timing and is reported on its own.
DESIGN target: A <= 2x B. torch runs with ``--threads`` intra-op threads (server default 1).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from seqlens.export import export_model
from seqlens.families import SequenceModel, build_model
from seqlens.recurrence import recompute
from seqlens.schema import ModelConfig
from seqlens.summaries import PROJECTION, StateOptions, compute_state
from seqlens.versions import LoadedVersion

VOCAB = ["<pad>", "<unk>", *[f"w{i}" for i in range(998)]]
# (label, cell, layers, bidirectional, T)
CASES = [
    ("LSTM 64->128", "lstm", 1, False, 32),
    ("LSTM 64->128", "lstm", 1, False, 128),
    ("LSTM 64->128", "lstm", 1, False, 512),
    ("GRU 64->128", "gru", 1, False, 128),
    ("RNN tanh 64->128", "rnn_tanh", 1, False, 128),
    ("LSTM 64->128 x2 layers, bidir", "lstm", 2, True, 128),
]


def config(cell: str, layers: int, bidirectional: bool) -> ModelConfig:
    return ModelConfig.model_validate({
        "task": "classification", "max_length": 4096, "labels": ["neg", "pos"],
        "input": {"kind": "tokens", "tokenizer": "word"},
        "architecture": {"input_layer": "embedding", "embedding_dim": 64, "cell": cell, "num_layers": layers,
                         "hidden_size": 128, "bidirectional": bidirectional, "head": "last"}})


def sample(fn: Callable[[], object], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--inner", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, cell, layers, bidir, steps) in enumerate(CASES):
            module = build_model(config(cell, layers, bidir), len(VOCAB), seed=i).eval()
            loaded = export_model(module, Path(tmp) / f"m{i}" / "1", vocabulary=VOCAB)
            values = rng.integers(2, len(VOCAB), size=steps).astype(np.int64)
            x, lengths = torch.from_numpy(values[None]), torch.tensor([steps])
            t0 = time.perf_counter()
            compute_state(loaded, values, StateOptions())  # fits the PCA once, outside the timing
            fit_s = time.perf_counter() - t0
            assert PROJECTION.has(loaded)

            def summaries(loaded: LoadedVersion = loaded, values: np.ndarray = values) -> object:
                return compute_state(loaded, values, StateOptions())

            def forward(module: SequenceModel = loaded.torch_module, x: torch.Tensor = x,
                        lengths: torch.Tensor = lengths) -> object:
                with torch.no_grad():
                    return module(x, lengths)

            def recurrence(module: SequenceModel = loaded.torch_module, values: np.ndarray = values) -> object:
                return recompute(module, values[None], np.array([len(values)]))

            a, b, r = [], [], []
            for _ in range(args.repeats):
                a.append(sample(summaries, args.inner))
                b.append(sample(forward, args.inner))
                r.append(sample(recurrence, args.inner))
            ma, mb, mr = statistics.median(a), statistics.median(b), statistics.median(r)
            rows.append((label, steps, mb * 1e3, ma * 1e3, mr * 1e3, ma / mb, fit_s * 1e3))
    print(f"torch threads {args.threads}; medians of {args.repeats} alternating samples x {args.inner} calls")
    print("| model | T | torch forward (ms) | summaries (ms) | of which recurrence (ms) | ratio | target "
          "| first call incl. PCA fit (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, steps, fwd, summ, rec, ratio, fit in rows:
        print(f"| {label} | {steps} | {fwd:.2f} | {summ:.2f} | {rec:.2f} | {ratio:.2f}x | <= 2x | {fit:.0f} |")


if __name__ == "__main__":
    main()
