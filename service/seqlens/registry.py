"""Loads, reloads and unloads model versions; knows which are READY and why others are not.

Loading runs in a worker thread; readers get an immutable snapshot, so a request never
sees a half-loaded version. A version whose files change is reloaded; a failed (re)load
takes that version out of service and the other versions keep serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .config import PARITY_TOLERANCE
from .errors import ModelConfigError, ModelNotFound, ModelUnavailable
from .repository import ModelRepository, validate_name, version_sort_key
from .runtimes.replay import ReplayLimits
from .versions import LoadedVersion, load_version

log = logging.getLogger(__name__)


class VersionState(Enum):
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADED = "UNLOADED"


@dataclass(frozen=True)
class VersionRecord:
    name: str
    version: str
    state: VersionState
    reason: str = ""
    loaded: LoadedVersion | None = None
    fingerprint: tuple[tuple[str, int, int], ...] = ()


Listener = Callable[[VersionRecord], None]
LoadHook = Callable[[LoadedVersion], object]  # runs in the loading thread; an exception fails the version


class ModelRegistry:
    def __init__(self, repository: ModelRepository, *, onnx_threads: int = 1, parity_tolerance: float = PARITY_TOLERANCE,
                 listeners: list[Listener] | None = None, graph_limits: ReplayLimits | None = None,
                 load_hooks: list[LoadHook] | None = None) -> None:
        """``load_hooks`` finish a loaded version before it serves (the server fits the state
        projection there: once at load, not on the first request)."""
        self.repository = repository
        self._load_hooks = load_hooks or []
        self._graph_limits = graph_limits
        self._onnx_threads = onnx_threads
        self._tolerance = parity_tolerance
        self._records: dict[tuple[str, str], VersionRecord] = {}
        # get() answers per (name, version) until any record changes (every Predict asks).
        self._resolved: dict[tuple[str, str], LoadedVersion] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._listeners = listeners or []

    def add_listener(self, listener: Listener) -> None:
        """Called (from the loading thread) with every record change."""
        self._listeners.append(listener)

    # --- reading ---------------------------------------------------------------------
    def records(self) -> list[VersionRecord]:
        with self._lock:
            return list(self._records.values())

    def model_records(self, name: str) -> list[VersionRecord]:
        validate_name("model name", name)
        recs = sorted((r for r in self.records() if r.name == name and r.state != VersionState.UNLOADED),
                      key=lambda r: version_sort_key(r.version))
        if not recs:
            raise ModelNotFound(f"model {name!r} is not in the repository; call ListModels for the names")
        return recs

    def default_version(self, name: str) -> str | None:
        ready = [r for r in self.model_records(name) if r.state == VersionState.READY]
        return ready[-1].version if ready else None

    def get(self, name: str, version: str = "") -> LoadedVersion:
        """The requested version, or the latest READY one when ``version`` is empty."""
        key = (name, version)
        hit = self._resolved.get(key)
        if hit is not None:
            return hit
        generation = self._generation
        loaded = self._resolve(name, version)
        with self._lock:
            if generation == self._generation:
                self._resolved[key] = loaded
        return loaded

    def _resolve(self, name: str, version: str) -> LoadedVersion:
        recs = self.model_records(name)
        if version:
            validate_name("model version", version)
            match = [r for r in recs if r.version == version]
            if not match:
                have = ", ".join(r.version for r in recs)
                raise ModelNotFound(f"model {name!r} has no version {version!r} (versions: {have})")
            rec = match[0]
            if rec.state != VersionState.READY or rec.loaded is None:
                why = f": {rec.reason}" if rec.reason else ""
                raise ModelUnavailable(f"model {name!r} version {version!r} is {rec.state.value}{why}")
            return rec.loaded
        ready = [r for r in recs if r.state == VersionState.READY and r.loaded is not None]
        if not ready:
            states = "; ".join(f"{r.version}: {r.state.value} {r.reason}".strip() for r in recs)
            raise ModelUnavailable(f"model {name!r} has no READY version ({states})")
        loaded = ready[-1].loaded
        assert loaded is not None
        return loaded

    def all_ready(self) -> bool:
        recs = self.records()
        return bool(recs) and any(r.state == VersionState.READY for r in recs)

    # --- writing ---------------------------------------------------------------------
    def _set(self, rec: VersionRecord) -> None:
        with self._lock:
            self._records[(rec.name, rec.version)] = rec
            self._generation += 1
            self._resolved = {}
        for listener in self._listeners:
            listener(rec)

    def refresh(self) -> None:
        """Scan the repository once: load new or changed versions, unload removed ones."""
        with self._refresh_lock:
            on_disk = self.repository.scan()
            seen: set[tuple[str, str]] = set()
            for name, versions in on_disk.items():
                for version in versions:
                    seen.add((name, version))
                    try:
                        fp = self.repository.fingerprint(name, version)
                    except OSError:
                        continue  # removed while scanning
                    with self._lock:
                        old = self._records.get((name, version))
                    if old is not None and old.fingerprint == fp and old.state != VersionState.UNLOADED:
                        continue
                    self._load(name, version, fp, old)
            with self._lock:
                gone = [r for k, r in self._records.items() if k not in seen and r.state != VersionState.UNLOADED]
            for rec in gone:
                log.info("model version removed", extra={"model": rec.name, "version": rec.version})
                self._set(VersionRecord(rec.name, rec.version, VersionState.UNLOADED, "removed from the repository"))

    def _load(self, name: str, version: str, fp: tuple[tuple[str, int, int], ...],
              old: VersionRecord | None) -> None:
        if old is None or old.state != VersionState.READY:
            # Keep serving an old READY load while its replacement loads.
            self._set(VersionRecord(name, version, VersionState.LOADING, fingerprint=()))
        try:
            path = self.repository.version_dir(name, version)
            loaded = load_version(path, name, version, onnx_threads=self._onnx_threads, tolerance=self._tolerance,
                                  limits=self._graph_limits)
            for hook in self._load_hooks:
                hook(loaded)
        except Exception as exc:  # noqa: BLE001 - a broken file can make any library raise; never crash
            if not (self.repository.root / name / version).is_dir():
                # Deleted while loading (its files vanished mid-read): removed, not broken.
                self._set(VersionRecord(name, version, VersionState.UNLOADED, "removed from the repository"))
                return
            self._set(VersionRecord(name, version, VersionState.FAILED, _failure_reason(name, version, exc),
                                    None, fp))
            return
        log.info("model version ready", extra={"model": name, "version": version,
                                               "parity": loaded.parity_max_abs_diff,
                                               "seconds": round(loaded.load_seconds, 3)})
        self._set(VersionRecord(name, version, VersionState.READY, "", loaded, fp))

    def poll_forever(self, interval_s: float, stop: threading.Event) -> None:
        while not stop.wait(interval_s):
            try:
                self.refresh()
            except Exception:
                log.exception("repository scan failed")


def _failure_reason(name: str, version: str, exc: Exception) -> str:
    """What GetModel shows for a version that failed to load; unexpected errors are logged whole."""
    if isinstance(exc, ModelConfigError):
        log.warning("model version failed to load", extra={"model": name, "version": version, "reason": exc.message})
        return exc.message
    log.error("model version failed to load", extra={"model": name, "version": version}, exc_info=exc)
    return f"{type(exc).__name__}: {str(exc)[:200]}"
