"""Shared fixtures: the demo repository (built once per cache key) and tiny-model servers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
from seqlens.config import Settings
from seqlens.grpc.server import SeqlensServer


@pytest.fixture(scope="session")
def demo_repository() -> Path:
    """The trained demo repository (sentiment, vowels, airline, sunspots, ner, splice, peptides), built on first use.

    Cached under SEQLENS_CACHE_DIR (default ~/.cache/seqlens) keyed by the demo build's
    inputs, so later sessions reuse it.
    """
    from seqlens.demo import ensure_demo_repository

    return ensure_demo_repository(progress=lambda line: print(line, flush=True))


class ServerThread:
    """A real SeqlensServer on 127.0.0.1:<free port>, on its own event loop thread."""

    def __init__(self, repository: Path, **settings: object) -> None:
        defaults: dict[str, object] = {"port": 0, "metrics_port": 0, "poll_interval_s": 0.2, "host": "127.0.0.1"}
        self.settings = Settings(**{**defaults, **settings})
        self.repository = repository
        self.loop = asyncio.new_event_loop()
        self.server = SeqlensServer(self.settings, repository)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def __enter__(self) -> Self:
        self._thread.start()
        self.call(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.server.drain(0.5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def start_server() -> Iterator[object]:
    """Factory: start_server(repo, **settings) -> running ServerThread, stopped at teardown."""
    started: list[ServerThread] = []

    def start(repository: Path, **settings: object) -> ServerThread:
        srv = ServerThread(repository, **settings)
        srv.__enter__()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.__exit__(None, None, None)


@pytest.fixture(scope="session")
def demo_server(demo_repository: Path) -> Iterator[ServerThread]:
    """One server over the demo repository for the whole session."""
    with ServerThread(demo_repository, poll_interval_s=0) as srv:
        yield srv
