"""Faults while serving: a version corrupted on disk, versions added and removed under load,
and the server process SIGKILLed and restarted. Callers of unaffected versions never see an
error; callers of the broken version get UNAVAILABLE with the reason; clients that retry on
UNAVAILABLE recover after a restart.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from seqlens_client import Client, SeqlensError, Unavailable
from seqlens_client._proto.seqlens.v1 import models_pb2, predict_pb2, service_pb2_grpc, types_pb2

from tests.conftest import ServerThread
from tests.factories import export_tiny
from tests.fault.process import ServeProcess, free_port

TEXT = [types_pb2.SequenceInput(text="a witty film , not dull")]


def _wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


class Callers:
    """Threads calling Predict on (model, pinned version) targets until stopped; each answer
    must come from one of the target's allowed versions."""

    def __init__(self, target: str, targets: dict[tuple[str, str], set[str]], threads_per_target: int = 2) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = service_pb2_grpc.SequenceExplainerServiceStub(self._channel)
        self._targets = targets
        self._stop = threading.Event()
        self.ok: Counter[tuple[str, str]] = Counter()
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                         for t in targets for _ in range(threads_per_target)]

    def _run(self, target: tuple[str, str]) -> None:
        name, version = target
        request = predict_pb2.PredictRequest(model_name=name, model_version=version, inputs=TEXT)
        while not self._stop.is_set():
            try:
                got = self._stub.Predict(request, timeout=10).model_version
            except grpc.RpcError as exc:
                self.failures.append(f"{name}@{version or 'latest'}: {exc.code().name} {exc.details()}")
                continue
            if got in self._targets[target]:
                self.ok[target] += 1
            else:
                self.failures.append(f"{name}@{version or 'latest'}: answered by version {got}")

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        self._channel.close()

    def assert_clean(self) -> None:
        print(f"\ncallers: {sum(self.ok.values())} calls answered ({dict(self.ok)}), {len(self.failures)} failed")
        assert not self.failures, f"{len(self.failures)} failed calls, first: {self.failures[:5]}"
        for target in self._targets:
            assert self.ok[target] > 10, f"{target}: only {self.ok[target]} calls answered"


@pytest.fixture
def stub_for() -> Iterator[Callable[[str], service_pb2_grpc.SequenceExplainerServiceStub]]:
    channels: list[grpc.Channel] = []

    def make(target: str) -> service_pb2_grpc.SequenceExplainerServiceStub:
        channels.append(grpc.insecure_channel(target))
        return service_pb2_grpc.SequenceExplainerServiceStub(channels[-1])

    yield make
    for c in channels:
        c.close()


def _version_state(stub: service_pb2_grpc.SequenceExplainerServiceStub, name: str, version: str) -> tuple[int, str]:
    info = stub.GetModel(models_pb2.GetModelRequest(name=name), timeout=10)
    found = [(v.state, v.reason) for v in info.versions if v.version == version]
    return found[0] if found else (models_pb2.VERSION_STATE_UNLOADED, "")


def _latest(stub: service_pb2_grpc.SequenceExplainerServiceStub, name: str) -> str:
    return stub.Predict(predict_pb2.PredictRequest(model_name=name, inputs=TEXT), timeout=10).model_version


def test_version_corrupted_while_serving(tmp_path: Path, start_server, stub_for) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    export_tiny(repo, "m", version="1", seed=1)
    onnx_path = export_tiny(repo, "m", version="2", seed=2) / "model.onnx"
    export_tiny(repo, "other", seed=3)
    srv: ServerThread = start_server(repo, poll_interval_s=0.1)
    stub = stub_for(srv.target)
    assert _latest(stub, "m") == "2"
    good = onnx_path.read_bytes()
    targets = {("other", ""): {"1"}, ("m", "1"): {"1"}, ("m", ""): {"1", "2"}}
    with Callers(srv.target, targets) as callers:
        time.sleep(0.5)
        onnx_path.write_bytes(b"\x08\x07corrupted" * 64)  # overwritten in place while version 2 serves
        _wait_until(lambda: _version_state(stub, "m", "2")[0] == models_pb2.VERSION_STATE_FAILED, what="version 2 FAILED")
        _, reason = _version_state(stub, "m", "2")
        assert "model.onnx is not a valid ONNX model" in reason
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(predict_pb2.PredictRequest(model_name="m", model_version="2", inputs=TEXT), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "version '2' is FAILED: model.onnx is not a valid ONNX model" in info.value.details()
        assert _latest(stub, "m") == "1"  # the latest READY version takes over
        with grpc.insecure_channel(srv.target) as channel:  # other versions are READY: still serving
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING
        time.sleep(0.5)
        onnx_path.write_bytes(good)  # repaired: reloaded and serving again
        _wait_until(lambda: _latest(stub, "m") == "2", what="version 2 serving again")
        time.sleep(0.3)
    callers.assert_clean()


def test_versions_added_and_removed_under_load(tmp_path: Path, start_server, stub_for) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    export_tiny(repo, "m", version="1", seed=1)
    export_tiny(repo, "other", seed=3)
    srv: ServerThread = start_server(repo, poll_interval_s=0.1)
    stub = stub_for(srv.target)
    targets = {("other", ""): {"1"}, ("m", "1"): {"1"}, ("m", ""): {"1", "3"}}
    with Callers(srv.target, targets) as callers:
        for cycle in range(3):
            export_tiny(repo, "m", version="3", seed=10 + cycle)  # written aside, renamed into place
            _wait_until(lambda: _latest(stub, "m") == "3", what="version 3 serving")
            time.sleep(0.3)
            shutil.rmtree(repo / "m" / "3")
            _wait_until(lambda: _latest(stub, "m") == "1", what="version 3 gone")
            # A scan that caught the folder half-deleted may show FAILED for one poll first.
            _wait_until(lambda: _version_state(stub, "m", "3")[0] == models_pb2.VERSION_STATE_UNLOADED, what="3 UNLOADED")
            time.sleep(0.2)
    callers.assert_clean()


@contextmanager
def _sdk_callers(target: str, n: int) -> Iterator[dict[str, object]]:
    """SDK clients that retry the same call on UNAVAILABLE (and only then) until it succeeds."""
    stats: dict[str, object] = {"ok": 0, "unavailable": 0, "other": [], "ok_times": []}
    stop = threading.Event()
    lock = threading.Lock()

    def run() -> None:
        # A short reconnect backoff keeps the test fast; the SDK retries UNAVAILABLE itself too.
        with Client(target, timeout=5, options=[("grpc.max_reconnect_backoff_ms", 500)]) as client:
            while not stop.is_set():
                try:
                    label = client.predict("m", ["a witty film"])[0].label
                except Unavailable:
                    with lock:
                        stats["unavailable"] = int(stats["unavailable"]) + 1  # type: ignore[call-overload]
                    time.sleep(0.1)
                    continue
                except SeqlensError as exc:
                    with lock:
                        stats["other"].append(f"{exc.code.name}: {exc.message}")  # type: ignore[attr-defined]
                    continue
                assert label
                with lock:
                    stats["ok"] = int(stats["ok"]) + 1  # type: ignore[call-overload]
                    stats["ok_times"].append(time.monotonic())  # type: ignore[attr-defined]

    threads = [threading.Thread(target=run, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        yield stats
    finally:
        stop.set()
        for t in threads:
            t.join(20)


def test_sigkill_and_restart_clients_recover(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    export_tiny(repo, "m", seed=1)
    port = free_port()
    first = ServeProcess(repo, port=port).start()
    try:
        with _sdk_callers(first.target, 4) as stats:
            _wait_until(lambda: int(stats["ok"]) > 20, what="calls before the kill")  # type: ignore[call-overload]
            first.kill()
            killed_at = time.monotonic()
            second = ServeProcess(repo, port=port).start()
            restarted_at = time.monotonic()
            try:
                _wait_until(lambda: sum(t > restarted_at for t in stats["ok_times"]) > 20,  # type: ignore[attr-defined]
                            timeout=30, what="calls answered after the restart")
            finally:
                second.stop()
    finally:
        first.stop()
    print(f"\nsigkill: down {restarted_at - killed_at:.1f}s; {stats['ok']} calls answered, "
          f"{stats['unavailable']} UNAVAILABLE seen by the callers and retried")
    assert stats["other"] == [], stats["other"]
    assert int(stats["unavailable"]) > 0  # type: ignore[call-overload] # the outage was seen, and retried
