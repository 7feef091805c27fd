"""The sequence table on an injected clock: limits, eviction and the errors that say why."""

from __future__ import annotations

import numpy as np
import pytest
from seqlens.carry import CarriedState
from seqlens.errors import FailedPrecondition, ResourceExhausted, SequenceNotFound
from seqlens.sequences import SequenceTable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _state(version: str = "1", steps: int = 0) -> CarriedState:
    return CarriedState("m", version, steps, {"layer0.forward.h": np.zeros(4, np.float32)})  # 16 bytes


def _table(clock: Clock, **kw: object) -> tuple[SequenceTable, list[tuple[str, str]]]:
    evicted: list[tuple[str, str]] = []
    settings: dict[str, object] = {"max_live": 3, "idle_timeout_s": 10.0, "max_state_bytes": 1000, **kw}
    table = SequenceTable(clock=clock, on_evict=lambda m, r: evicted.append((m, r)), **settings)  # type: ignore[arg-type]
    return table, evicted


def test_idle_sequences_are_evicted_on_the_table_clock() -> None:
    clock = Clock()
    table, evicted = _table(clock)
    table.start("m", "a", _state())
    table.start("m", 7, _state())
    clock.now += 5
    table.update(table.get("m", 7), _state(steps=3))  # used: its idle time restarts
    clock.now += 6  # "a" idle 11 s, 7 idle 6 s
    assert table.sweep() == 1
    assert evicted == [("m", "idle")] and table.evictions["idle"] == 1
    with pytest.raises(FailedPrecondition, match=r"sequence 'a' of model 'm' was evicted after 11 s idle"):
        table.get("m", "a")
    assert table.get("m", 7).state.steps == 3
    clock.now += 11  # past the timeout before any sweep: the access itself evicts
    with pytest.raises(FailedPrecondition, match=r"7 \(uint64\).*idle"):
        table.get("m", 7)
    assert len(table) == 0 and table.state_bytes == 0 and table.count("m") == 0


def test_a_sequence_in_use_is_never_idle() -> None:
    clock = Clock()
    table, _ = _table(clock)
    seq = table.start("m", "a", _state())
    seq.users = 1
    clock.now += 60
    assert table.sweep() == 0


def test_full_table_and_state_bytes_are_resource_exhausted() -> None:
    clock = Clock()
    table, _ = _table(clock, max_live=2, max_state_bytes=40)
    table.start("m", "a", _state())
    table.start("m", "b", _state())
    with pytest.raises(ResourceExhausted, match="sequence table is full: 2 live sequences .max_live_sequences=2"):
        table.start("m", "c", _state())
    table.end(table.get("m", "a"))
    table.start("m", "c", _state())  # room again
    big = CarriedState("m", "1", 0, {"layer0.forward.h": np.zeros(8, np.float32)})  # 32 bytes
    table.end(table.get("m", "c"))
    with pytest.raises(ResourceExhausted, match="max_sequence_state_bytes=40"):
        table.start("m", "d", big)
    clock.now += 11  # an idle sequence makes room for a new one
    table.start("m", "d", big)
    assert table.state_bytes == 32


def test_unknown_ended_and_dropped_sequences_say_which() -> None:
    clock = Clock()
    table, evicted = _table(clock)
    with pytest.raises(SequenceNotFound, match="never started here.*server restarted"):
        table.get("m", "nope")
    table.end(table.start("m", "a", _state()))
    with pytest.raises(FailedPrecondition, match="has ended"):
        table.get("m", "a")
    assert evicted == []  # ending is not an eviction
    seq = table.start("m", "b", _state())
    table.drop_version(seq, "2")
    with pytest.raises(FailedPrecondition, match="version '2' replaced version '1'"):
        table.get("m", "b")
    table.start("m", "c", _state())
    table.close()
    with pytest.raises(FailedPrecondition, match="shutting down"):
        table.get("m", "c")
    assert [r for _, r in evicted] == ["version", "shutdown"]


def test_start_on_a_live_id_restarts_it() -> None:
    clock = Clock()
    table, evicted = _table(clock)
    old = table.start("m", "a", _state(steps=0))
    table.update(old, _state(steps=5))
    new = table.start("m", "a", _state())
    assert table.get("m", "a") is new and new.state.steps == 0 and old.gone is not None
    assert evicted == [] and len(table) == 1
    table.update(old, _state(steps=9))  # a late write from the old sequence is dropped
    assert table.state_bytes == 16
