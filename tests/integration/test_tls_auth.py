"""TLS, mutual TLS and bearer tokens against real servers on loopback, through raw gRPC
channels, the SDK (``seqlens_client.Client``/``AsyncClient``) and the client CLI.

Certificates are generated per test session (tests/security/certs.py). Every RPC of every
served service is listed from the proto descriptors, so a new RPC is covered automatically.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from seqlens_client import TLS, AsyncClient, Client, Unauthenticated
from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.seqlens.v1 import models_pb2, service_pb2, service_pb2_grpc

from tests.conftest import ServerThread
from tests.factories import export_tiny
from tests.security.certs import CertificateAuthority, Issued

TOKENS = ("token-alpha-0123456789", "token-beta-0123456789")
ENV_TOKEN = "token-from-env-0123456789"
SERVICES = [service_pb2.DESCRIPTOR.services_by_name["SequenceExplainerService"],
            oip.DESCRIPTOR.services_by_name["GRPCInferenceService"],
            reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]]
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    export_tiny(root, "words", seed=3)
    return root


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pki")
    ca, rogue = CertificateAuthority(folder / "ca"), CertificateAuthority(folder / "rogue", "rogue CA")
    return {"ca": ca, "rogue": rogue, "server": ca.issue("server", server=True),
            "client": ca.issue("client", server=False), "rogue_client": rogue.issue("client", server=False)}


def _token_file(folder: Path, tokens: tuple[str, ...]) -> Path:
    path = folder / "tokens.txt"
    path.write_text("# accepted bearer tokens\n" + "".join(t + "\n" for t in tokens))
    return path


def _creds(ca: CertificateAuthority, client: Issued | None = None) -> grpc.ChannelCredentials:
    cert, key = client.read() if client else (None, None)
    return grpc.ssl_channel_credentials(ca.pem_path.read_bytes(), private_key=key, certificate_chain=cert)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _call_raw(channel: grpc.Channel, path: str, client_streaming: bool, server_streaming: bool,
              metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    """Send an empty message to ``path`` (identity serializers) and return the status code."""
    try:
        if client_streaming and server_streaming:
            for _ in channel.stream_stream(path)(iter([b""]), metadata=metadata, timeout=10):
                break
        elif server_streaming:
            for _ in channel.unary_stream(path)(b"", metadata=metadata, timeout=10):
                break
        elif client_streaming:
            channel.stream_unary(path)(iter([b""]), metadata=metadata, timeout=10)
        else:
            channel.unary_unary(path)(b"", metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _all_methods() -> list[tuple[str, bool, bool]]:
    return [(f"/{svc.full_name}/{m.name}", m.client_streaming, m.server_streaming)
            for svc in SERVICES for m in svc.methods]


def _health(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status


def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


# --- bearer tokens ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    tokens = _token_file(tmp_path_factory.mktemp("tokens"), TOKENS)
    with ServerThread(repo, auth_token_file=tokens, auth_token=ENV_TOKEN, poll_interval_s=0) as srv:
        yield srv


def test_every_rpc_but_health_needs_a_token(token_server: ServerThread) -> None:
    methods = _all_methods()
    assert len(methods) >= 12
    with grpc.insecure_channel(token_server.target) as channel:
        for path, cs, ss in methods:
            assert _call_raw(channel, path, cs, ss) == grpc.StatusCode.UNAUTHENTICATED, path
            assert _call_raw(channel, path, cs, ss, _bearer("wrong-token")) == grpc.StatusCode.UNAUTHENTICATED, path
            for token in (*TOKENS, ENV_TOKEN):
                assert _call_raw(channel, path, cs, ss, _bearer(token)) != grpc.StatusCode.UNAUTHENTICATED, path
        for m in HEALTH.methods:  # probes work without a token (List is not implemented by grpcio-health)
            code = _call_raw(channel, f"/{HEALTH.full_name}/{m.name}", m.client_streaming, m.server_streaming)
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNIMPLEMENTED), m.name
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING


def test_token_errors_are_precise_and_never_echo_the_token(token_server: ServerThread) -> None:
    cases = [((), "missing bearer token"),
             ((("authorization", "Basic dXNlcjpwYXNz"),), "must be 'Bearer <token>'"),
             (_bearer("token-alpha-012345678"), "invalid bearer token")]
    with grpc.insecure_channel(token_server.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        for metadata, message in cases:
            with pytest.raises(grpc.RpcError) as info:
                stub.ListModels(models_pb2.ListModelsRequest(), metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in info.value.details() and "012345678" not in info.value.details()


def test_refused_tokens_are_counted_in_metrics(token_server: ServerThread) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    def refused() -> float:
        url = f"http://127.0.0.1:{token_server.server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "seqlens_requests_total" and s.labels.get("code") == "UNAUTHENTICATED"
                   and s.labels.get("rpc") == "ListModels")

    before = refused()
    with grpc.insecure_channel(token_server.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                stub.ListModels(models_pb2.ListModelsRequest(), timeout=10)
    assert refused() == before + 3


def test_token_file_rotation_is_picked_up(repo: Path, tmp_path: Path) -> None:
    path = _token_file(tmp_path, ("first-token-0123456789",))
    with ServerThread(repo, auth_token_file=path, poll_interval_s=0) as srv, \
            grpc.insecure_channel(srv.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)

        def accepted(token: str) -> bool:
            try:
                stub.ListModels(models_pb2.ListModelsRequest(), metadata=_bearer(token), timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                return False
            return True

        assert accepted("first-token-0123456789") and not accepted("second-token-0123456789")
        new = tmp_path / "tokens.new"
        new.write_text("second-token-0123456789\n")
        os.replace(new, path)  # atomic, as a Kubernetes secret update
        _wait_until(lambda: accepted("second-token-0123456789"))
        assert not accepted("first-token-0123456789")


def test_sdk_and_cli_send_the_token_on_plaintext(token_server: ServerThread, tmp_path: Path) -> None:
    with Client(token_server.target, token=TOKENS[1], timeout=10) as client:
        assert [m.name for m in client.list_models()] == ["words"]
        assert client.predict("words", ["a good film"])[0].label in ("neg", "neu", "pos")
    with Client(token_server.target, timeout=10) as client, pytest.raises(Unauthenticated) as info:
        client.list_models()
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED and "missing bearer token" in info.value.message
    token_file = tmp_path / "my-token"
    token_file.write_text(TOKENS[0] + "\n")
    ok = _cli(["--target-address", token_server.target, "--token-file", str(token_file), "models", "--json"])
    assert ok.returncode == 0, ok.stderr
    assert "words" in ok.stdout
    denied = _cli(["--target-address", token_server.target, "models"])
    assert denied.returncode != 0 and "UNAUTHENTICATED" in denied.stderr


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seqlens_client.cli", *args], check=False, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


# --- TLS and mutual TLS ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_server(repo: Path, pki) -> Iterator[ServerThread]:  # type: ignore[no-untyped-def]
    server = pki["server"]
    with ServerThread(repo, tls_cert=server.cert, tls_key=server.key, poll_interval_s=0) as srv:
        yield srv


def test_tls_server_refuses_plaintext_and_unknown_cas(tls_server: ServerThread, pki) -> None:  # type: ignore[no-untyped-def]
    target = tls_server.target
    for host in ("localhost", "127.0.0.1"):  # the certificate names both
        with grpc.secure_channel(f"{host}:{tls_server.server.port}", _creds(pki["ca"])) as channel:
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as info:
        _health(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(target, _creds(pki["rogue"])) as channel, pytest.raises(grpc.RpcError) as info:
        _health(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with Client(target, tls=TLS(root_ca=pki["ca"].pem_path), timeout=10) as client:
        assert client.list_models()[0].name == "words"


@pytest.fixture(scope="module")
def mtls_server(repo: Path, pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:  # type: ignore[no-untyped-def]
    server, tokens = pki["server"], _token_file(tmp_path_factory.mktemp("mtls-tokens"), TOKENS)
    with ServerThread(repo, tls_cert=server.cert, tls_key=server.key, tls_client_ca=pki["ca"].pem_path,
                      auth_token_file=tokens, poll_interval_s=0) as srv:
        yield srv


def test_mutual_tls_needs_a_client_certificate_of_the_ca(mtls_server: ServerThread, pki) -> None:  # type: ignore[no-untyped-def]
    target = mtls_server.target
    for client_cert in (None, pki["rogue_client"]):
        with grpc.secure_channel(target, _creds(pki["ca"], client_cert)) as channel, \
                pytest.raises(grpc.RpcError) as info:
            _health(channel)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(target, _creds(pki["ca"], pki["client"])) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING  # health: no token
        for path, cs, ss in _all_methods():  # a certificate is not a token
            assert _call_raw(channel, path, cs, ss) == grpc.StatusCode.UNAUTHENTICATED, path


def test_sdk_with_token_tls_and_client_certificate(mtls_server: ServerThread, pki) -> None:  # type: ignore[no-untyped-def]
    ca, client_cert = pki["ca"], pki["client"]
    tls = TLS(root_ca=ca.pem_path, cert=client_cert.cert, key=client_cert.key)
    with Client(mtls_server.target, token=TOKENS[0], tls=tls, timeout=10) as client:
        info = client.get_model("words")
        assert info.name == "words" and client.predict("words", ["the plot was dull"])[0].label
    tls_from_bytes = TLS(root_ca=ca.pem_path.read_bytes(), cert=client_cert.cert.read_bytes(),
                         key=client_cert.key.read_bytes(), server_name="localhost")
    with Client(mtls_server.target, token=TOKENS[1], tls=tls_from_bytes, timeout=10) as client:
        assert client.list_models()[0].name == "words"
    with Client(mtls_server.target, token="not-a-token", tls=tls, timeout=10) as client, \
            pytest.raises(Unauthenticated):
        client.list_models()

    async def with_async_client() -> str:
        async with AsyncClient(mtls_server.target, token=TOKENS[0], tls=tls, timeout=10) as client:
            return (await client.list_models())[0].name

    assert asyncio.run(with_async_client()) == "words"
    ok = _cli(["--target-address", mtls_server.target, "--tls-ca", str(ca.pem_path), "--tls-cert",
               str(client_cert.cert), "--tls-key", str(client_cert.key), "models", "--json"],
              env={"SEQLENS_TOKEN": TOKENS[1]})
    assert ok.returncode == 0, ok.stderr
    assert [m["name"] for m in json.loads(ok.stdout)] == ["words"]


def test_rotated_server_certificate_is_served_to_new_connections(repo: Path, tmp_path: Path) -> None:
    first_ca, second_ca = CertificateAuthority(tmp_path / "ca1"), CertificateAuthority(tmp_path / "ca2")
    first = first_ca.issue("server", server=True)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    with ServerThread(repo, tls_cert=cert, tls_key=key, poll_interval_s=0) as srv:
        with grpc.secure_channel(srv.target, _creds(first_ca)) as channel:
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        second = second_ca.issue("server", server=True)
        for src, dst in ((second.cert, cert), (second.key, key)):  # two renames: briefly a mismatched pair
            tmp = dst.with_suffix(".new")
            tmp.write_bytes(src.read_bytes())
            os.replace(tmp, dst)

        def serves(ca: CertificateAuthority) -> bool:
            with grpc.secure_channel(srv.target, _creds(ca)) as channel:
                try:
                    return _health(channel) == health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError:
                    return False

        _wait_until(lambda: serves(second_ca))
        assert not serves(first_ca)
