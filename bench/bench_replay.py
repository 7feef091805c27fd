"""Custom graphs: the torch replay of model.onnx vs the eager user module, side by side.

    .venv/bin/python bench/bench_replay.py [--repeats 7]

Rows (medians of alternating A/B runs, ratio A/B):
- fwd+bwd: ``ReplayModule.forward_from_embedding`` + backward vs the eager module's forward +
  backward at the same attribution point, batch 1 and 32, T = 128, both in this process with
  one torch thread (the server's ``torch_threads`` default; the same for both sides).
- IG: Explain integrated_gradients (50 steps) over gRPC on loopback against a ``seqlens serve``
  subprocess (default settings) vs Captum on the EAGER module in a worker process of its own,
  where seqlens set no flags (torch's default threads), timed there per call:
  LayerIntegratedGradients at ``model.embedding`` (attention over nn.LSTM) or
  IntegratedGradients on the one-hot input (MyRNN's functional Gather); "max rel diff"
  compares the per-step scores. A second Captum worker on one thread shows how much of the gap
  is torch's default threads fighting for a busy machine's cores.
Models (random weights, exported by the TorchScript exporter as a user would): MyRNN (the
issue's cell, hidden 128, a scripted loop -> ONNX Loop) and attention pooling over nn.LSTM
64 -> 128.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from seqlens.runtimes.replay import GraphNames, ReplayGraph, ReplayModule
from seqlens_client._proto.seqlens.v1 import explain_pb2, types_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import Server

from tests.custom_models import VOCAB, Custom, make_attention, make_myrnn

STEPS = 50
T = 128


def ab(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float, object, object]:
    """Alternating A/B runs after one warm-up each; medians in seconds and the last outputs."""
    out_a, out_b = a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out_a = a()
        ta.append(time.perf_counter() - start)
        start = time.perf_counter()
        out_b = b()
        tb.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb), out_a, out_b


def replay_of(c: Custom) -> ReplayModule:
    g = c.graph
    return ReplayModule(ReplayGraph(onnx.load_from_string(c.onnx_bytes)),
                        GraphNames(g["inputs"], g["lengths"], g["output"], g["attribute_at"]))


def one_hot(ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(ids, len(VOCAB)).float()


def eager_embed(c: Custom, ids: torch.Tensor) -> torch.Tensor:
    module = c.module
    return module.embedding(ids) if hasattr(module, "embedding") else one_hot(ids)  # type: ignore[operator]


def fwd_bwd_rows(c: Custom, repeats: int) -> None:
    """Both sides on the same thread count (set by ``main``)."""
    m = replay_of(c)
    rng = np.random.default_rng(0)
    for batch in (1, 32):
        ids = torch.from_numpy(rng.integers(2, len(VOCAB), size=(batch, T)).astype(np.int64))
        lengths = torch.full((batch,), T, dtype=torch.int64)
        emb = eager_embed(c, ids).detach()

        def replay(emb: torch.Tensor = emb, lengths: torch.Tensor = lengths) -> torch.Tensor:
            x = emb.clone().requires_grad_(True)
            m.forward_from_embedding(x, lengths).sum().backward()
            assert x.grad is not None
            return x.grad

        def eager(emb: torch.Tensor = emb, lengths: torch.Tensor = lengths) -> torch.Tensor:
            x = emb.clone().requires_grad_(True)
            c.eager_from_attribution(x, lengths).sum().backward()
            assert x.grad is not None
            return x.grad

        ta, tb, ga, gb = ab(replay, eager, repeats)
        diff = float((ga - gb).abs().max())  # type: ignore[operator]
        print(f"| {c.name} | fwd+bwd, batch {batch}, T={T} | {ta * 1e3:.1f} ms | {tb * 1e3:.1f} ms | "
              f"{ta / tb:.2f}x | grad diff {diff:.1e} |", flush=True)


def ig_input(c: Custom) -> tuple[np.ndarray, int]:
    ids = np.random.default_rng(1).integers(2, len(VOCAB), size=T).astype(np.int64)
    with torch.no_grad():
        target = int(c.eager(torch.from_numpy(ids)[None], torch.tensor([T]))[0].argmax())
    return ids, target


def captum_ig(c: Custom, ids: np.ndarray, target: int) -> np.ndarray:
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    x = torch.from_numpy(ids)[None]
    lengths = torch.tensor([T])
    if hasattr(c.module, "embedding"):
        lig = LayerIntegratedGradients(lambda i, n: c.eager(i, n), c.module.embedding)
        att = lig.attribute(x, torch.zeros_like(x), target=target, additional_forward_args=(lengths,),
                            n_steps=STEPS, method="gausslegendre", return_convergence_delta=True)[0]
    else:
        ig = IntegratedGradients(lambda e, n: c.eager_from_attribution(e, n))
        att = ig.attribute(one_hot(x), one_hot(torch.zeros_like(x)), target=target,
                           additional_forward_args=(lengths,), n_steps=STEPS, method="gausslegendre",
                           return_convergence_delta=True)[0]
    return att[0].sum(-1).detach().numpy()


def captum_worker() -> None:
    """A process of its own for Captum (no seqlens settings): one IG per request line on stdin."""
    customs = {c.name: c for c in make_customs()}
    for line in sys.stdin:
        name = line.strip()
        c = customs[name]
        ids, target = ig_input(c)
        start = time.perf_counter()
        scores = captum_ig(c, ids, target)
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "scores": scores.tolist(), "threads": torch.get_num_threads()}),
              flush=True)


class CaptumProcess:
    def __init__(self, threads: int = 0) -> None:
        extra = ["--threads", str(threads)] if threads else []
        self.proc = subprocess.Popen([sys.executable, __file__, "--captum-worker", *extra], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, name: str) -> tuple[float, np.ndarray, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return float(reply["seconds"]), np.array(reply["scores"]), int(reply["threads"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


def ig_row(c: Custom, server: Server, worker: CaptumProcess, repeats: int) -> None:
    ids, target = ig_input(c)
    request = explain_pb2.ExplainRequest(
        model_name=c.name, input=types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=ids.tolist())),
        target=explain_pb2.Target(class_index=target),
        methods=[explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=STEPS)])

    def ours() -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        resp = server.stub.Explain(request, timeout=600)
        seconds = time.perf_counter() - start
        s = resp.attributions[0].scores
        return seconds, np.frombuffer(s.data, dtype="<f4").reshape(list(s.shape))

    ours()
    threads = worker.run(c.name)[2]  # warm-ups
    ta, tb = [], []
    a = b = np.zeros(0)
    for _ in range(repeats):  # alternating A/B
        seconds, a = ours()
        ta.append(seconds)
        seconds, b, _ = worker.run(c.name)
        tb.append(seconds)
    ma, mb = statistics.median(ta), statistics.median(tb)
    rel = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
    print(f"| {c.name} | IG {STEPS} steps over gRPC vs Captum on the eager module ({threads} threads), T={T} | "
          f"{ma * 1e3:.1f} ms | {mb * 1e3:.1f} ms | {ma / mb:.2f}x | max rel diff {rel:.1e} |", flush=True)


def make_customs() -> list[Custom]:
    return [make_myrnn(0, hidden=128, classes=2), make_attention(0, emb=64, hidden=128, classes=2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--captum-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.captum_worker:
        if args.threads:
            torch.set_num_threads(args.threads)
        captum_worker()
        return
    customs = make_customs()
    workers = [CaptumProcess(), CaptumProcess(threads=1)]
    torch.set_num_threads(1)  # fwd+bwd rows: both sides on one thread, as the server runs gradients
    print(f"torch {torch.__version__}")
    print("| model | what | A: seqlens (replay) | B: eager torch / Captum | A/B | check |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    try:
        for c in customs:
            fwd_bwd_rows(c, args.repeats)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for c in customs:
                c.write_version(root / c.name / "1", max_length=4096)
            server = Server(root)
            try:
                for c in customs:
                    for worker in workers:
                        ig_row(c, server, worker, args.repeats)
            finally:
                server.close()
    finally:
        for worker in workers:
            worker.close()


if __name__ == "__main__":
    main()
