"""Bulk explanation: Ray Data actors vs streaming Explain to one server, side by side.

    .venv/bin/python bench/bench_bulk.py [--rows 128] [--repeats 3] [--length 64] [--steps 50]

Same machine, same model, same sequences, same method (integrated gradients, Gauss-Legendre,
fixed --steps so both sides do identical work), both using 2 CPU cores:
- A: ``seqlens.bulk.explain_dataset`` on local Ray with 2 actors (one torch thread each),
  JSONL in, Parquet out. Each run starts its actors afresh (module imports and the model load
  included): "end to end". "steady" counts only the rows finished after the first block, over
  the time after it, i.e. the rate once actors are warm (what a long job runs at).
- B: ``Client.explain_many`` (the SDK's StreamExplain, concurrency 8) against one
  ``seqlens serve`` subprocess with SEQLENS_EXPLAIN_WORKERS=2 (the server's default is 1
  explanation at a time, which would use one of the two cores), results collected in order.
Runs alternate A and B; the table reports medians and their ratio. Model: LSTM 64 -> 128 with
random weights (the DESIGN pitfalls' size), random word ids of length --length.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import Server
from seqlens.bulk import BulkProgress, BulkSpec, explain_dataset
from seqlens.explainers.options import MethodOptions
from seqlens.export import export_model
from seqlens.families import build_model
from seqlens.schema import ModelConfig
from seqlens_client import Method

VOCAB = ["<pad>", "<unk>", *[f"w{i}" for i in range(998)]]


def make_repository(root: Path) -> None:
    config = ModelConfig.model_validate({
        "task": "classification", "max_length": 4096, "labels": ["neg", "pos"],
        "input": {"kind": "tokens", "tokenizer": "word"},
        "architecture": {"input_layer": "embedding", "embedding_dim": 64, "cell": "lstm", "num_layers": 1,
                         "hidden_size": 128, "bidirectional": False, "head": "last"}})
    export_model(build_model(config, len(VOCAB), seed=0).eval(), root / "lstm" / "1", vocabulary=VOCAB)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--block-rows", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="seqlens-bench-bulk-"))
    repo = work / "repo"
    make_repository(repo)
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in rng.integers(0, 998, size=args.length)) for _ in range(args.rows)]
    src = work / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    spec = BulkSpec(repository=str(repo), model="lstm", block_rows=args.block_rows,
                    methods=(MethodOptions("integrated_gradients", n_steps=args.steps),))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    server = Server(repo, env={"SEQLENS_EXPLAIN_WORKERS": "2"})
    runs = 0

    def bulk() -> tuple[float, float]:
        nonlocal runs
        runs += 1
        marks: list[tuple[float, int]] = []

        def progress(p: BulkProgress) -> None:
            marks.append((time.perf_counter(), p.rows_done))

        start = time.perf_counter()
        report = explain_dataset(src, work / f"out-{runs}", spec, num_actors=2, progress=progress)
        end = time.perf_counter()
        assert report.rows_failed == 0 and report.rows_run == args.rows
        first = next(m for m in marks if m[1] > 0)
        steady = (args.rows - first[1]) / (end - first[0]) if end > first[0] else float("nan")
        return args.rows / (end - start), steady

    def stream() -> float:
        start = time.perf_counter()
        exps = server.client.explain_many("lstm", texts, Method("integrated_gradients", n_steps=args.steps),
                                          concurrency=8)
        assert len(exps) == args.rows
        return args.rows / (time.perf_counter() - start)

    try:
        stream()  # warm-up: the server's first explanation
        a_e2e, a_steady, b = [], [], []
        for _ in range(args.repeats):
            e2e, steady = bulk()
            a_e2e.append(e2e)
            a_steady.append(steady)
            b.append(stream())
    finally:
        server.close()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    print(f"IG n_steps={args.steps}, LSTM 64->128, T={args.length}, {args.rows} sequences, 2 cores, "
          f"{args.repeats} alternating runs (medians)")
    print(f"{'':36}{'seq/s':>10}{'vs explain_many':>18}")
    print(f"{'explain_many, 1 server (2 workers)':36}{med(b):10.1f}{1.0:17.2f}x")
    print(f"{'Ray Data, 2 actors, end to end':36}{med(a_e2e):10.1f}{med(a_e2e) / med(b):17.2f}x")
    print(f"{'Ray Data, 2 actors, steady':36}{med(a_steady):10.1f}{med(a_steady) / med(b):17.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
