"""Predict over gRPC vs in-process ONNX Runtime, side by side: medians of alternating A/B runs.

    .venv/bin/python bench/bench_predict.py [--rounds 5] [--seconds 1.5] [--callers 1,8,32,64]
        [--demo auto|none|PATH] [--server-env SEQLENS_BATCH_MAX_DELAY_MS=1 ...] [--threads | --buckets]
        [--cpus 2,3] [--server-cpus 4,5]

A: in-process ONNX Runtime (the server's OnnxRuntime, same session options) on one thread,
   padded batches of B sequences back to back. B: ``seqlens serve`` in a subprocess on
   127.0.0.1, driven from this process by C concurrent grpc.aio callers on one channel, each
   sending one sequence per Predict as token ids; the server's dynamic batcher forms the
   batches. Rows:
- throughput (sequences/s) at C = B = 1, 8, 32, 64 (DESIGN target: >= 0.6x at 32), and of 2
  callers sending 32 sequences per Predict vs batch 32;
- latency at batch 1, one caller (grpc's blocking client): p50/p99 of Predict vs of one
  ``session.run`` (target: p50 <= +1 ms), and of Health.Check as the floor of a gRPC call;
- p50/p99 Predict latency (one caller) while 2 callers run Explain (integrated gradients,
  50 steps) on the same model, vs without.
Inputs: Rotten Tomatoes snippets from the demo data (median ~20 tokens), tokenized with the
model's tokenizer. Model: the trained demo ``sentiment`` model when the demo repository is
already built (``--demo auto``; never built here), else a random LSTM of the same size
(embedding 64, hidden 64, 8,000 words).
``--threads`` instead measures the thread settings behind the defaults in config.py, and
``--buckets`` what splitting a collected batch by length (``plan_buckets``) saves.
The load generator shares the machine's cores with the server (as a co-located client would).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from seqlens.export import export_model
from seqlens.families import build_model
from seqlens.inputs import pad_batch
from seqlens.runtimes.onnx import OnnxRuntime
from seqlens.schema import ModelConfig
from seqlens.versions import load_version
from seqlens_client._proto.seqlens.v1 import explain_pb2, predict_pb2, service_pb2_grpc, types_pb2

MODEL = "sentiment"
POOL = 2048  # distinct sequences cycled through by every run


# --- the model and its inputs -------------------------------------------------------------------
def demo_version(choice: str) -> Path | None:
    """The demo sentiment version folder if the demo repository is already built (never builds)."""
    if choice == "none":
        return None
    if choice != "auto":
        return Path(choice) / MODEL / "1"
    from seqlens.demo.cache import COMPLETE_MARKER, build_hash, cache_root

    root = cache_root() / f"demo-{build_hash()}"
    return root / MODEL / "1" if (root / COMPLETE_MARKER).is_file() else None


def make_repository(root: Path, demo: Path | None) -> str:
    if demo is not None:
        shutil.copytree(demo, root / MODEL / "1")
        return f"trained demo `sentiment` ({demo})"
    vocab = ["<pad>", "<unk>", *[f"w{i}" for i in range(7998)]]
    config = ModelConfig.model_validate({
        "task": "classification", "max_length": 256, "labels": ["negative", "positive"],
        "input": {"kind": "tokens", "tokenizer": "word"},
        "architecture": {"input_layer": "embedding", "embedding_dim": 64, "cell": "lstm", "hidden_size": 64,
                         "head": "last"}})
    export_model(build_model(config, len(vocab), seed=0).eval(), root / MODEL / "1", vocabulary=vocab)
    return "random LSTM 64 -> 64, 8,000 words (demo repository not built)"


def sequences(version_dir: Path) -> list[np.ndarray]:
    """Token ids [T] of real review snippets, as the model's tokenizer cuts them (the random
    model's vocabulary has no real words: there, each word maps to an id by its crc32)."""
    from seqlens.demo.data import load_reviews

    loaded = load_version(version_dir, MODEL, "1")
    tokenizer = loaded.tokenizer
    assert tokenizer is not None
    cap, vocab = loaded.config.max_length, loaded.vocab_size
    trained = tokenizer.vocab.tokens[2:4] != ["w0", "w1"]
    out = []
    for review in load_reviews()[:POOL]:
        spans = tokenizer.encode(review.text)[:cap]
        ids = [t.id for t in spans] if trained else [2 + zlib.crc32(t.text.encode()) % (vocab - 2) for t in spans]
        out.append(np.array(ids or [1], dtype=np.int64))
    return out


# --- A: in-process ONNX Runtime -------------------------------------------------------------------
def in_process(rt: OnnxRuntime, seqs: list[np.ndarray], batch: int, seconds: float) -> tuple[float, list[float]]:
    """Sequences/s and per-run latencies of back-to-back padded batches."""
    batches = [pad_batch(seqs[i: i + batch]) for i in range(0, len(seqs) - batch + 1, batch)]
    done, times = 0, []
    start = time.perf_counter()
    k = 0
    while time.perf_counter() - start < seconds:
        x, lengths = batches[k % len(batches)]
        t0 = time.perf_counter()
        rt.run(x, lengths)
        times.append(time.perf_counter() - t0)
        done += len(lengths)
        k += 1
    return done / (time.perf_counter() - start), times


# --- B: the server -----------------------------------------------------------------------------------
class Server:
    def __init__(self, repository: Path, env: dict[str, str], cpus: set[int] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seqlens.cli", "serve", "--model-repository", str(repository), "--host",
             "127.0.0.1", "--port", "0", "--metrics-port", "0"],
            env={**os.environ, "SEQLENS_POLL_INTERVAL_S": "0", **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if cpus:  # before it starts any thread (imports take seconds); its threads inherit it
            os.sched_setaffinity(self.proc.pid, cpus)
        self.port = 0
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if str(line.get("msg", "")).startswith("seqlens ready"):
                self.port = int(line["port"])
                break
        if not self.port:
            raise RuntimeError("seqlens serve did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr or ()], daemon=True).start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def predict_request(seq: np.ndarray) -> predict_pb2.PredictRequest:
    return predict_pb2.PredictRequest(model_name=MODEL, inputs=[
        types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=seq.tolist()))])


async def over_grpc(target: str, requests: list[predict_pb2.PredictRequest], callers: int, seconds: float,
                    explainers: int = 0) -> tuple[float, list[float]]:
    """Sequences/s and per-call latencies of ``callers`` concurrent Predict loops (plus
    ``explainers`` concurrent Explain loops, not counted)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        for r in requests[:callers]:
            await stub.Predict(r)  # connected and warm
        latencies: list[float] = []
        stop = time.perf_counter() + seconds

        async def predict_loop(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                await stub.Predict(requests[i % len(requests)])
                latencies.append(time.perf_counter() - t0)
                i += callers

        async def explain_loop(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                seq = requests[i % len(requests)].inputs[0]
                await stub.Explain(explain_pb2.ExplainRequest(model_name=MODEL, input=seq, methods=[
                    explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=50)]))
                i += 7

        start = time.perf_counter()
        await asyncio.gather(*(predict_loop(k) for k in range(callers)),
                             *(explain_loop(k) for k in range(explainers)))
        return len(latencies) / (time.perf_counter() - start), latencies


def sync_latencies(target: str, requests: list[predict_pb2.PredictRequest], seconds: float
                   ) -> tuple[list[float], list[float]]:
    """One caller with grpc's blocking client (lower per-call latency than grpc.aio's):
    latencies of Predict and, interleaved, of Health.Check (the gRPC floor: an empty answer)."""
    with grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest()
        stub.Predict(requests[0])
        health.Check(check)
        predict_times: list[float] = []
        floor_times: list[float] = []
        stop = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            stub.Predict(requests[i % len(requests)])
            t1 = time.perf_counter()
            health.Check(check)
            floor_times.append(time.perf_counter() - t1)
            predict_times.append(t1 - t0)
            i += 1
    return predict_times, floor_times


def explain_available(target: str, request: predict_pb2.PredictRequest) -> str:
    with grpc.insecure_channel(target) as channel:
        try:
            service_pb2_grpc.SequenceExplainerServiceStub(channel).Explain(
                explain_pb2.ExplainRequest(model_name=MODEL, input=request.inputs[0]), timeout=60)
        except grpc.RpcError as err:
            return f"{err.code().name}: {err.details()}"  # type: ignore[attr-defined]
    return ""


# --- statistics and printing ------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def run(args: argparse.Namespace) -> None:
    env = dict(kv.split("=", 1) for kv in args.server_env)
    with tempfile.TemporaryDirectory(prefix="seqlens-bench-") as tmp:
        repo = Path(tmp)
        described = make_repository(repo, demo_version(args.demo))
        seqs = sequences(repo / MODEL / "1")
        rt = OnnxRuntime(repo / MODEL / "1" / "model.onnx", intra_op_threads=int(env.get("SEQLENS_ONNX_THREADS", 1)))
        requests = [predict_request(s) for s in seqs]
        lengths = [len(s) for s in seqs]
        print(f"model: {described}; inputs: {len(seqs)} review snippets, median {med(lengths):.0f} tokens "
              f"(max {max(lengths)}); server env: {env or 'defaults'}; rounds: {args.rounds} x {args.seconds} s")
        server_cpus = {int(c) for c in args.server_cpus.split(",")} if args.server_cpus else None
        if server_cpus:
            print(f"server pinned to CPUs {sorted(server_cpus)}, load generator to {sorted(os.sched_getaffinity(0))}")
        server = Server(repo, env, server_cpus)
        try:
            callers = [int(c) for c in args.callers.split(",")]
            tput: dict[int, tuple[list[float], list[float]]] = {c: ([], []) for c in callers}
            # the same sequences, 32 per Predict (a caller that batches itself), 2 callers
            multi = [predict_pb2.PredictRequest(model_name=MODEL, inputs=[r.inputs[0] for r in requests[i: i + 32]])
                     for i in range(0, len(requests) - 31, 32)]
            multi_runs: tuple[list[float], list[float]] = ([], [])
            lat_a: list[list[float]] = []
            lat_b: list[list[float]] = []
            lat_floor: list[list[float]] = []
            for r in range(args.rounds):
                for c in callers:  # A then B, alternating, so that drift hits both
                    a, _ = in_process(rt, seqs, c, args.seconds)
                    b, _ = asyncio.run(over_grpc(server.target, requests, c, args.seconds))
                    tput[c][0].append(a)
                    tput[c][1].append(b)
                multi_runs[0].append(in_process(rt, seqs, 32, args.seconds)[0])
                multi_runs[1].append(32 * asyncio.run(over_grpc(server.target, multi, 2, args.seconds))[0])
                lat_a.append(in_process(rt, seqs, 1, args.seconds)[1])
                predict_times, floor_times = sync_latencies(server.target, requests, args.seconds)
                lat_b.append(predict_times)
                lat_floor.append(floor_times)
                print(f"  round {r + 1}: " + ", ".join(f"C={c}: {tput[c][1][-1] / tput[c][0][-1]:.2f}x"
                                                      for c in callers), flush=True)

            print("\n| callers = ONNX batch | in-process ORT (seq/s) | gRPC Predict (seq/s) | ratio |")
            print("| --- | --- | --- | --- |")
            for c in callers:
                a, b = med(tput[c][0]), med(tput[c][1])
                print(f"| {c} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x |")
            a, b = med(multi_runs[0]), med(multi_runs[1])
            print(f"| 2 callers x 32 sequences per Predict vs batch 32 | {a:,.0f} | {b:,.0f} | {b / a:.2f}x |")

            def ms(runs: list[list[float]], q: float) -> float:
                return med([pct(t, q) for t in runs]) * 1e3

            print("\n| batch 1, one caller | in-process ORT | gRPC Predict | difference | gRPC floor (Health.Check) |")
            print("| --- | --- | --- | --- | --- |")
            for q in (50, 99):
                a, b, f = ms(lat_a, q), ms(lat_b, q), ms(lat_floor, q)
                print(f"| p{q} latency (ms) | {a:.3f} | {b:.3f} | +{b - a:.3f} ms | {f:.3f} |")

            missing = explain_available(server.target, requests[0])
            if missing:
                print(f"\nPredict while explanations run: n/a (Explain answered {missing})")
            else:
                quiet_runs: list[list[float]] = []
                busy_runs: list[list[float]] = []
                for _ in range(args.rounds):
                    quiet_runs.append(asyncio.run(over_grpc(server.target, requests, 1, args.seconds))[1])
                    busy_runs.append(asyncio.run(over_grpc(server.target, requests, 1, args.seconds, explainers=2))[1])
                q50, q99 = med([pct(t, 50) for t in quiet_runs]) * 1e3, med([pct(t, 99) for t in quiet_runs]) * 1e3
                b50, b99 = med([pct(t, 50) for t in busy_runs]) * 1e3, med([pct(t, 99) for t in busy_runs]) * 1e3
                print("\n| Predict, one caller | alone | with 2 Explain callers (IG, 50 steps) | ratio |")
                print("| --- | --- | --- | --- |")
                print(f"| p50 latency (ms) | {q50:.3f} | {b50:.3f} | {b50 / q50:.2f}x |")
                print(f"| p99 latency (ms) | {q99:.3f} | {b99:.3f} | {b99 / q99:.2f}x |")
        finally:
            server.stop()


# --- --threads: the measurements behind the thread defaults -------------------------------------------
def time_it(fn: Callable[[], object], seconds: float) -> float:
    """Median seconds per call over ``seconds`` of calls."""
    fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return med(times)


def threads(args: argparse.Namespace) -> None:
    import torch

    with tempfile.TemporaryDirectory(prefix="seqlens-bench-") as tmp:
        repo = Path(tmp)
        described = make_repository(repo, demo_version(args.demo))
        seqs = sequences(repo / MODEL / "1")
        onnx_path = repo / MODEL / "1" / "model.onnx"
        one, two = OnnxRuntime(onnx_path, 1), OnnxRuntime(onnx_path, 2)
        print(f"model: {described}; medians of {args.rounds} alternating rounds")
        print("\n| ONNX Runtime | 1 intra-op thread | 2 intra-op threads | 2 workers x 1 thread |")
        print("| --- | --- | --- | --- |")
        pool = ThreadPoolExecutor(2)
        for batch in (1, 8, 32, 64, 128):
            x, lengths = pad_batch(seqs[:batch])

            def single(rt: OnnxRuntime, x: np.ndarray = x, lengths: np.ndarray = lengths) -> None:
                rt.run(x, lengths)

            def pair(x: np.ndarray = x, lengths: np.ndarray = lengths) -> None:
                for f in [pool.submit(one.run, x, lengths) for _ in range(2)]:
                    f.result()

            rows: list[list[float]] = [[], [], []]
            for _ in range(args.rounds):
                rows[0].append(batch / time_it(partial(single, one), args.seconds / 3))
                rows[1].append(batch / time_it(partial(single, two), args.seconds / 3))
                rows[2].append(2 * batch / time_it(pair, args.seconds / 3))
            print(f"| batch {batch} (seq/s) | " + " | ".join(f"{med(r):,.0f}" for r in rows) + " |")
        pool.shutdown()

        loaded = load_version(repo / MODEL / "1", MODEL, "1")
        module = loaded.torch_module
        print("\n| torch (gradient side) | 1 thread (ms) | 2 threads (ms) |")
        print("| --- | --- | --- |")
        ids = torch.from_numpy(seqs[0])[None]
        for name, rows_n, t in (("forward, batch 1", 1, 0), ("IG chunk fwd+bwd, 50 rows x T=20", 50, 20),
                                ("IG chunk fwd+bwd, 50 rows x T=128", 50, 128)):
            def work(rows_n: int = rows_n, t: int = t) -> None:
                if rows_n == 1:
                    with torch.no_grad():
                        module(ids, torch.tensor([ids.shape[1]]))
                    return
                emb = torch.randn(rows_n, t, module.config.architecture.embedding_dim, requires_grad=True)
                out = module.forward_from_embedding(emb, torch.full((rows_n,), t))
                out[:, 0].sum().backward()

            res: list[list[float]] = [[], []]
            for _ in range(args.rounds):
                for k, n in enumerate((1, 2)):
                    torch.set_num_threads(n)
                    res[k].append(time_it(work, args.seconds / 3) * 1e3)
            print(f"| {name} | {med(res[0]):.3f} | {med(res[1]):.3f} |")


# --- --buckets: what splitting a collected batch by length saves --------------------------------------
def buckets(args: argparse.Namespace) -> None:
    from seqlens.batching import plan_buckets

    with tempfile.TemporaryDirectory(prefix="seqlens-bench-") as tmp:
        repo = Path(tmp)
        described = make_repository(repo, demo_version(args.demo))
        seqs = sequences(repo / MODEL / "1")
        rt = OnnxRuntime(repo / MODEL / "1" / "model.onnx", 1)
        rng = np.random.default_rng(0)
        wide = [rng.integers(2, 1000, size=int(n)).astype(np.int64) for n in rng.integers(1, 257, size=64)]
        print(f"model: {described}; one collected batch of 64 sequences; medians of {args.rounds} rounds")
        print("\n| lengths in the batch | one padded run (ms) | split, overhead 32 steps (ms) | sub-batches |"
              " padded steps: one run / split |")
        print("| --- | --- | --- | --- | --- |")
        for name, batch in (("review snippets (median 21, max 63)", seqs[:64]), ("uniform 1..256", wide)):
            lengths = [len(q) for q in batch]

            def run_plan(plan: list[list[int]], batch: list[np.ndarray] = batch) -> None:
                for bucket in plan:
                    rt.run(*pad_batch([batch[i] for i in bucket]))

            one, split = plan_buckets(lengths, 0), plan_buckets(lengths, 32)
            res: list[list[float]] = [[], []]
            for _ in range(args.rounds):
                res[0].append(time_it(partial(run_plan, one), args.seconds / 2) * 1e3)
                res[1].append(time_it(partial(run_plan, split), args.seconds / 2) * 1e3)
            cells = [sum(len(b) * lengths[b[-1]] for b in plan) for plan in (one, split)]
            print(f"| {name} | {med(res[0]):.3f} | {med(res[1]):.3f} | {len(split)} | {cells[0]:,} / {cells[1]:,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="per measurement")
    parser.add_argument("--callers", default="1,8,32,64")
    parser.add_argument("--demo", default="auto", help="auto (use the demo repository if built), none, or PATH")
    parser.add_argument("--server-env", nargs="*", default=[], help="SEQLENS_<NAME>=value settings for the server")
    parser.add_argument("--threads", action="store_true", help="measure thread settings instead")
    parser.add_argument("--buckets", action="store_true", help="measure length buckets in a batch instead")
    parser.add_argument("--cpus", default="", help="run pinned to these CPUs (e.g. 2,3: a 2-core VM on a big "
                                                   "machine); the server subprocess inherits it")
    parser.add_argument("--server-cpus", default="", help="pin the server to these CPUs instead (e.g. 2,3 with "
                                                          "--cpus 4,5: the load generator off the server's cores)")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        print(f"pinned to CPUs {sorted(os.sched_getaffinity(0))} of {os.cpu_count()}")
    if args.threads:
        threads(args)
    elif args.buckets:
        buckets(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
