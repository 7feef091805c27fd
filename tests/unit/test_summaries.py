"""State summaries against independent computations: the model's own forward on prefixes, its
head, nn-module hidden states, numpy formulas on the returned gates, and an SVD for the PCA."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from seqlens.errors import InvalidInput, ResourceExhausted
from seqlens.export import export_model
from seqlens.families import SequenceModel, build_model
from seqlens.grpc.converters import layer_state_to_proto, state_options
from seqlens.schema import ModelConfig
from seqlens.summaries import (
    PROJECTION,
    SUMMARIES,
    LayerStateResult,
    StateOptions,
    available_summaries,
    compute_state,
    state_projection,
    timescale_of,
)
from seqlens.tokenizers import Tokenizer, Vocabulary
from seqlens.versions import REFERENCE_FILE, LoadedVersion
from seqlens_client._proto.seqlens.v1 import state_pb2
from seqlens_client.state import StateSummary, pearson_per_unit

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
VOCAB = [f"t{i}" for i in range(17)]
NF = 3
ALL = StateOptions(include_hidden=True)


def make_config(task: str, cell: str, layers: int, bidirectional: bool, hidden: int, tokens: bool) -> ModelConfig:
    head = {"classification": "last", "tagging": "per_step", "forecasting": "horizon"}[task]
    inp = {"kind": "tokens", "lowercase": False} if tokens else {
        "kind": "features", "feature_names": [f"f{i}" for i in range(NF)], "mean": [0.5] * NF, "std": [2.0] * NF}
    extra: dict[str, object] = {"labels": ["a", "b", "c"]} if task != "forecasting" else {
        "horizon": 2, "output_scale": {"mean": 3.0, "std": 1.5}}
    return ModelConfig.model_validate({
        "task": task, "input": inp, "max_length": 64, **extra,
        "architecture": {"input_layer": "embedding" if tokens else "linear", "embedding_dim": 5, "cell": cell,
                         "num_layers": layers, "hidden_size": hidden, "bidirectional": bidirectional, "head": head}})


def in_memory_version(config: ModelConfig, seed: int, path: Path) -> LoadedVersion:
    """A LoadedVersion without files: compute_state reads the torch module, config and tokenizer only."""
    module = build_model(config, len(VOCAB) if config.is_tokens else None, seed=seed).eval()
    tok = Tokenizer(config.input, Vocabulary(VOCAB)) if config.is_tokens else None  # type: ignore[arg-type]
    return LoadedVersion("m", "1", path, config, module, None, tok, 0.0)  # type: ignore[arg-type]


def sequence(config: ModelConfig, steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if config.is_tokens:
        return rng.integers(0, len(VOCAB), size=steps).astype(np.int64)
    return rng.standard_normal((steps, NF)).astype(np.float32)


def forward(module: SequenceModel, values: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(values[None]), torch.tensor([values.shape[0]]))[0].numpy()


def saturation_numpy(gates: np.ndarray, names: list[str], cell: str) -> np.ndarray:
    """Direct: per gate and unit, the share of steps with value < 0.1 and > 0.9 on [0, 1]."""
    out = np.zeros((gates.shape[0], gates.shape[2], 2))
    for k, name in enumerate(names):
        g = gates[k].astype(np.float64)
        if (cell, name) in (("lstm", "g"), ("gru", "n")):
            g = (g + 1) / 2
        for u in range(g.shape[1]):
            out[k, u, 0] = np.count_nonzero(g[:, u] < 0.1) / g.shape[0]
            out[k, u, 1] = np.count_nonzero(g[:, u] > 0.9) / g.shape[0]
    return out


@settings(max_examples=40, deadline=None)
@given(task=st.sampled_from(["classification", "tagging", "forecasting"]), cell=st.sampled_from(CELLS),
       layers=st.integers(1, 2), bidirectional=st.booleans(), hidden=st.integers(1, 9), tokens=st.booleans(),
       steps=st.integers(1, 10), seed=st.integers(0, 2**16), top_k=st.integers(1, 12),
       target=st.one_of(st.none(), st.integers(0, 1)))
def test_summaries_equal_direct_computations(tmp_path_factory: pytest.TempPathFactory, task: str, cell: str,
                                             layers: int, bidirectional: bool, hidden: int, tokens: bool,
                                             steps: int, seed: int, top_k: int, target: int | None) -> None:
    config = make_config(task, cell, layers, bidirectional, hidden, tokens)
    loaded = in_memory_version(config, seed, tmp_path_factory.mktemp("v"))
    module = loaded.torch_module
    values = sequence(config, steps, seed)
    opts = StateOptions(top_k=top_k, include_hidden=True, include_cell=cell == "lstm")
    res = compute_state(loaded, values, opts, target)
    dirs = 2 if bidirectional else 1
    assert [(r.layer, r.direction) for r in res] == [
        (layer, d) for layer in range(layers) for d in ("forward", "backward")[:dirs]]
    with torch.no_grad():
        ref = module.run_layers(module.embed(torch.from_numpy(values[None])), torch.tensor([steps]))
    out = forward(module, values)
    names = {"lstm": ["i", "f", "g", "o"], "gru": ["r", "z", "n"]}.get(cell, [])
    for r in res:
        d = 0 if r.direction == "forward" else 1
        assert r.gate_names == names and r.cell == cell
        assert r.hidden is not None
        h = r.hidden.astype(np.float64)
        np.testing.assert_allclose(h, ref[r.layer][d][0].numpy(), atol=1e-5, rtol=1e-5)
        assert (r.cell_state is not None) == (cell == "lstm")
        # norms and deltas from the returned h (previous = the step the recurrence read before)
        prev = np.vstack([np.zeros((1, hidden)), h[:-1]]) if d == 0 else np.vstack([h[1:], np.zeros((1, hidden))])
        np.testing.assert_allclose(r.state_norm, np.linalg.norm(h, axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.delta_norm, np.linalg.norm(h - prev, axis=1), rtol=1e-5, atol=1e-6)
        k = min(top_k, hidden)
        assert r.top_units is not None and r.top_units.shape == (steps, k) and r.top_units.dtype == np.int64
        mag = np.abs(h - prev)
        np.testing.assert_allclose(np.take_along_axis(mag, r.top_units, axis=1),
                                   -np.sort(-mag, axis=1)[:, :k], rtol=1e-6)
        assert all(len(set(row)) == k for row in r.top_units.tolist())
        np.testing.assert_array_equal(r.active_count, (np.abs(np.tanh(r.hidden)) >= 0.3).sum(axis=1))
        assert r.projection is not None and r.projection.shape == (steps, 2)
        if names:
            assert r.gates is not None and r.gates.shape == (len(names), steps, hidden)
            np.testing.assert_allclose(r.gate_mean, r.gates.mean(axis=2), rtol=1e-5, atol=1e-7)
            assert r.saturation is not None
            np.testing.assert_allclose(r.saturation, saturation_numpy(r.gates, names, cell), atol=1e-7)
            for k_gate, s in enumerate(r.saturation_summary):
                assert s.gate == names[k_gate]
                assert math.isclose(s.left_fraction, r.saturation[k_gate, :, 0].mean(), abs_tol=1e-7)
                assert math.isclose(s.right_fraction, r.saturation[k_gate, :, 1].mean(), abs_tol=1e-7)
            retention = r.gates[names.index("f" if cell == "lstm" else "z")].astype(np.float64).mean(axis=0)
            want = -1.0 / np.log(np.minimum(retention, math.exp(-1e-4)))
            np.testing.assert_allclose(r.timescale, want, rtol=1e-5)
            assert np.all((r.timescale > 0) & (r.timescale <= 1e4))
        else:
            assert r.gates is None and r.gate_mean is None and r.saturation is None and r.timescale is None
        top = r.layer == layers - 1
        assert (r.prefix_prediction is not None) == (top and not bidirectional)
        assert (r.unit_contribution is not None) == top
    # prefix_prediction[t] is what the model says on the sequence cut after t
    top_res = [r for r in res if r.layer == layers - 1]
    if not bidirectional:
        pp = top_res[0].prefix_prediction
        assert pp is not None
        for t in range(steps):
            cut = forward(module, values[:t + 1])
            np.testing.assert_allclose(pp[t], cut[-1] if task == "tagging" else cut, atol=1e-5, rtol=1e-5)
    # unit contributions over all directions + the bias term = the target output
    final = out[-1] if task == "tagging" else out
    k_target = target if target is not None else (int(np.argmax(final)) if task != "forecasting" else 0)
    scale = 1.5 if task == "forecasting" else 1.0
    bias = float(module.head.bias.detach()[k_target]) * scale + (3.0 if task == "forecasting" else 0.0)
    total = sum(float(r.unit_contribution.astype(np.float64).sum()) for r in top_res
                if r.unit_contribution is not None)
    assert math.isclose(total + bias, float(final[k_target]), rel_tol=1e-5, abs_tol=1e-5)


def test_defaults_return_every_applicable_summary_and_no_matrices(tmp_path: Path) -> None:
    config = make_config("classification", "gru", 2, False, 4, True)
    loaded = in_memory_version(config, 0, tmp_path)
    res = compute_state(loaded, sequence(config, 6, 0), StateOptions())
    assert available_summaries(config) == list(SUMMARIES)
    for r in res:
        assert r.hidden is None and r.cell_state is None and r.gates is None
        assert r.state_norm is not None and r.timescale is not None and r.projection is not None
    assert compute_state(loaded, sequence(config, 6, 0), StateOptions(enabled=False)) == []
    only = compute_state(loaded, sequence(config, 6, 0), StateOptions(summaries=("state_norm",)))
    assert all(r.state_norm is not None and r.delta_norm is None and r.projection is None for r in only)


@pytest.mark.parametrize(("cell", "bidirectional", "missing"), [
    ("lstm", False, set()), ("gru", True, {"prefix_prediction"}),
    ("rnn_tanh", False, {"gate_mean", "saturation", "timescale"}),
    ("rnn_relu", True, {"gate_mean", "saturation", "timescale", "prefix_prediction"})])
def test_available_summaries(cell: str, bidirectional: bool, missing: set[str]) -> None:
    config = make_config("classification", cell, 1, bidirectional, 3, True)
    assert set(available_summaries(config)) == set(SUMMARIES) - missing


def test_errors_name_the_field_and_the_limit(tmp_path: Path) -> None:
    config = make_config("classification", "gru", 1, True, 4, True)
    loaded = in_memory_version(config, 0, tmp_path)
    x = sequence(config, 10, 0)
    with pytest.raises(InvalidInput, match=r"unknown 'bogus'.*valid names: state_norm, delta_norm"):
        compute_state(loaded, x, StateOptions(summaries=("state_norm", "bogus")))
    with pytest.raises(InvalidInput, match="'prefix_prediction' does not apply.*unidirectional"):
        compute_state(loaded, x, StateOptions(summaries=("prefix_prediction",)))
    with pytest.raises(InvalidInput, match="include_cell: only LSTM.*'gru'"):
        compute_state(loaded, x, StateOptions(include_cell=True))
    with pytest.raises(InvalidInput, match=r"target class index 3 is outside \[0, 3\)"):
        compute_state(loaded, x, StateOptions(), 3)
    # hidden + 3 gates, 2 directions, T=10, D=4: 320 values
    with pytest.raises(ResourceExhausted, match="would return 320 values.*max_state_elements=319"):
        compute_state(loaded, x, StateOptions(include_hidden=True), max_state_elements=319)
    assert len(compute_state(loaded, x, StateOptions(include_hidden=True), max_state_elements=320)) == 2
    rnn = in_memory_version(make_config("classification", "rnn_tanh", 1, False, 4, True), 0, tmp_path)
    with pytest.raises(InvalidInput, match="'timescale' does not apply.*no forget"):
        compute_state(rnn, x, StateOptions(summaries=("timescale",)))


def _reference_states(module: SequenceModel, x: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """h_t of every real step, per (layer, direction), from the nn modules."""
    with torch.no_grad():
        outs = module.run_layers(module.embed(torch.from_numpy(x)), torch.from_numpy(lengths))
    real = np.arange(x.shape[1])[None, :] < lengths[:, None]
    return [h.numpy()[real].astype(np.float64) for layer in outs for h in layer]


def test_projection_uses_reference_pca_fit_once(tmp_path: Path) -> None:
    config = make_config("classification", "lstm", 2, True, 6, True)
    module = build_model(config, len(VOCAB), seed=5)
    rng = np.random.default_rng(0)
    ref_x = rng.integers(0, len(VOCAB), size=(20, 15)).astype(np.int64)
    ref_len = rng.integers(1, 16, size=20).astype(np.int64)
    loaded = export_model(module, tmp_path / "m" / "1", vocabulary=VOCAB, reference=(ref_x, ref_len))
    values = sequence(config, 9, 1)
    res = compute_state(loaded, values, ALL)
    fitted = PROJECTION.get(loaded)
    assert fitted is not None
    assert state_projection(loaded) is fitted and fitted.source == "reference"
    for r, rows in zip(res, _reference_states(loaded.torch_module, ref_x, ref_len), strict=True):
        mean = rows.mean(axis=0)
        _, sv, vt = np.linalg.svd(rows - mean, full_matrices=False)
        assert sv[1] > 1.01 * sv[2]  # the first two axes are well defined
        want = (r.hidden.astype(np.float64) - mean) @ vt[:2].T
        for k in range(2):  # principal axes are defined up to sign
            assert np.allclose(r.projection[:, k], want[:, k], atol=1e-4) or \
                np.allclose(r.projection[:, k], -want[:, k], atol=1e-4)


def test_projection_falls_back_to_probe_inputs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config("forecasting", "gru", 1, False, 4, False)
    module = build_model(config, None, seed=2)
    loaded = export_model(module, tmp_path / "m" / "1")
    assert state_projection(loaded).source == "probe"
    bad = export_model(module, tmp_path / "m" / "2",
                       reference=(np.zeros((2, 4, NF + 1), np.float32), np.array([4, 2])))
    assert (bad.path / REFERENCE_FILE).is_file()
    with caplog.at_level(logging.WARNING):
        assert state_projection(bad).source == "probe"
    assert "reference.safetensors is unusable" in caplog.text and "[B, T, 3]" in caplog.text


# --- protobuf conversion and the SDK ------------------------------------------------
def test_proto_round_trip_through_the_sdk(tmp_path: Path) -> None:
    config = make_config("classification", "lstm", 2, True, 5, True)
    loaded = in_memory_version(config, 3, tmp_path)
    opts = state_options(state_pb2.StateOptions(enabled=True, include_hidden=True, include_cell=True))
    assert opts == StateOptions(enabled=True, summaries=(), top_k=5, include_hidden=True, include_cell=True)
    res = compute_state(loaded, sequence(config, 7, 3), opts)
    msgs = [state_pb2.LayerState.FromString(layer_state_to_proto(r).SerializeToString()) for r in res]
    summary = StateSummary.from_proto(msgs)
    assert len(summary) == 4
    for r in res:
        got = summary.layer(r.layer, r.direction)
        assert (got.cell, got.gate_names) == (r.cell, r.gate_names)
        for name in ("hidden", "cell_state", "gates", "state_norm", "delta_norm", "gate_mean", "saturation",
                     "timescale", "top_units", "prefix_prediction", "unit_contribution", "active_count",
                     "projection"):
            want, have = getattr(r, name), getattr(got, name)
            if want is None:
                assert have is None, name
            else:
                assert have.dtype == (np.int64 if want.dtype.kind == "i" else np.float32), name
                np.testing.assert_array_equal(have, want, err_msg=name)
        assert [tuple(s) for s in got.saturation_summary] == [
            (s.gate, s.left_fraction, s.right_fraction) for s in r.saturation_summary]
    with pytest.raises(KeyError, match="layer 2"):
        summary.layer(2)


def _layer(layer: int, direction: str, hidden: np.ndarray, gates: np.ndarray | None = None) -> LayerStateResult:
    return LayerStateResult(layer, direction, "lstm", ["i", "f", "g", "o"], hidden=hidden, gates=gates)


def test_correlated_units_finds_a_planted_unit() -> None:
    rng = np.random.default_rng(0)
    steps, d = 200, 16
    signal = (rng.random(steps) > 0.5).astype(np.float64)
    fwd = rng.standard_normal((steps, d)).astype(np.float32)
    bwd = rng.standard_normal((steps, d)).astype(np.float32)
    bwd[:, 11] = -2 * signal + 0.1 * rng.standard_normal(steps)  # anti-correlated unit
    gates = rng.random((4, steps, d)).astype(np.float32)
    gates[1, :, 3] = signal * 0.5 + 0.2
    summary = StateSummary.from_proto([layer_state_to_proto(_layer(0, "forward", fwd, gates)),
                                       layer_state_to_proto(_layer(0, "backward", bwd, gates))])
    best = summary.correlated_units(signal, top=3)
    assert (best[0].layer, best[0].direction, best[0].unit) == (0, "backward", 11) and best[0].r < -0.95
    assert all(abs(b.r) < 0.4 for b in best[1:])
    assert abs(best[0].r - np.corrcoef(bwd[:, 11], signal)[0, 1]) < 1e-9
    np.testing.assert_allclose(pearson_per_unit(fwd, signal), [np.corrcoef(fwd[:, u], signal)[0, 1]
                                                                 for u in range(d)], atol=1e-12)
    only_fwd = summary.correlated_units(signal, direction="forward", top=1)
    assert only_fwd[0].direction == "forward" and abs(only_fwd[0].r) < 0.4
    by_gate = summary.correlated_units(signal, use="gates", gate="f", direction="forward", top=1)
    assert by_gate[0].unit == 3 and by_gate[0].r > 0.999
    with pytest.raises(ValueError, match=r"gate= one of \['i', 'f', 'g', 'o'\]"):
        summary.correlated_units(signal, use="gates")
    with pytest.raises(ValueError, match="include_cell=True"):
        summary.correlated_units(signal, use="cell")
    with pytest.raises(ValueError, match="signal has 5 steps; the state has T=200"):
        summary.correlated_units(signal[:5])
    flat = np.zeros((steps, 2), np.float32)  # constant units correlate with nothing
    assert pearson_per_unit(flat, signal).tolist() == [0.0, 0.0]


def test_timescale_is_minus_one_over_log_mean_retention_clipped() -> None:
    np.testing.assert_allclose(timescale_of(np.full((3, 2), 0.5, np.float32)), 1 / math.log(2), rtol=1e-6)
    np.testing.assert_allclose(timescale_of(np.array([[0.9], [0.7]], np.float32)), -1 / math.log(0.8), rtol=1e-6)
    assert timescale_of(np.ones((4, 1), np.float32))[0] == pytest.approx(1e4, rel=1e-6)  # never inf
    assert 0 < timescale_of(np.zeros((4, 1), np.float32))[0] < 0.02  # never 0 / nan
