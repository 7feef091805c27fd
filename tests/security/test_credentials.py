"""Token store and TLS file validation, without a server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from seqlens.grpc.auth import TlsFiles, TokenStore, parse_token_file

from tests.security.certs import CertificateAuthority


def test_token_file_lines_comments_and_blanks() -> None:
    assert parse_token_file("# ops team\n\n  alpha  \nbeta\n  # not a token\n") == ["alpha", "beta"]


def test_several_tokens_and_header_forms(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("alpha-token\nbeta-token\n")
    store = TokenStore(path, token="env-token")
    assert store.count == 3
    for token in ("alpha-token", "beta-token", "env-token"):
        assert store.check(f"Bearer {token}") is None
        assert store.check(f"bearer   {token}  ") is None  # scheme is case-insensitive, spaces trimmed
    assert store.check("") is not None and "missing bearer token" in store.check("")  # type: ignore[operator]
    assert store.check("Basic YWxhZGRpbjpvcGVuc2VzYW1l") == "authorization metadata must be 'Bearer <token>'"
    assert store.check("Bearer") == "authorization metadata must be 'Bearer <token>'"
    for wrong in ("alpha-toke", "alpha-token2", "ALPHA-TOKEN", "# ops team", "alpha-token\nbeta-token"):
        assert store.check(f"Bearer {wrong}") == "invalid bearer token"


def test_disabled_store_accepts_everything() -> None:
    store = TokenStore()
    assert not store.enabled and store.check("") is None


def test_rotation_is_seen_and_unreadable_file_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("old\n")
    store = TokenStore(path, recheck_interval_s=0)
    assert store.check("Bearer old") is None
    # Atomic replacement, as Kubernetes does for mounted secrets (same size, new inode).
    tmp = tmp_path / "tokens.new"
    tmp.write_text("new\n")
    os.replace(tmp, path)
    assert store.check("Bearer new") is None and store.check("Bearer old") == "invalid bearer token"
    path.unlink()
    assert store.check("Bearer new") == "invalid bearer token"  # fail closed
    path.write_text("back\n")
    assert store.check("Bearer back") is None


def test_recheck_interval_bounds_file_checks(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("one\n")
    store = TokenStore(path, recheck_interval_s=3600)
    path.write_text("two\n")
    assert store.check("Bearer one") is None  # not re-read within the interval


def test_unreadable_token_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing, unreadable"):
        TokenStore(tmp_path / "nope")
    bad = tmp_path / "binary"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        TokenStore(bad)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(folder / "ca")
    other = CertificateAuthority(folder / "other")
    return {"ca": ca, "server": ca.issue("server", server=True), "other_server": other.issue("server", server=True)}


def test_tls_settings_are_all_or_nothing(pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, ca = pki["server"], pki["ca"]
    assert TlsFiles.from_settings(None, None, None) is None
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        TlsFiles.from_settings(server.cert, None, None)
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        TlsFiles.from_settings(None, server.key, None)
    with pytest.raises(ValueError, match="tls_client_ca needs tls_cert and tls_key"):
        TlsFiles.from_settings(None, None, ca.pem_path)
    assert TlsFiles.from_settings(server.cert, server.key, ca.pem_path) is not None


def test_tls_files_are_validated_at_start(pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, other, ca = pki["server"], pki["other_server"], pki["ca"]
    with pytest.raises(ValueError, match="unreadable"):
        TlsFiles(tmp_path / "missing.crt", server.key)
    with pytest.raises(ValueError, match="not a matching PEM certificate"):
        TlsFiles(server.cert, other.key)  # key of another certificate
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="not a matching PEM"):
        TlsFiles(garbage, server.key)
    with pytest.raises(ValueError, match="not a PEM CA bundle"):
        TlsFiles(server.cert, server.key, client_ca=garbage)
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(server.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(ValueError, match="unencrypted private key"):  # refused, never a password prompt
        TlsFiles(server.cert, encrypted)
    assert TlsFiles(server.cert, server.key, ca.pem_path).credentials() is not None
