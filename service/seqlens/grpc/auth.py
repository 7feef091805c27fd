"""Bearer tokens from a file (one a line, reloaded when the file changes) or a setting.

Tokens are compared in constant time (``hmac.compare_digest``) against every accepted
token, so timing does not reveal which prefix matched.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class TokenStore:
    def __init__(self, token_file: Path | None = None, token: str | None = None) -> None:
        self._file = token_file
        self._static = [token.encode()] if token else []
        self._tokens: list[bytes] = []
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._reload()

    @property
    def enabled(self) -> bool:
        return self._file is not None or bool(self._static)

    def _reload(self) -> None:
        if self._file is None:
            return
        try:
            st = os.stat(self._file)
        except OSError:
            log.error("auth token file is unreadable; refusing all tokens", extra={"path": str(self._file)})
            self._tokens, self._stamp = [], None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        lines = self._file.read_text(encoding="utf-8").splitlines()
        self._tokens = [ln.strip().encode() for ln in lines if ln.strip() and not ln.startswith("#")]
        self._stamp = stamp
        log.info("auth tokens loaded", extra={"count": len(self._tokens)})

    def check(self, header: str) -> str | None:
        """None when ``header`` carries an accepted token, else what the caller must fix."""
        if not self.enabled:
            return None
        with self._lock:
            self._reload()
            accepted = self._static + self._tokens
        if not header:
            return "missing bearer token: send metadata 'authorization: Bearer <token>'"
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "authorization metadata must be 'Bearer <token>'"
        given = token.strip().encode()
        ok = False
        for t in accepted:
            ok |= hmac.compare_digest(given, t)
        return None if ok else "invalid bearer token"
