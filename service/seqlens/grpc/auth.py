"""Who may call: TLS server credentials (mutual TLS with a client CA) and bearer tokens, both
from files that are re-read when they change (certificate rotation, token rotation).

Tokens come from a file (one a line) or a setting. Only SHA-256 digests of the accepted tokens are kept, and the digest of the presented token
is compared with every one of them with ``hmac.compare_digest``: equal-length inputs, no
early exit, so timing reveals neither a matching prefix nor a token's length.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
import threading
import time
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

# Files are stat()ed at most this often: a rotation is seen within this many seconds, and the
# hot path pays one clock read, not a system call.
RECHECK_INTERVAL_S = 1.0
Stamp = tuple[int, int, int]  # (inode, size, mtime_ns): changes on an atomic rename or an edit


def _stamp(path: Path) -> Stamp:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


def parse_token_file(text: str) -> list[str]:
    """One token a line; blank lines and lines starting with ``#`` are skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


class TokenStore:
    """Accepted tokens: ``token`` (a setting) plus the lines of ``token_file``.

    The file must be readable at start (a typo in its path fails fast). Later it is re-read
    whenever it changes (inode, size or mtime: an atomic rename, as Kubernetes does for
    mounted secrets, or an in-place edit); if it becomes unreadable, its tokens are dropped
    (fail closed) until it is back.
    """

    def __init__(self, token_file: Path | None = None, token: str | None = None,
                 recheck_interval_s: float = RECHECK_INTERVAL_S) -> None:
        self._file = token_file
        self._static = [_digest(token.strip())] if token and token.strip() else []
        self._from_file: list[bytes] = []
        self._stamp: Stamp | None = None
        self._interval = recheck_interval_s
        self._next_check = 0.0
        self._lock = threading.Lock()
        if token_file is not None:
            self._reload()
            if self._stamp is None:
                raise ValueError(f"auth token file {token_file} is missing, unreadable or not UTF-8 text")
            self._next_check = time.monotonic() + recheck_interval_s

    @property
    def enabled(self) -> bool:
        return self._file is not None or bool(self._static)

    @property
    def count(self) -> int:
        """Tokens accepted now."""
        with self._lock:
            return len(self._static) + len(self._from_file)

    def _reload(self) -> None:
        """Re-read the file if it changed; caller holds the lock (or is the constructor)."""
        assert self._file is not None
        try:
            stamp = _stamp(self._file)
            if stamp == self._stamp:
                return
            tokens = parse_token_file(self._file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            if self._stamp is not None or self._from_file:
                log.error("auth token file is unreadable; its tokens are refused until it is back",
                          extra={"path": str(self._file), "error": str(exc)})
            self._from_file, self._stamp = [], None
            return
        self._from_file, self._stamp = [_digest(t) for t in tokens], stamp
        log.info("auth tokens loaded", extra={"path": str(self._file), "count": len(tokens)})
        if not tokens and not self._static:
            log.warning("auth token file has no tokens: every call except health is refused",
                        extra={"path": str(self._file)})

    def _accepted(self) -> list[bytes]:
        with self._lock:
            now = time.monotonic()
            if self._file is not None and now >= self._next_check:
                self._next_check = now + self._interval
                self._reload()
            return self._static + self._from_file

    def check(self, header: str) -> str | None:
        """None when ``header`` (the ``authorization`` metadata) carries an accepted token,
        else what the caller must fix (safe to send back: it never echoes the token)."""
        if not self.enabled:
            return None
        accepted = self._accepted()
        if not header:
            return "missing bearer token: send metadata 'authorization: Bearer <token>'"
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "authorization metadata must be 'Bearer <token>'"
        given = _digest(token)
        ok = False
        for digest in accepted:  # no early exit: every accepted token is compared
            ok |= hmac.compare_digest(given, digest)
        return None if ok else "invalid bearer token"


class TlsFiles:
    """Server certificate chain and key, and for mutual TLS the CA bundle that client
    certificates must chain to, all PEM files.

    Everything is validated at start (a wrong path, a key that does not match the certificate
    or a bad CA bundle fails then, with the file named, not at the first handshake). New
    connections pick up rotated files: gRPC asks ``_fetch`` at each handshake, which re-reads
    the files when they changed and keeps the previous ones while the new set is invalid
    (half-written).
    """

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None,
                 recheck_interval_s: float = RECHECK_INTERVAL_S) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._interval = recheck_interval_s
        self._next_check = time.monotonic() + recheck_interval_s
        self._lock = threading.Lock()
        self._config = self._load()
        self._stamps = self._current_stamps()

    @classmethod
    def from_settings(cls, cert: Path | None, key: Path | None, client_ca: Path | None) -> TlsFiles | None:
        """None for plaintext; refuses half a configuration instead of silently serving plaintext."""
        if cert is None and key is None:
            if client_ca is not None:
                raise ValueError("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS plus client "
                                 "certificates)")
            return None
        if cert is None or key is None:
            raise ValueError("TLS needs both tls_cert and tls_key")
        return cls(cert, key, client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._config, self._fetch, require_client_authentication=self.client_ca is not None)

    def _paths(self) -> list[Path]:
        return [self.cert, self.key, *([self.client_ca] if self.client_ca else [])]

    def _current_stamps(self) -> list[Stamp]:
        return [_stamp(p) for p in self._paths()]

    def _load(self) -> grpc.ServerCertificateConfiguration:
        """Read and validate the files; ValueError names the bad one."""
        def read(path: Path, what: str) -> bytes:
            try:
                return path.read_bytes()
            except OSError as exc:
                raise ValueError(f"{what} {path} is unreadable: {exc.strerror}") from None

        cert, key = read(self.cert, "tls_cert"), read(self.key, "tls_key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:  # the password callback refuses encrypted keys instead of prompting on a terminal
            ctx.load_cert_chain(self.cert, self.key, password=lambda: b"")
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tls_cert {self.cert} and tls_key {self.key} are not a matching PEM certificate "
                             f"and unencrypted private key: {exc}") from None
        if (cert, key) != (read(self.cert, "tls_cert"), read(self.key, "tls_key")):
            raise ValueError("tls_cert or tls_key changed while being read")
        ca = None
        if self.client_ca is not None:
            ca = read(self.client_ca, "tls_client_ca")
            try:
                ctx.load_verify_locations(cadata=ca.decode("ascii"))
            except (ValueError, ssl.SSLError) as exc:
                raise ValueError(f"tls_client_ca {self.client_ca} is not a PEM CA bundle: {exc}") from None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC at each handshake: a new configuration when the files changed, else None."""
        with self._lock:
            now = time.monotonic()
            if now < self._next_check:
                return None
            self._next_check = now + self._interval
            try:
                stamps = self._current_stamps()
                if stamps == self._stamps:
                    return None
                config = self._load()
            except (OSError, ValueError) as exc:
                log.error("TLS files changed but are not usable; keeping the previous ones",
                          extra={"error": str(exc)})
                return None
            self._stamps, self._config = stamps, config
            log.info("TLS certificate files reloaded", extra={"cert": str(self.cert)})
            return config
