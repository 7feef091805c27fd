"""Carried state: chunks fed with the returned state equal the whole sequence at once.

Oracles: ONNX Runtime on the whole sequence (the exported graph, which takes no state) for
outputs, and the numpy step-by-step recurrence (``recurrence.recompute``) for final states.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from seqlens.carry import (
    CarriedState,
    Chunk,
    check_state,
    require_streamable,
    run_chunks,
    stateful_runtime,
    zero_state,
)
from seqlens.errors import FailedPrecondition, InvalidInput
from seqlens.recurrence import recompute
from seqlens.runtimes.onnx_state import STATE_ONNX_FILE
from seqlens.versions import load_version

from tests.factories import export_tiny, random_inputs

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def _load(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    return load_version(export_tiny(tmp_path, "m", **kw), "m", "1")


def _cuts(rng: np.random.Generator, n: int) -> list[int]:
    """Random chunk boundaries 0 < c_1 < ... < n (chunks of 1..n steps)."""
    k = int(rng.integers(1, n + 1))
    inner = sorted(rng.choice(np.arange(1, n), size=min(k - 1, n - 1), replace=False).tolist()) if n > 1 else []
    return [0, *inner, n]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("task,tokens", [("classification", True), ("tagging", True), ("forecasting", False)])
def test_chunks_equal_whole_sequence(tmp_path: Path, cell: str, layers: int, task: str, tokens: bool) -> None:
    """On both runtimes: the exported stateful graph (ONNX Runtime) and the torch module."""
    loaded = _load(tmp_path, cell=cell, layers=layers, task=task, tokens=tokens)
    assert stateful_runtime(loaded) is not None  # export wrote stateful.onnx and it passed parity
    for torch_only in (False, True):
        _check_chunks(loaded, cell, layers, task, torch_only)


def _check_chunks(loaded, cell: str, layers: int, task: str, torch_only: bool) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(zlib.crc32(f"{cell}{layers}{task}{torch_only}".encode()))
    x, lengths = random_inputs(loaded.torch_module, 5, 17, rng)
    seqs = [x[i, : int(n)] for i, n in enumerate(lengths)]
    whole = [loaded.onnx.run(s[None], np.array([len(s)]))[0] for s in seqs]
    cuts = [_cuts(rng, len(s)) for s in seqs]
    states = [zero_state(loaded) for _ in seqs]
    outs: list[list[np.ndarray]] = [[] for _ in seqs]
    for k in range(max(len(c) for c in cuts) - 1):  # chunks of different sequences batched together
        live = [i for i, c in enumerate(cuts) if k + 1 < len(c)]
        results = run_chunks(loaded, [Chunk(seqs[i][cuts[i][k]:cuts[i][k + 1]], states[i]) for i in live],
                             torch_only=torch_only)
        for i, r in zip(live, results, strict=True):
            states[i] = r.state
            outs[i].append(r.output)
    for i, s in enumerate(seqs):
        got = np.concatenate(outs[i]) if task == "tagging" else outs[i][-1]
        np.testing.assert_allclose(got, whole[i], atol=1e-5, rtol=0)
        assert states[i].steps == len(s)
        traces = recompute(loaded.torch_module, s[None], np.array([len(s)]))
        for layer, tr in enumerate(traces):
            np.testing.assert_allclose(states[i].tensors[f"layer{layer}.forward.h"], tr[0].hidden[0, -1], atol=1e-5)
            if cell == "lstm":
                assert tr[0].cell_state is not None
                np.testing.assert_allclose(states[i].tensors[f"layer{layer}.forward.c"], tr[0].cell_state[0, -1],
                                           atol=1e-5)


def test_recompute_continues_from_a_carried_state(tmp_path: Path) -> None:
    """State summaries of a chunk, started from the carried state, equal that slice of the whole."""
    loaded = _load(tmp_path, cell="lstm", layers=2)
    s = np.array([3, 4, 5, 6, 7, 8, 9, 10, 11, 2], dtype=np.int64)
    first = run_chunks(loaded, [Chunk(s[:4], zero_state(loaded))])[0].state
    initial = [(first.tensors[f"layer{i}.forward.h"][None], first.tensors[f"layer{i}.forward.c"][None])
               for i in range(2)]
    part = recompute(loaded.torch_module, s[None, 4:], np.array([6]), initial)
    whole = recompute(loaded.torch_module, s[None], np.array([10]))
    for a, b in zip(part, whole, strict=True):
        np.testing.assert_allclose(a[0].hidden[0], b[0].hidden[0, 4:], atol=1e-6)
        np.testing.assert_allclose(a[0].gates[0], b[0].gates[0, :, 4:], atol=1e-6)


def test_versions_without_a_stateful_graph_run_chunks_on_torch(tmp_path: Path) -> None:
    version = export_tiny(tmp_path, "m", cell="gru", layers=2)
    (version / STATE_ONNX_FILE).unlink()  # as exported before stateful.onnx existed
    loaded = load_version(version, "m", "1")
    assert stateful_runtime(loaded) is None
    s = np.array([3, 4, 5, 6, 7], dtype=np.int64)
    first = run_chunks(loaded, [Chunk(s[:2], zero_state(loaded))])[0]
    last = run_chunks(loaded, [Chunk(s[2:], first.state)])[0]
    np.testing.assert_allclose(last.output, loaded.onnx.run(s[None], np.array([5]))[0], atol=1e-5)


def test_a_stateful_graph_that_fails_parity_is_not_used(tmp_path: Path) -> None:
    version = export_tiny(tmp_path, "m", cell="lstm")
    other = export_tiny(tmp_path, "o", cell="lstm", seed=9)  # same shapes, other weights
    (version / STATE_ONNX_FILE).write_bytes((other / STATE_ONNX_FILE).read_bytes())
    assert stateful_runtime(load_version(version, "m", "1")) is None


def test_bidirectional_models_refuse_streaming(tmp_path: Path) -> None:
    loaded = _load(tmp_path, cell="gru", bidirectional=True)
    assert not (loaded.path / STATE_ONNX_FILE).exists()
    with pytest.raises(FailedPrecondition, match="bidirectional.*cannot be fed in chunks"):
        require_streamable(loaded)


def test_state_checks_name_the_field(tmp_path: Path) -> None:
    loaded = _load(tmp_path, cell="lstm")
    good = zero_state(loaded)
    check_state(loaded, good, "states[0]")

    def with_tensors(**tensors: np.ndarray) -> CarriedState:
        return CarriedState("m", "1", 3, {**good.tensors, **tensors})

    with pytest.raises(FailedPrecondition, match=r"states\[0\] came from version '7'.*start the sequence again"):
        check_state(loaded, CarriedState("m", "7", 3, good.tensors), "states[0]")
    with pytest.raises(FailedPrecondition, match="came from model 'other'"):
        check_state(loaded, CarriedState("other", "1", 3, good.tensors), "states[0]")
    with pytest.raises(InvalidInput, match=r"states\[1\].tensors: missing \['layer0.forward.c'\]"):
        check_state(loaded, CarriedState("m", "1", 3, {"layer0.forward.h": good.tensors["layer0.forward.h"]}),
                    "states[1]")
    with pytest.raises(InvalidInput, match=r"tensors\['layer0.forward.h'\] has shape \[5\]; model 'm' needs \[6\]"):
        check_state(loaded, with_tensors(**{"layer0.forward.h": np.zeros(5, np.float32)}), "states[0]")
    with pytest.raises(InvalidInput, match="NaN or inf"):
        check_state(loaded, with_tensors(**{"layer0.forward.c": np.full(6, np.nan, np.float32)}), "states[0]")
    with pytest.raises(InvalidInput, match="FLOAT32"):
        check_state(loaded, with_tensors(**{"layer0.forward.c": np.zeros(6, np.float64)}), "states[0]")
    with pytest.raises(InvalidInput, match="steps is -1"):
        check_state(loaded, CarriedState("m", "1", -1, good.tensors), "states[0]")
