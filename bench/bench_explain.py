"""Explain vs Captum, side by side: medians of alternating A/B runs and their ratio.

    .venv/bin/python bench/bench_explain.py [--repeats 7] [--demo auto|none|PATH]

A: Explain over gRPC on loopback, against a ``seqlens serve`` subprocess (default settings:
   flush-to-zero gradient workers; a lone explanation splits its rows over the CPUs).
   B: Captum as users run it: in a process of its own (bench/captum_worker.py) with torch's
   default thread count and no flush-to-zero, same model, input, baseline, target and steps;
   its own compute time (without the pipe). IG rows also get a second line against Captum
   pinned to 1 torch thread (the old comparison). Rows:
- IG: Explain integrated_gradients (Gauss-Legendre, 50 steps) vs LayerIntegratedGradients on
  model.embedding (gausslegendre, 50 steps, return_convergence_delta=True since Explain
  returns the delta), at T = 32, 128, 512; "max rel diff" compares the per-token scores.
- occlusion: Explain occlusion (window 1) vs Captum Occlusion (defaults: one perturbation per
  forward) and vs FeatureAblation with perturbations_per_eval = T (its best setting).
- adaptive IG (tolerance 0.01) vs Captum LIG at n_steps = 50, and vs Captum at the smallest
  n_steps per input within 1% (equal accuracy); "error" is the relative L1 distance of the
  per-token scores to a 512-step Gauss-Legendre reference. ``--only adaptive`` runs these rows.
- peak RSS of IG (50 steps) at T = 4096, in a fresh subprocess each, with the default
  Settings.gradient_chunk_elements and with chunking off.
Models: an LSTM 64 -> 128 with random weights (the DESIGN pitfall's size), plus the trained
demo ``sentiment`` model when the demo repository is already built (``--demo auto``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from harness import Server
from seqlens import load_model
from seqlens.export import export_model
from seqlens.families import build_model
from seqlens.schema import ModelConfig
from seqlens_client._proto.seqlens.v1 import explain_pb2, types_pb2

VOCAB = ["<pad>", "<unk>", *[f"w{i}" for i in range(998)]]
STEPS = 50
CAPTUM_LADDER = (50, 100, 200, 400, 512)  # Captum n_steps tried for the equal-accuracy comparison
REVIEWS = [
    ("a thoroughly enjoyable film with a witty script , wonderful performances and a story that never "
     "loses its nerve , even when the plot takes one turn too many in the last act"),
    "dull , lifeless and far too long ; the plot never comes together and the jokes land with a thud",
    "the acting is superb but the story is a tedious mess that wastes a talented cast",
    "one of the most charming and heartfelt movies of the year",
    "an ugly , boring and pointless exercise in style over substance",
]


def random_lstm_config() -> ModelConfig:
    return ModelConfig.model_validate({
        "task": "classification", "max_length": 4096, "labels": ["neg", "pos"],
        "input": {"kind": "tokens", "tokenizer": "word"},
        "architecture": {"input_layer": "embedding", "embedding_dim": 64, "cell": "lstm", "num_layers": 1,
                         "hidden_size": 128, "bidirectional": False, "head": "last"}})


def make_repository(root: Path, demo: Path | None) -> list[str]:
    export_model(build_model(random_lstm_config(), len(VOCAB), seed=0).eval(), root / "lstm" / "1",
                 vocabulary=VOCAB)
    models = ["lstm"]
    if demo is not None:
        version = max((demo / "sentiment").iterdir())
        shutil.copytree(version, root / "sentiment" / version.name)
        models.append("sentiment")
    return models


def find_demo(choice: str) -> Path | None:
    if choice == "none":
        return None
    if choice != "auto":
        return Path(choice)
    from seqlens.demo.cache import COMPLETE_MARKER, build_hash, cache_root

    path = cache_root() / f"demo-{build_hash()}"
    return path if (path / COMPLETE_MARKER).is_file() else None


class Captum:
    """A captum_worker.py subprocess; ``threads`` 0 = torch's default (as users run it)."""

    def __init__(self, repository: Path, threads: int = 0) -> None:
        cmd = [sys.executable, str(Path(__file__).with_name("captum_worker.py")), str(repository)]
        self.proc = subprocess.Popen([*cmd, "--threads", str(threads)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.threads = int(json.loads(self.proc.stdout.readline())["threads"])

    def __call__(self, **req: object) -> CaptumAnswer:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        got = json.loads(self.proc.stdout.readline())
        return CaptumAnswer(got["seconds"], np.asarray(got["attr"], dtype=np.float64))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


class CaptumAnswer:
    def __init__(self, seconds: float, attr: np.ndarray) -> None:
        self.seconds = seconds
        self.attr = attr


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds and output; Captum answers carry their own compute time (no pipe)."""
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    if isinstance(out, CaptumAnswer):
        return out.seconds, out.attr
    if isinstance(out, list) and out and all(isinstance(o, CaptumAnswer) for o in out):
        return sum(o.seconds for o in out), [o.attr for o in out]
    return seconds, out


def ab(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float, object, object]:
    """Alternating A/B runs after one warm-up each; medians in seconds and the last outputs."""
    a(), b()
    out_a: object = None
    out_b: object = None
    ta, tb = [], []
    for _ in range(repeats):
        t, out_a = timed(a)
        ta.append(t)
        t, out_b = timed(b)
        tb.append(t)
    return statistics.median(ta), statistics.median(tb), out_a, out_b


def decode(t: types_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(t.data, dtype="<f4").reshape(list(t.shape))


def rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def rel_l1(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).sum() / max(np.abs(ref).sum(), 1e-30))


class Case:
    def __init__(self, server: Server, captum: Captum, repo: Path, model: str, length: int = 0, seed: int = 0,
                 text: str = "") -> None:
        self.server = server
        self.captum = captum
        self.model = model
        self.loaded = load_model(repo, model)
        tokenizer = self.loaded.tokenizer
        assert tokenizer is not None
        if text:
            self.ids = np.array([t.id for t in tokenizer.encode(text)], dtype=np.int64)
        else:
            rng = np.random.default_rng(seed)
            self.ids = rng.integers(2, tokenizer.vocab_size, size=length).astype(np.int64)
        self.lengths = torch.tensor([len(self.ids)])
        module = self.loaded.torch_module
        with torch.no_grad():
            logits = module(torch.from_numpy(self.ids)[None], self.lengths)[0]
        self.target = int(logits.argmax())
        self.forward = lambda ids, lengths: module(ids, lengths)

    def explain(self, *methods: explain_pb2.AttributionMethod) -> explain_pb2.ExplainResponse:
        return self.server.stub.Explain(explain_pb2.ExplainRequest(
            model_name=self.model,
            input=types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=self.ids.tolist())),
            target=explain_pb2.Target(class_index=self.target), methods=methods), timeout=600)

    def captum_ig(self, steps: int = STEPS, captum: Captum | None = None) -> CaptumAnswer:
        return (captum or self.captum)(op="ig", model=self.model, ids=self.ids.tolist(), target=self.target,
                                       steps=steps)

    def captum_ig_attr(self, steps: int = STEPS) -> np.ndarray:
        return self.captum_ig(steps).attr


def row(name: str, ours: float, theirs: float, target: str, note: str = "") -> dict[str, str]:
    return {"case": name, "seqlens ms": f"{ours * 1e3:.1f}", "Captum ms": f"{theirs * 1e3:.1f}",
            "ratio": f"{ours / theirs:.2f}x", "target": target, "note": note}


def ig_row(case: Case, repeats: int, one_thread: Captum) -> list[dict[str, str]]:
    """IG vs Captum as users run it (default threads), and vs Captum on 1 torch thread."""
    method = explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=STEPS)
    target = "<= 1.0x" if len(case.ids) <= 128 else "<= 0.25x"
    out = []
    for captum, label, goal in ((case.captum, f"{case.captum.threads} threads (default)", target),
                                (one_thread, "1 thread", "(old row)")):
        ta, tb, resp, ref = ab(lambda: case.explain(method), lambda c=captum: case.captum_ig(captum=c), repeats)
        ours = decode(resp.attributions[0].scores)  # type: ignore[attr-defined]
        out.append(row(f"IG {case.model} T={len(case.ids)} vs Captum {label}", ta, tb, goal,
                       f"max rel diff {rel_diff(ours, ref):.1e}"))  # type: ignore[arg-type]
    return out


def occlusion_rows(case: Case, repeats: int, defaults: bool) -> list[dict[str, str]]:
    t = len(case.ids)
    method = explain_pb2.AttributionMethod(name="occlusion", window=1)
    req = {"model": case.model, "ids": case.ids.tolist(), "target": case.target}
    captum = {
        "Occlusion()": lambda: case.captum(op="occlusion", **req),
        "FeatureAblation(ppe=T)": lambda: case.captum(op="ablation", **req),
    }
    targets = {"Occlusion()": "<= 0.2x", "FeatureAblation(ppe=T)": "<= 0.5x"}
    out = []
    for name, run in captum.items():
        if name == "Occlusion()" and not defaults:
            continue
        ta, tb, resp, ref = ab(lambda: case.explain(method), run, repeats)
        ours = decode(resp.attributions[0].scores)  # type: ignore[attr-defined]
        out.append(row(f"occlusion {case.model} T={t} vs {name}", ta, tb, targets[name],
                       f"max rel diff {rel_diff(ours, ref):.1e}"))  # type: ignore[arg-type]
    return out


def adaptive_rows(cases: list[Case], repeats: int) -> list[dict[str, str]]:
    """Adaptive IG vs Captum, summed over the cases; errors vs a 512-step reference.

    Two Captum baselines: n_steps = 50 (the DESIGN's target; its error is reported, and it
    need not meet 1%) and, per input, the smallest n in CAPTUM_LADDER whose error is <= 1%
    (the same accuracy as adaptive IG is asked for).
    """
    adaptive = explain_pb2.AttributionMethod(name="integrated_gradients", adaptive=True, tolerance=0.01)
    reference = explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=512)
    refs = [decode(c.explain(reference).attributions[0].scores) for c in cases]
    ta, tb, resps, captum = ab(lambda: [c.explain(adaptive) for c in cases],
                               lambda: [c.captum_ig() for c in cases], repeats)
    atts = [r.attributions[0] for r in resps]  # type: ignore[attr-defined]
    errors = [rel_l1(decode(a.scores), ref) for a, ref in zip(atts, refs, strict=True)]
    theirs = [rel_l1(c, ref) for c, ref in zip(captum, refs, strict=True)]  # type: ignore[call-overload]
    lengths = [len(c.ids) for c in cases]
    note = (f"T {lengths}; adaptive rows {[a.n_steps for a in atts]}, converged {all(a.converged for a in atts)}, "
            f"error vs 512 steps {fmt(errors)}; Captum n=50 error {fmt(theirs)}")
    rows = [row(f"adaptive IG {cases[0].model} vs Captum n=50", ta, tb, "<= 0.5x", note)]
    same = [next((n for n in CAPTUM_LADDER if rel_l1(c.captum_ig_attr(n), ref) <= 0.01), CAPTUM_LADDER[-1])
            for c, ref in zip(cases, refs, strict=True)]
    if same != [STEPS] * len(cases):
        ta, tb, _, _ = ab(lambda: [c.explain(adaptive) for c in cases],
                          lambda: [c.captum_ig(n) for c, n in zip(cases, same, strict=True)], repeats)
        rows.append(row(f"adaptive IG {cases[0].model} vs Captum at 1% error", ta, tb, "(fairness check)",
                        f"Captum n_steps per input {same} (smallest of {list(CAPTUM_LADDER)} within 1%)"))
    return rows


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.0e}" for v in values) + "]"


RSS_SCRIPT = """
import json, resource, sys
import numpy as np
from seqlens import load_model
from seqlens.config import Settings
from seqlens.explain import ExplainRequest, explain
from seqlens.explainers.gradients import init_gradient_thread
from seqlens.explainers.options import MethodOptions
from seqlens.inputs import SequenceInput
init_gradient_thread()
loaded = load_model(sys.argv[1], "lstm")
ids = np.random.default_rng(0).integers(2, 1000, size=4096).astype(np.int64)
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
before = rss_mb()
settings = Settings(gradient_chunk_elements=int(sys.argv[2]))
explain(loaded, ExplainRequest("lstm", SequenceInput(token_ids=ids),
        methods=(MethodOptions("integrated_gradients", n_steps=50),)), settings)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"before_mb": before, "peak_mb": peak}))
"""


def rss_rows(repo: Path) -> list[dict[str, str]]:
    from seqlens.config import Settings

    out = []
    default = Settings.model_fields["gradient_chunk_elements"].default
    for label, chunk in (("default chunk", default), ("no chunking", 10**15)):
        proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(repo), str(chunk)], capture_output=True,
                              text=True, timeout=600, check=True)
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        rows_per_chunk = max(1, chunk // (4096 * 64))
        out.append({"case": f"IG T=4096 peak RSS, {label} ({min(rows_per_chunk, 50)} rows/pass)",
                    "seqlens ms": "", "Captum ms": "", "ratio": "",
                    "target": "bounded by chunk",
                    "note": f"+{m['peak_mb'] - m['before_mb']:.0f} MB over "
                            f"{m['before_mb']:.0f} MB after load"})
    return out


def print_table(rows: list[dict[str, str]]) -> None:
    cols = list(rows[0])
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in cols]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(r[c].ljust(w) for c, w in zip(cols, widths, strict=True)) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--demo", default="auto", help="auto (use it if built), none, or a repository path")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--only", dest="only", choices=["all", "adaptive", "ig"], default="all",
                        help="adaptive: the adaptive IG rows; ig: the fixed-step IG rows")
    args = parser.parse_args()
    demo = find_demo(args.demo)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        models = make_repository(repo, demo)
        server = Server(repo)
        captum, one_thread = Captum(repo), Captum(repo, threads=1)
        try:
            rows = []
            if args.only in ("all", "ig"):
                for t in (32, 128, 512):
                    rows += ig_row(Case(server, captum, repo, "lstm", t), args.repeats, one_thread)
            if args.only == "all":
                rows += occlusion_rows(Case(server, captum, repo, "lstm", 128), args.repeats, defaults=True)
                rows += occlusion_rows(Case(server, captum, repo, "lstm", 512), args.repeats, defaults=False)
            few = max(3, args.repeats // 2)
            if args.only in ("all", "adaptive"):
                rows += adaptive_rows([Case(server, captum, repo, "lstm", 64, seed=s) for s in range(5)], few)
            if "sentiment" in models:
                reviews = [Case(server, captum, repo, "sentiment", text=text) for text in REVIEWS]
                if args.only in ("all", "ig"):
                    rows += ig_row(reviews[0], args.repeats, one_thread)
                if args.only in ("all", "adaptive"):
                    rows += adaptive_rows(reviews, few)
            threads = captum.threads
        finally:
            server.close()
            captum.close()
            one_thread.close()
        if not args.skip_rss and args.only == "all":
            rows += rss_rows(repo)
    print(f"torch {torch.__version__}; Captum in its own process with torch's default {threads} thread(s), no "
          f"flush-to-zero (second IG lines: 1 thread); seqlens serve subprocess with default settings; "
          f"medians of {args.repeats} alternating runs")
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
