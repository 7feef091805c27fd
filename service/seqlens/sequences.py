"""The table of server-held sequences: live states, their limits, and why one is gone.

Owned by the event loop (no locks). A sequence is keyed by (model, id); its id is a string
or a non-zero uint64 (Triton's correlation ids). Chunks of one sequence run one at a time,
in arrival order (an asyncio lock per sequence, FIFO), so a batch never holds two chunks of
one sequence. Bounded by ``max_live`` sequences, ``max_state_bytes`` in total and an idle
timeout; an ended, evicted or dropped sequence leaves a bounded tombstone so that its next
chunk is told which and why (FAILED_PRECONDITION), never silently restarted from zero. An
id the table never saw is NOT_FOUND, with a restart named as a possible cause.
Design: docs/stateful.md.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .carry import CarriedState
from .errors import FailedPrecondition, ResourceExhausted, SequenceNotFound

SequenceId = str | int
EvictionListener = Callable[[str, str], None]  # (model, reason)
# reasons: "ended" (not an eviction), "idle", "version", "shutdown"
EVICTION_REASONS = ("idle", "version", "shutdown")


def describe(seq_id: SequenceId) -> str:
    return f"{seq_id!r}" if isinstance(seq_id, str) else f"{seq_id} (uint64)"


@dataclass
class LiveSequence:
    model: str
    seq_id: SequenceId
    version: str
    state: CarriedState
    last_used: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # calls holding or waiting for the lock: never idle while > 0
    gone: str | None = None  # why it left the table (its calls must not write it back)


class SequenceTable:
    def __init__(self, *, max_live: int, idle_timeout_s: float, max_state_bytes: int,
                 clock: Callable[[], float] = time.monotonic, on_evict: EvictionListener | None = None) -> None:
        self.max_live = max_live
        self.idle_timeout_s = idle_timeout_s
        self.max_state_bytes = max_state_bytes
        self.clock = clock
        self._on_evict = on_evict
        self._live: dict[tuple[str, SequenceId], LiveSequence] = {}
        self._gone: OrderedDict[tuple[str, SequenceId], str] = OrderedDict()  # key -> why (message)
        self._tombstones = max(1024, 4 * max_live)
        self.state_bytes = 0
        self._per_model: dict[str, int] = {}
        self.evictions: dict[str, int] = dict.fromkeys(EVICTION_REASONS, 0)

    def __len__(self) -> int:
        return len(self._live)

    def live(self, model: str | None = None) -> list[LiveSequence]:
        return [s for s in self._live.values() if model is None or s.model == model]

    def count(self, model: str) -> int:
        return self._per_model.get(model, 0)

    # --- lifecycle of one sequence -----------------------------------------------------
    def start(self, model: str, seq_id: SequenceId, state: CarriedState) -> LiveSequence:
        """A new live sequence from ``state`` (zero); an existing one with this id restarts."""
        key = (model, seq_id)
        old = self._live.get(key)
        if old is not None:
            self._remove(old, None)  # restarted by its owner: no tombstone, not an eviction
        self.sweep()
        if len(self._live) >= self.max_live:
            raise ResourceExhausted(
                f"sequence table is full: {len(self._live)} live sequences (max_live_sequences={self.max_live}); "
                f"end finished sequences, or retry after idle ones time out ({self.idle_timeout_s:g} s)")
        if self.state_bytes + state.nbytes > self.max_state_bytes:
            raise ResourceExhausted(
                f"sequence state memory is full: {self.state_bytes} bytes held, {state.nbytes} more would pass "
                f"max_sequence_state_bytes={self.max_state_bytes}; end finished sequences or retry later")
        self._gone.pop(key, None)
        seq = LiveSequence(model, seq_id, state.model_version, state, self.clock())
        self._live[key] = seq
        self._per_model[model] = self._per_model.get(model, 0) + 1
        self.state_bytes += state.nbytes
        return seq

    def get(self, model: str, seq_id: SequenceId) -> LiveSequence:
        key = (model, seq_id)
        seq = self._live.get(key)
        if seq is not None and seq.users == 0 and self.clock() - seq.last_used > self.idle_timeout_s:
            self._evict_idle(seq, self.clock())  # past its timeout, before the sweeper came by
        elif seq is not None:
            return seq
        why = self._gone.get(key)
        if why is not None:
            raise FailedPrecondition(why)
        raise SequenceNotFound(
            f"model {model!r} has no live sequence {describe(seq_id)}: it was never started here, was forgotten "
            "long ago, or the server restarted since (sequences live in one server process and are lost on "
            "restart); send its first chunk again with sequence start set")

    def why_gone(self, model: str, seq_id: SequenceId) -> str | None:
        return self._gone.get((model, seq_id))

    def update(self, seq: LiveSequence, state: CarriedState) -> None:
        """Store a chunk's final state (dropped if the sequence left the table meanwhile)."""
        if seq.gone is not None:
            return
        self.state_bytes += state.nbytes - seq.state.nbytes
        seq.state = state
        seq.last_used = self.clock()

    def end(self, seq: LiveSequence) -> None:
        self._remove(seq, f"sequence {describe(seq.seq_id)} of model {seq.model!r} has ended (a chunk had sequence "
                          "end set); start a new sequence")

    def evict(self, seq: LiveSequence, reason: str, message: str) -> None:
        self._remove(seq, message)
        self.evictions[reason] = self.evictions.get(reason, 0) + 1
        if self._on_evict is not None:
            self._on_evict(seq.model, reason)

    def _remove(self, seq: LiveSequence, message: str | None) -> None:
        key = (seq.model, seq.seq_id)
        if self._live.get(key) is not seq:
            return
        del self._live[key]
        self._per_model[seq.model] -= 1
        seq.gone = message or "restarted"
        self.state_bytes -= seq.state.nbytes
        if message is not None:
            self._gone[key] = message
            self._gone.move_to_end(key)
            while len(self._gone) > self._tombstones:
                self._gone.popitem(last=False)

    # --- bulk ---------------------------------------------------------------------------
    def sweep(self) -> int:
        """Evict sequences idle for longer than the timeout (not those in use); returns how many."""
        now = self.clock()
        idle = [s for s in self._live.values() if s.users == 0 and now - s.last_used > self.idle_timeout_s]
        for s in idle:
            self._evict_idle(s, now)
        return len(idle)

    def _evict_idle(self, s: LiveSequence, now: float) -> None:
        self.evict(s, "idle", f"sequence {describe(s.seq_id)} of model {s.model!r} was evicted after "
                              f"{now - s.last_used:.3g} s idle (sequence_idle_timeout_s={self.idle_timeout_s:g}); "
                              "its state is lost: start it again")

    def drop_version(self, seq: LiveSequence, serving: str | None) -> None:
        """Evict ``seq`` because its version is no longer the one serving its model."""
        what = f"version {serving!r} replaced version {seq.version!r}" if serving else \
            f"version {seq.version!r} is no longer served"
        self.evict(seq, "version", f"sequence {describe(seq.seq_id)} of model {seq.model!r} was dropped: {what}; "
                                   "a state does not carry across versions: start the sequence again")

    def drop_unserved(self, served: Callable[[str, str], bool], serving: Callable[[str], str | None]) -> int:
        """Evict sequences whose version is no longer loaded."""
        stale = [s for s in self._live.values() if s.users == 0 and not served(s.model, s.version)]
        for s in stale:
            self.drop_version(s, serving(s.model))
        return len(stale)

    def close(self) -> None:
        """Server shutdown: every live sequence is dropped."""
        for s in list(self._live.values()):
            self.evict(s, "shutdown", f"sequence {describe(s.seq_id)} of model {s.model!r} was dropped: the "
                                      "server is shutting down; start the sequence again on another replica")
