"""Channel behaviour of the SDK: TLS and mutual TLS (with a server name override) against a real
server, and, against small scripted servers, retries on UNAVAILABLE only, round-robin over
several addresses, deadline propagation and the metadata every call carries."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from seqlens_client import (
    TLS,
    AsyncClient,
    Client,
    DeadlineExceeded,
    InvalidArgument,
    Keepalive,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
)
from seqlens_client._proto.seqlens.v1 import models_pb2, service_pb2_grpc

from tests.conftest import ServerThread
from tests.factories import export_tiny

SERVER_NAME = "seqlens.test"
TOKEN = "tls-token"


# --- TLS against the real server ------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for SERVER_NAME only, and a client certificate (EC P-256)."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=seqlens test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)
    for name, cn, ext in (("server", SERVER_NAME, f"subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth"),
                          ("client", "sdk-client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tls-repo")
    export_tiny(root, "words", cell="lstm", task="classification", tokens=True)
    return root


def test_mutual_tls_with_server_name_override_and_token(repo: Path, pki: Path) -> None:
    with ServerThread(repo, poll_interval_s=0, tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                      tls_client_ca=pki / "ca.pem", auth_token=TOKEN) as srv:
        # 127.0.0.1 is not in the certificate: the server name override makes it verify.
        tls = TLS(root_ca=pki / "ca.pem", cert=pki / "client.pem", key=(pki / "client.key").read_bytes(),
                  server_name=SERVER_NAME)
        with Client(srv.target, tls=tls, token=TOKEN, timeout=20) as c:
            assert [m.name for m in c.list_models()] == ["words"]
            assert c.predict("words", "the film was good")[0].label in ("neg", "neu", "pos")
        # The token travels as call credentials over TLS; without it the server refuses.
        with Client(srv.target, tls=tls, timeout=20) as c, pytest.raises(Unauthenticated):
            c.list_models()
        # No client certificate: the handshake fails (mTLS).
        no_cert = TLS(root_ca=pki / "ca.pem", server_name=SERVER_NAME)
        with Client(srv.target, tls=no_cert, token=TOKEN, timeout=5, retry=None) as c, pytest.raises(Unavailable):
            c.list_models()
        # Without the override the name check fails.
        wrong_name = TLS(root_ca=pki / "ca.pem", cert=pki / "client.pem", key=pki / "client.key")
        with Client(srv.target, tls=wrong_name, token=TOKEN, timeout=5, retry=None) as c, \
                pytest.raises(Unavailable):
            c.list_models()
        # Plaintext to a TLS port fails too.
        with Client(srv.target, token=TOKEN, timeout=5, retry=None) as c, pytest.raises(Unavailable):
            c.list_models()

        async def use_async() -> str:
            async with AsyncClient(srv.target, tls=tls, token=TOKEN, timeout=20) as ac:
                return (await ac.predict("words", [2, 3, 4])).model_version

        import asyncio

        assert asyncio.run(use_async()) == "1"


# --- scripted servers -----------------------------------------------------------------
class Scripted(service_pb2_grpc.SequenceExplainerServiceServicer):
    """ListModels fails with UNAVAILABLE ``fail_first`` times, then answers with its own name;
    GetModel always fails with INVALID_ARGUMENT; both record calls and metadata."""

    def __init__(self, name: str, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.name = name
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.calls: dict[str, int] = {"ListModels": 0, "GetModel": 0}
        self.metadata: list[dict[str, str]] = []
        self.time_remaining: list[float | None] = []
        self.finished = 0  # ListModels calls answered
        self.release = threading.Event()  # ends a ListModels delay early
        self._lock = threading.Lock()

    def _record(self, rpc: str, context: Any) -> int:
        with self._lock:
            self.calls[rpc] += 1
            self.metadata.append({k: v for k, v in context.invocation_metadata()})
            self.time_remaining.append(context.time_remaining())
            return self.calls[rpc]

    def ListModels(self, request: Any, context: Any) -> models_pb2.ListModelsResponse:
        n = self._record("ListModels", context)
        if n <= self.fail_first:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} warming up")
        self.release.wait(self.delay_s)
        with self._lock:
            self.finished += 1
        return models_pb2.ListModelsResponse(models=[models_pb2.ModelSummary(name=self.name)])

    def GetModel(self, request: Any, context: Any) -> models_pb2.ModelInfo:
        self._record("GetModel", context)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name must be lowercase")


@pytest.fixture
def scripted() -> Iterator[Any]:
    """Factory: scripted(name, **behaviour) -> (servicer, port) on 127.0.0.1."""
    servers: list[grpc.Server] = []

    def start(name: str, **kw: Any) -> tuple[Scripted, int]:
        servicer = Scripted(name, **kw)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        service_pb2_grpc.add_SequenceExplainerServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return servicer, port

    yield start
    for s in servers:
        s.stop(0)


def test_unavailable_is_retried_with_backoff(scripted: Any) -> None:
    flaky, port = scripted("flaky", fail_first=2)
    with Client(f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=4, initial_backoff_s=0.01)) as c:
        assert [m.name for m in c.list_models()] == ["flaky"]
    assert flaky.calls["ListModels"] == 3


def test_other_codes_are_not_retried(scripted: Any) -> None:
    srv, port = scripted("strict")
    with Client(f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=5, initial_backoff_s=0.01)) as c, \
            pytest.raises(InvalidArgument) as e:
        c.get_model("X")
    assert e.value.message == "name must be lowercase" and srv.calls["GetModel"] == 1


def test_retries_can_be_turned_off_and_are_capped(scripted: Any) -> None:
    down, port = scripted("down", fail_first=100)
    with Client(f"127.0.0.1:{port}", retry=None) as c, pytest.raises(Unavailable) as e:
        c.list_models()
    assert "down warming up" in e.value.message and down.calls["ListModels"] == 1
    with Client(f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01)) as c, \
            pytest.raises(Unavailable):
        c.list_models()
    assert down.calls["ListModels"] == 1 + 3


def test_round_robin_spreads_calls_over_every_address(scripted: Any) -> None:
    a, pa = scripted("a")
    b, pb = scripted("b")
    target = f"ipv4:127.0.0.1:{pa},127.0.0.1:{pb}"  # what a dns:/// name with two replicas resolves to
    with Client(target) as c:
        c.wait_ready(10)
        answered = [c.list_models()[0].name for _ in range(20)]
    assert answered.count("a") >= 5 and answered.count("b") >= 5
    assert (a.calls["ListModels"], b.calls["ListModels"]) == (answered.count("a"), answered.count("b"))
    with Client(target, load_balancing=None) as c:  # gRPC's default, pick_first: one replica gets all
        assert len({c.list_models()[0].name for _ in range(10)}) == 1


def test_dns_targets_resolve_and_balance(scripted: Any) -> None:
    _, port = scripted("dns")
    with Client(f"dns:///localhost:{port}", keepalive=Keepalive(time_s=10, timeout_s=5)) as c:
        assert c.list_models()[0].name == "dns"


def test_deadline_reaches_the_server_and_stops_the_wait(scripted: Any) -> None:
    slow, port = scripted("slow", delay_s=120.0)
    with Client(f"127.0.0.1:{port}") as c:
        try:
            with pytest.raises(DeadlineExceeded):
                c.list_models(timeout=0.3)
            assert slow.finished == 0  # the caller stopped waiting while the server still worked
        finally:
            slow.release.set()
    remaining = slow.time_remaining[0]
    assert remaining is not None and remaining <= 0.35  # the deadline travelled (<= 0 when the VM is busy)


def test_every_call_carries_the_token_and_extra_metadata(scripted: Any) -> None:
    srv, port = scripted("md")
    with Client(f"127.0.0.1:{port}", token="t0k", metadata=[("x-team", "ml")]) as c:
        c.list_models()
    md = srv.metadata[-1]
    assert md["authorization"] == "Bearer t0k" and md["x-team"] == "ml"
