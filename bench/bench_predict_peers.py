"""OIP ModelInfer: seqlens vs KServe's Python model server, same model.onnx, same load generator.

    .venv/bin/python bench/bench_predict_peers.py [--rounds 5] [--seconds 3] [--demo auto|none|PATH]
        [--server-env SEQLENS_WORKERS=2 ...] [--only seqlens]

A: ``seqlens serve`` (a subprocess, default settings unless --server-env). B: KServe 0.21's
``ModelServer`` with a ~20-line ``kserve.Model`` (bench/kserve_peer.py) around an ONNX Runtime
session of the same model.onnx with the same session options (1 intra-op thread). KServe pins
protobuf<7 and seqlens uses 7, so B runs from its own virtualenv, made on first use under
``$SEQLENS_CACHE_DIR`` (default ~/.cache/seqlens)/bench/kserve-0.21 with
``pip install 'kserve==0.21.*' onnxruntime`` (no torch there). Outside ``make test``.

One load generator (this process, grpc.aio, one channel) drives both with the same requests:
INT64 ``inputs`` [B, T] as raw_input_contents plus ``lengths`` [B]:
- 32 callers, 1 sequence per call;
- 2 callers, 32 sequences per call (padded to the longest).
Runs alternate A, B, A, B, ...; each table cell is the median over rounds, the ratio is of
medians. ``--processes N`` runs seqlens with N worker processes sharing the port
(SEQLENS_WORKERS=N) and gives each caller its own connection (for both servers), so that the
kernel can spread them. Server CPU per call: utime + stime of the server process and its children
(/proc/<pid>/stat) over the run, divided by the calls answered. Inputs: review snippets as in
bench_predict.py (median ~20 tokens). The load generator shares the cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
from bench_predict import MODEL, Server, demo_version, make_repository, sequences
from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.inference import grpc_service_pb2_grpc as oip_grpc

KSERVE = "kserve==0.21.*"
HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


# --- the peer -----------------------------------------------------------------------------------
def peer_python() -> Path:
    """The KServe virtualenv's python, made on first use (never with torch)."""
    cache = Path(os.environ.get("SEQLENS_CACHE_DIR") or Path.home() / ".cache" / "seqlens")
    venv = cache / "bench" / "kserve-0.21"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.is_file():
        print(f"creating the KServe peer virtualenv in {venv} (one time)", flush=True)
        base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", KSERVE, "onnxruntime"], check=True)
        marker.write_text(KSERVE + "\n")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KServePeer:
    def __init__(self, python: Path, model: Path) -> None:
        self.port, http = free_port(), free_port()
        self.proc = subprocess.Popen([str(python), str(HERE / "kserve_peer.py"), str(model), str(self.port), str(http)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/{MODEL}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            self.stop()
            raise RuntimeError("the KServe peer did not start")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


# --- CPU accounting -----------------------------------------------------------------------------
def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants (live ones), in seconds."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / TICK
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += times.get(p, 0.0)
        todo.extend(c for c, pp in parents.items() if pp == p)
    return total


# --- the load -----------------------------------------------------------------------------------
def infer_request(seqs: list[np.ndarray]) -> oip.ModelInferRequest:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    x = np.zeros((len(seqs), int(lengths.max())), dtype=np.int64)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
    tensor = oip.ModelInferRequest.InferInputTensor
    return oip.ModelInferRequest(
        model_name=MODEL, inputs=[tensor(name="inputs", datatype="INT64", shape=list(x.shape)),
                                  tensor(name="lengths", datatype="INT64", shape=[len(seqs)])],
        raw_input_contents=[x.astype("<i8").tobytes(), lengths.astype("<i8").tobytes()])


async def load(target: str, requests: list[oip.ModelInferRequest], callers: int, seconds: float,
               connections: int = 1) -> tuple[int, list[float]]:
    """Calls answered and their latencies, ``callers`` concurrent loops over ``connections``
    channels (each its own TCP connection; caller k uses channel k mod connections)."""
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(connections)]
    try:
        stubs = [oip_grpc.GRPCInferenceServiceStub(c) for c in channels]
        for k, r in enumerate(requests[:max(callers, connections)]):
            await stubs[k % connections].ModelInfer(r)  # connected and warm
        latencies: list[float] = []
        stop = time.perf_counter() + seconds

        async def loop(k: int) -> None:
            stub = stubs[k % connections]
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                await stub.ModelInfer(requests[i % len(requests)])
                latencies.append(time.perf_counter() - t0)
                i += callers

        await asyncio.gather(*(loop(k) for k in range(callers)))
        return len(latencies), latencies
    finally:
        for c in channels:
            await c.close()


def measure(pids: list[int], target: str, requests: list[oip.ModelInferRequest], callers: int, per_call: int,
            seconds: float, connections: int) -> dict[str, float]:
    cpu0, t0 = sum(map(tree_cpu_seconds, pids)), time.perf_counter()
    calls, lat = asyncio.run(load(target, requests, callers, seconds, connections))
    wall, cpu = time.perf_counter() - t0, sum(map(tree_cpu_seconds, pids)) - cpu0
    arr = np.asarray(lat)
    return {"seq_s": calls * per_call / wall, "p50": float(np.percentile(arr, 50)) * 1e3,
            "p99": float(np.percentile(arr, 99)) * 1e3, "cpu_ms": cpu / max(1, calls) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--demo", default="auto", help="auto (use the demo repository if built), none, or PATH")
    parser.add_argument("--server-env", nargs="*", default=[], help="SEQLENS_<NAME>=value settings for seqlens")
    parser.add_argument("--only", choices=["seqlens"], default=None, help="skip the KServe peer (profiling)")
    parser.add_argument("--processes", type=int, default=1,
                        help="seqlens worker processes sharing one port (SEQLENS_WORKERS=N); the load then opens one "
                             "connection per caller for both servers, so the kernel can spread them")
    parser.add_argument("--connections", type=int, default=0,
                        help="connections per load (default: 1, or one per caller with --processes > 1)")
    args = parser.parse_args()
    env = dict(kv.split("=", 1) for kv in args.server_env)
    python = None if args.only else peer_python()
    with tempfile.TemporaryDirectory(prefix="seqlens-bench-") as tmp:
        repo = Path(tmp)
        described = make_repository(repo, demo_version(args.demo))
        seqs = sequences(repo / MODEL / "1")
        singles = [infer_request([s]) for s in seqs]
        multi = [infer_request(seqs[i: i + 32]) for i in range(0, len(seqs) - 31, 32)]
        cases = [("32 callers x 1 sequence", singles, 32, 1), ("2 callers x 32 sequences", multi, 2, 32)]
        conns = args.connections or ("one per caller" if args.processes > 1 else 1)
        print(f"model: {described}; {len(seqs)} review snippets, median {statistics.median(map(len, seqs)):.0f} "
              f"tokens; seqlens env: {env or 'defaults'}; connections: {conns}; {args.rounds} rounds x "
              f"{args.seconds} s, alternating")
        if args.processes > 1:  # the supervised workers mode: its process tree is counted
            env = {**env, "SEQLENS_WORKERS": str(args.processes)}
        ours_all = [Server(repo, env)]
        peer = KServePeer(python, repo / MODEL / "1" / "model.onnx") if python else None
        label = "seqlens" if args.processes == 1 else f"seqlens x{args.processes}"
        servers = [(label, [s.proc.pid for s in ours_all], ours_all[0].target)]
        if peer is not None:
            servers.append(("KServe 0.21", [peer.proc.pid], peer.target))
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        try:
            for r in range(args.rounds):
                for case, reqs, callers, per_call in cases:
                    conns = args.connections or (callers if args.processes > 1 else 1)
                    for name, pids, target in servers if r % 2 == 0 else servers[::-1]:
                        results.setdefault((case, name), []).append(
                            measure(pids, target, reqs, callers, per_call, args.seconds, conns))
                print(f"  round {r + 1}: " + ", ".join(
                    f"{case} {name} {results[(case, name)][-1]['seq_s']:,.0f} seq/s"
                    for case, *_ in cases for name, *_ in servers), flush=True)
        finally:
            for ours in ours_all:
                ours.stop()
            if peer is not None:
                peer.stop()

    def med(case: str, name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[(case, name)])

    names = [s[0] for s in servers]
    print("\n| case | " + " | ".join(f"{n} seq/s | {n} p50 / p99 (ms) | {n} CPU per call (ms)" for n in names)
          + (" | seq/s ratio | CPU ratio |" if len(names) == 2 else " |"))
    print("| --- " * (1 + 3 * len(names) + (2 if len(names) == 2 else 0)) + "|")
    for case, *_ in cases:
        cells = [f"{med(case, n, 'seq_s'):,.0f} | {med(case, n, 'p50'):.2f} / {med(case, n, 'p99'):.2f} | "
                 f"{med(case, n, 'cpu_ms'):.3f}" for n in names]
        line = f"| {case} | " + " | ".join(cells)
        if len(names) == 2:
            line += (f" | {med(case, names[0], 'seq_s') / med(case, names[1], 'seq_s'):.2f}x"
                     f" | {med(case, names[0], 'cpu_ms') / med(case, names[1], 'cpu_ms'):.2f}x")
        print(line + " |")


if __name__ == "__main__":
    main()
