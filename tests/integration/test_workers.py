"""``seqlens serve`` with SEQLENS_WORKERS=2: two processes on one port, one merged /metrics,
health SERVING once both serve, and a SIGTERM drain that cuts no call."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from seqlens import load_model
from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.inference import grpc_service_pb2_grpc as oip_grpc

from tests.factories import export_tiny

REFUSED = "server is shutting down; retry on another replica"
CONNECTIONS = 8


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workers")
    export_tiny(root, "words", seed=4, cell="lstm", task="classification", tokens=True)
    return root


class Supervisor:
    def __init__(self, repo: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEQLENS_")}
        env.update({"SEQLENS_WORKERS": "2", "SEQLENS_POLL_INTERVAL_S": "0", "SEQLENS_DRAIN_GRACE_S": "20"})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seqlens.cli", "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
             "--port", "0", "--metrics-port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=env)
        self.ready: dict[str, object] = {}
        got = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                if not got.is_set() and "seqlens ready" in line:
                    self.ready = json.loads(line)
                    got.set()

        threading.Thread(target=read, daemon=True).start()
        while not got.wait(0.2):
            assert self.proc.poll() is None, "the supervisor exited before it was ready"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.ready['port']}"

    def children(self) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2:].split()[1]) == self.proc.pid:
                    found.append(int(entry))
        return found

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ready['metrics_port']}/metrics", timeout=10) as r:
            return str(r.read().decode())


def _request(ids: list[int]) -> oip.ModelInferRequest:
    tensor = oip.ModelInferRequest.InferInputTensor
    return oip.ModelInferRequest(model_name="words", inputs=[tensor(name="inputs", datatype="INT64",
                                                                     shape=[1, len(ids)])],
                                 raw_input_contents=[np.asarray(ids, dtype="<i8").tobytes()])


async def _drive(target: str, calls_each: int | None, stop_after: float | None = None,
                 on_started: object = None) -> tuple[collections.Counter[str], list[np.ndarray]]:
    """CONNECTIONS callers, each on its own connection: ``calls_each`` calls, or until
    ``stop_after`` seconds after ``on_started`` (a callable) ran."""
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CONNECTIONS)]
    outcomes: collections.Counter[str] = collections.Counter()
    outputs: list[np.ndarray] = []
    done = asyncio.Event()

    async def caller(k: int) -> None:
        stub = oip_grpc.GRPCInferenceServiceStub(channels[k])
        n = 0
        while (calls_each is None and not done.is_set()) or (calls_each is not None and n < calls_each):
            n += 1
            try:
                reply = await stub.ModelInfer(_request([2, 3, 4 + k % 5]), timeout=60)
                outcomes["OK"] += 1
                outputs.append(np.frombuffer(reply.raw_output_contents[0], dtype="<f4"))
            except grpc.aio.AioRpcError as err:
                outcomes[f"{err.code().name}: {err.details()}"] += 1
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(caller(k)) for k in range(CONNECTIONS)]
    if stop_after is not None:
        await asyncio.sleep(0.5)
        assert callable(on_started)
        on_started()
        await asyncio.sleep(stop_after)
        done.set()
    await asyncio.gather(*tasks)
    for c in channels:
        await c.close()
    return outcomes, outputs


def _requests_ok(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("seqlens_requests_total{") and 'rpc="ModelInfer"' in line and 'code="OK"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_two_workers_share_the_port_merge_metrics_and_drain(repo: Path) -> None:
    sup = Supervisor(repo)
    try:
        assert sup.ready["workers"] == 2
        assert len(sup.children()) == 2
        with grpc.insecure_channel(sup.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        outcomes, outputs = asyncio.run(_drive(sup.target, calls_each=25))
        assert outcomes == {"OK": 25 * CONNECTIONS}
        loaded = load_model(repo, "words")  # oracle: in-process ONNX Runtime
        want = {k: loaded.onnx.run(np.array([[2, 3, 4 + k]]), np.array([3]))[0] for k in range(5)}
        assert all(any(np.allclose(o, w, atol=1e-5) for w in want.values()) for o in outputs)
        metrics = sup.metrics()
        assert _requests_ok(metrics) == 25 * CONNECTIONS  # one view: both processes' calls
        assert 'seqlens_model_ready{model="words",version="1"} 1.0' in metrics

        children = sup.children()
        outcomes, _ = asyncio.run(_drive(sup.target, None, stop_after=3.0,
                                         on_started=lambda: sup.proc.send_signal(signal.SIGTERM)))
        assert outcomes["OK"] > 0
        assert set(outcomes) <= {"OK", f"UNAVAILABLE: {REFUSED}"}, outcomes  # refused or answered, never cut
        assert sup.proc.wait(60) == 0
        end = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < end:
            time.sleep(0.1)
        assert not any(Path(f"/proc/{pid}/stat").exists() for pid in children)
    finally:
        if sup.proc.poll() is None:
            sup.proc.kill()
            sup.proc.wait(10)
