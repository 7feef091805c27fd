"""The torch replay of ONNX graphs: ONNX Runtime = replay, replay gradients = eager torch
gradients, exact padding, on random tiny models of several custom shapes (exported in the test,
as a user would); op semantics against ONNX Runtime on hand-built graphs."""

from __future__ import annotations

from functools import cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from seqlens.errors import ModelConfigError, ResourceExhausted
from seqlens.runtimes.replay import GraphNames, Recorder, ReplayGraph, ReplayLimits, ReplayModule

from tests.custom_models import MAKERS, Custom, mixed_batch


@cache
def custom(kind: str, seed: int) -> Custom:
    return MAKERS[kind](seed)


def replay_of(c: Custom) -> ReplayModule:
    g = c.graph
    return ReplayModule(ReplayGraph(onnx.load_from_string(c.onnx_bytes)),
                        GraphNames(g["inputs"], g["lengths"], g["output"], g["attribute_at"]))


def session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


PROPS = settings(max_examples=6, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPS
@given(kind=st.sampled_from(sorted(MAKERS)), seed=st.integers(0, 3), batch=st.integers(2, 5),
       t_max=st.integers(1, 13), data_seed=st.integers(0, 2**16))
def test_ort_equals_replay_equals_eager(kind: str, seed: int, batch: int, t_max: int, data_seed: int) -> None:
    c = custom(kind, seed)
    m = replay_of(c)
    x, lengths = mixed_batch(c, batch, t_max, np.random.default_rng(data_seed))
    with torch.no_grad():
        got = m(x, lengths).numpy()
        eager = c.eager(x, lengths).numpy()
    ref = session(c.onnx_bytes).run([c.graph["output"]], {"inputs": x.numpy(), "lengths": lengths.numpy()})[0]
    assert got.shape == ref.shape == eager.shape
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, eager, atol=1e-5, rtol=0)


@PROPS
@given(kind=st.sampled_from(sorted(MAKERS)), seed=st.integers(0, 3), batch=st.integers(1, 4),
       t_max=st.integers(1, 11), data_seed=st.integers(0, 2**16))
def test_replay_gradients_equal_eager(kind: str, seed: int, batch: int, t_max: int, data_seed: int) -> None:
    """Input gradients at the attribution point (embedding output or features)."""
    c = custom(kind, seed)
    m = replay_of(c)
    x, lengths = mixed_batch(c, batch, t_max, np.random.default_rng(data_seed))
    w = torch.from_numpy(np.random.default_rng(data_seed + 1).standard_normal(
        (batch, *m(x, lengths).shape[1:])).astype(np.float32))
    emb = m.embed(x).detach().requires_grad_(True)
    (m.forward_from_embedding(emb, lengths) * w).sum().backward()
    emb_eager = emb.detach().clone().requires_grad_(True)
    (c.eager_from_attribution(emb_eager, lengths) * w).sum().backward()
    assert emb.grad is not None and emb_eager.grad is not None
    np.testing.assert_allclose(emb.grad.numpy(), emb_eager.grad.numpy(), atol=1e-5, rtol=0)


@PROPS
@given(kind=st.sampled_from(sorted(MAKERS)), seed=st.integers(0, 3), t_max=st.integers(2, 12),
       data_seed=st.integers(0, 2**16))
def test_padding_is_exact(kind: str, seed: int, t_max: int, data_seed: int) -> None:
    """A padded row equals the sequence alone (garbage in the padding changes nothing)."""
    c = custom(kind, seed)
    m = replay_of(c)
    rng = np.random.default_rng(data_seed)
    x, lengths = mixed_batch(c, 3, t_max, rng)
    n = int(rng.integers(1, t_max + 1))
    lengths[1] = n
    with torch.no_grad():
        batch = m(x, lengths)[1]
        alone = m(x[1:2, :n], lengths[1:2])[0]
    if batch.dim() == 2:  # per-step: the real steps, and zeros after
        np.testing.assert_allclose(batch[:n].numpy(), alone.numpy(), atol=1e-6, rtol=0)
        assert not batch[n:].any()
    else:
        np.testing.assert_allclose(batch.numpy(), alone.numpy(), atol=1e-6, rtol=0)


def test_myrnn_keeps_time_dynamic_and_loops_once_per_step() -> None:
    """The scripted MyRNN loop exports as one ONNX Loop; the replay runs it at any length."""
    c = custom("myrnn", 0)
    model = onnx.load_from_string(c.onnx_bytes)
    assert [n.op_type for n in model.graph.node].count("Loop") == 1
    m = replay_of(c)
    for t in (1, 5, 17):
        x, lengths = mixed_batch(c, 2, t, np.random.default_rng(t))
        with torch.no_grad():
            np.testing.assert_allclose(m(x, lengths).numpy(), c.eager(x, lengths).numpy(), atol=1e-6)


def test_recorder_exposes_lstm_gates_as_nn_lstm_computes_them() -> None:
    """Recorded gates of the ONNX LSTM (i,f,g,o) = the gates recomputed from nn.LSTM's weights."""
    c = custom("tagger", 1)
    m = replay_of(c)
    x, lengths = mixed_batch(c, 1, 6, np.random.default_rng(0))
    rec = Recorder()
    with torch.no_grad():
        m.run(x, lengths, ["outputs"], rec)
        lstm = c.module.lstm  # type: ignore[union-attr]
        emb = c.module.embedding(x)  # type: ignore[union-attr]
        h = torch.zeros(1, lstm.hidden_size)
        cs = torch.zeros_like(h)
        gates, hs = [], []
        for t in range(x.shape[1]):
            a = emb[:, t] @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + h @ lstm.weight_hh_l0.T + lstm.bias_hh_l0
            i, f, g, o = a.chunk(4, 1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            cs = f * cs + i * g
            h = o * torch.tanh(cs)
            gates.append(torch.stack([i, f, g, o], 1))
            hs.append(h)
    (d,) = rec.directions
    assert d.cell == "lstm" and d.direction == 0
    np.testing.assert_allclose(d.gates, torch.stack(gates, 2).numpy(), atol=1e-6)
    np.testing.assert_allclose(d.hidden, torch.stack(hs, 1).numpy(), atol=1e-6)


# --- op semantics against ONNX Runtime on hand-built graphs ------------------------------
def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[str],
           inits: list[onnx.TensorProto] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [onnx.ValueInfoProto(name=o) for o in outputs], inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _both(model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str]) -> None:
    ref = session(model.SerializeToString()).run(outputs, feeds)
    got = ReplayGraph(model).run({k: torch.from_numpy(v) for k, v in feeds.items()}, outputs)
    for name, r in zip(outputs, ref, strict=True):
        g = got[name]
        assert list(g.shape) == list(r.shape), name
        np.testing.assert_allclose(g.numpy(), r, atol=1e-5, rtol=1e-5, err_msg=name)


def _f(name: str, shape: list[int | str] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _i(name: str, shape: list[int | str] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, shape)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("variant", [0, 1])
def test_recurrent_ops_equal_onnx_runtime(op: str, direction: str, variant: int) -> None:
    """All directions, sequence_lens, initial states, peepholes and Y_c (LSTM variant 0: the step
    loop; variant 1: PyTorch's fused kernel), linear_before_reset 0/1 (GRU; 1 is fused), Relu
    (RNN variant 1). Layout 1 (batch-major; ONNX Runtime has no kernel for it) must
    equal layout 0 transposed."""
    rng = np.random.default_rng(7)
    d, hidden, n_in, steps, batch = (2 if direction == "bidirectional" else 1), 4, 3, 6, 3
    g = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    w = rng.normal(size=(d, g * hidden, n_in)).astype(np.float32) * 0.5
    r = rng.normal(size=(d, g * hidden, hidden)).astype(np.float32) * 0.5
    b = rng.normal(size=(d, 2 * g * hidden)).astype(np.float32) * 0.3
    h0 = rng.normal(size=(d, batch, hidden)).astype(np.float32)
    c0 = rng.normal(size=(d, batch, hidden)).astype(np.float32)
    p = rng.normal(size=(d, 3 * hidden)).astype(np.float32)
    lens = np.array([6, 2, 4], dtype=np.int32)
    x = rng.normal(size=(steps, batch, n_in)).astype(np.float32)
    attrs: dict[str, object] = {"hidden_size": hidden, "direction": direction}
    names = ["x", "W", "R", "B", "lens", "h0"]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"), (lens, "lens"), (h0, "h0"))]
    outs = ["Y", "Y_h"]
    if op == "LSTM" and variant == 0:
        names += ["c0", "P"]
        inits += [numpy_helper.from_array(c0, "c0"), numpy_helper.from_array(p, "P")]
        outs.append("Y_c")
    elif op == "LSTM":
        names += ["c0"]
        inits += [numpy_helper.from_array(c0, "c0")]
    if op == "GRU":
        attrs["linear_before_reset"] = variant
    if op == "RNN" and variant:
        attrs["activations"] = ["Relu"] * d
    node = helper.make_node(op, names, outs, **attrs)  # type: ignore[arg-type]
    model = _model([node], [_f("x")], outs, inits)
    _both(model, {"x": x}, outs)
    if variant:
        got = ReplayGraph(model).run({"x": torch.from_numpy(x)}, outs)
        inits_bm = [numpy_helper.from_array(numpy_helper.to_array(t).transpose(1, 0, 2).copy(), t.name)
                    if t.name in ("h0", "c0") else t for t in inits]
        batch_major = _model([helper.make_node(op, names, outs, layout=1, **attrs)],  # type: ignore[arg-type]
                             [_f("x")], outs, inits_bm)
        bm = ReplayGraph(batch_major).run({"x": torch.from_numpy(x.transpose(1, 0, 2).copy())}, outs)
        np.testing.assert_allclose(bm["Y"].permute(1, 2, 0, 3).numpy(), got["Y"].numpy(), atol=1e-6)
        np.testing.assert_allclose(bm["Y_h"].transpose(0, 1).numpy(), got["Y_h"].numpy(), atol=1e-6)


def test_shape_ops_equal_onnx_runtime() -> None:
    """Slice (negative steps, INT64_MAX ends), Gemm transposes, Split, Expand, Tile, Where, Range,
    reductions, Softmax, LayerNormalization, Clip, Pow, Gather with negative indices."""
    big = np.iinfo(np.int64).max
    c = [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in (
        ("s0", [-1, 0]), ("e0", [-big, big]), ("ax0", [1, 2]), ("st0", [-2, 1]),
        ("sp", [1, 3]), ("shape", [2, 1, 4]), ("reps", [1, 2, 1]), ("axes", [1]), ("idx", [-1, 0]),
        ("r0", 0), ("r1", 7), ("r2", 2))]
    c += [numpy_helper.from_array(np.ones(4, dtype=np.float32), "scale"),
          numpy_helper.from_array(np.full(4, 0.5, dtype=np.float32), "bias"),
          numpy_helper.from_array(np.array(-0.5, dtype=np.float32), "lo"),
          numpy_helper.from_array(np.array(0.7, dtype=np.float32), "hi"),
          numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")]
    nodes = [
        helper.make_node("Slice", ["x", "s0", "e0", "ax0", "st0"], ["sl"]),
        helper.make_node("Gemm", ["a", "bmat", "cvec"], ["gm"], transA=1, transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Split", ["x", "sp"], ["sp1", "sp2"], axis=2),
        helper.make_node("Expand", ["x1", "shape"], ["ex"]),
        helper.make_node("Tile", ["x", "reps"], ["ti"]),
        helper.make_node("Greater", ["x", "lo"], ["mask"]),
        helper.make_node("Where", ["mask", "x", "two"], ["wh"]),
        helper.make_node("Range", ["r0", "r1", "r2"], ["rg"]),
        helper.make_node("ReduceSum", ["x", "axes"], ["rs"], keepdims=0),
        helper.make_node("ReduceMax", ["x"], ["rm"], axes=[2], keepdims=1),
        helper.make_node("ReduceMean", ["x"], ["rmean"], axes=[0, 2], keepdims=0),
        helper.make_node("Softmax", ["x"], ["sm"], axis=1),
        helper.make_node("LogSoftmax", ["x"], ["lsm"]),
        helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["ln"], axis=-1, epsilon=1e-5),
        helper.make_node("Clip", ["x", "lo", "hi"], ["cl"]),
        helper.make_node("Pow", ["x", "two"], ["pw"]),
        helper.make_node("Gather", ["x", "idx"], ["ga"], axis=1),
        helper.make_node("Flatten", ["x"], ["fl"], axis=2),
        helper.make_node("Transpose", ["x"], ["tr"], perm=[2, 0, 1]),
    ]
    outs = ["sl", "gm", "sp1", "sp2", "ex", "ti", "wh", "rg", "rs", "rm", "rmean", "sm", "lsm", "ln", "cl", "pw",
            "ga", "fl", "tr"]
    model = _model(nodes, [_f("x", [2, 3, 4]), _f("x1", [1, 3, 1]), _f("a", [5, 2]), _f("bmat", [3, 5]),
                           _f("cvec", [3])], outs, c)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(2, 3, 4)).astype(np.float32), "x1": rng.normal(size=(1, 3, 1)).astype(np.float32),
             "a": rng.normal(size=(5, 2)).astype(np.float32), "bmat": rng.normal(size=(3, 5)).astype(np.float32),
             "cvec": rng.normal(size=3).astype(np.float32)}
    _both(model, feeds, outs)


def test_scan_and_if_equal_onnx_runtime() -> None:
    """Scan with a reverse input and a reverse output, and If on a computed condition."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]), helper.make_node("Tanh", ["s_out"], ["y_t"])],
        "body", [_f("s_in", [2]), _f("x_t", [2])], [_f("s_out", [2]), _f("y_t", [2])])
    scan = helper.make_node("Scan", ["s0", "xs"], ["s_final", "ys"], body=body, num_scan_inputs=1,
                            scan_input_directions=[1], scan_output_directions=[1])
    then_g = helper.make_graph([helper.make_node("Neg", ["s_final"], ["r_then"])], "then", [], [_f("r_then")])
    else_g = helper.make_graph([helper.make_node("Exp", ["s_final"], ["r_else"])], "else", [], [_f("r_else")])
    nodes = [scan, helper.make_node("ReduceSum", ["s_final"], ["tot"], keepdims=0),
             helper.make_node("Greater", ["tot", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["branch"], then_branch=then_g, else_branch=else_g)]
    model = _model(nodes, [_f("s0", [2]), _f("xs", [5, 2])], ["s_final", "ys", "branch"],
                   [numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")])
    rng = np.random.default_rng(1)
    for sign in (1.0, -1.0):
        feeds = {"s0": np.zeros(2, dtype=np.float32), "xs": sign * np.abs(rng.normal(size=(5, 2))).astype(np.float32)}
        _both(model, feeds, ["s_final", "ys", "branch"])


# --- safety rules at load and at run time -------------------------------------------------
def _loop_model(depth: int, trips: int) -> onnx.ModelProto:
    """``depth`` nested Loops of ``trips`` iterations each, adding 1 to a carried value."""
    def body(level: int) -> onnx.GraphProto:
        inner = [helper.make_node("Add", [f"v{level}", "one"], [f"w{level}"])] if level == depth else [
            helper.make_node("Loop", ["M", "", f"v{level}"], [f"w{level}"], body=body(level + 1))]
        return helper.make_graph(
            [helper.make_node("Identity", [f"c{level}"], [f"co{level}"]), *inner], f"body{level}",
            [_i(f"i{level}", []), helper.make_tensor_value_info(f"c{level}", TensorProto.BOOL, []),
             _f(f"v{level}", [1])],
            [helper.make_tensor_value_info(f"co{level}", TensorProto.BOOL, []), _f(f"w{level}", [1])])
    nodes = [helper.make_node("Loop", ["M", "", "v0in"], ["out"], body=body(1))]
    return _model(nodes, [_f("v0in", [1])], ["out"],
                  [numpy_helper.from_array(np.array(trips, dtype=np.int64), "M"),
                   numpy_helper.from_array(np.ones(1, dtype=np.float32), "one")])


def test_nested_loops_run_and_are_bounded() -> None:
    ok = ReplayGraph(_loop_model(2, 3))
    assert ok.run({"v0in": torch.zeros(1)})["out"].item() == 9.0  # 3 x 3 iterations
    bomb = ReplayGraph(_loop_model(2, 10_000), ReplayLimits(max_loop_iterations=1_000_000))
    with pytest.raises(ResourceExhausted, match="exceeds the replay's bound of 1000000 iterations"):
        bomb.run({"v0in": torch.zeros(1)})
    with pytest.raises(ModelConfigError, match="nest deeper than 2 levels"):
        ReplayGraph(_loop_model(3, 2), ReplayLimits(max_depth=2))


def test_load_rules_name_what_they_refuse() -> None:
    unknown = _model([helper.make_node("NonMaxSuppression", ["x", "x"], ["y"])], [_f("x")], ["y"])
    with pytest.raises(ModelConfigError, match=r"unsupported ONNX op 'NonMaxSuppression' \(node 0 .*supported: Abs"):
        ReplayGraph(unknown)
    custom_domain = _model([helper.make_node("Foo", ["x"], ["y"], domain="com.evil")], [_f("x")], ["y"])
    with pytest.raises(ModelConfigError, match="unsupported ONNX op 'com.evil.Foo'"):
        ReplayGraph(custom_domain)
    big = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_f("x")], ["y"],
                 [numpy_helper.from_array(np.zeros(1000, dtype=np.float32), "w")])
    with pytest.raises(ModelConfigError, match="exceed 1000 bytes"):
        ReplayGraph(big, ReplayLimits(max_initializer_bytes=1000))
    many = _model([helper.make_node("Neg", [f"x{i}"], [f"x{i + 1}"]) for i in range(50)], [_f("x0")], ["x50"])
    with pytest.raises(ModelConfigError, match="more than 20 nodes"):
        ReplayGraph(many, ReplayLimits(max_nodes=20))
    assert ReplayGraph(many).run({"x0": torch.ones(1)})["x50"].item() == 1.0


def test_sequence_and_index_ops_equal_onnx_runtime() -> None:
    """SplitToSequence/SequenceAt/SequenceLength/ConcatFromSequence, Mod (both signs), GatherElements,
    ScatterND, Einsum, CastLike, ArgMax, Size."""
    c = [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in (
        ("pos", -1), ("gidx", [[0, 2, 1], [1, 1, 0]]), ("sidx", [[0, 1], [1, 0]]), ("three", 3))]
    c.append(numpy_helper.from_array(np.array([9.0, 8.0], dtype=np.float32), "upd"))
    nodes = [
        helper.make_node("SplitToSequence", ["x"], ["seq"], axis=1, keepdims=0),
        helper.make_node("SequenceAt", ["seq", "pos"], ["last"]),
        helper.make_node("SequenceLength", ["seq"], ["n"]),
        helper.make_node("ConcatFromSequence", ["seq"], ["stacked"], axis=0, new_axis=1),
        helper.make_node("Mod", ["ints", "three"], ["mod"]),
        helper.make_node("Mod", ["x", "x2"], ["fmod"], fmod=1),
        helper.make_node("GatherElements", ["x", "gidx"], ["ge"], axis=1),
        helper.make_node("ScatterND", ["x", "sidx", "upd"], ["sn"]),
        helper.make_node("Einsum", ["x", "x"], ["es"], equation="ij,kj->ik"),
        helper.make_node("CastLike", ["ints", "x"], ["cl"]),
        helper.make_node("ArgMax", ["x"], ["am"], axis=1, keepdims=0),
        helper.make_node("Size", ["x"], ["sz"]),
    ]
    outs = ["last", "n", "stacked", "mod", "fmod", "ge", "sn", "es", "cl", "am", "sz"]
    model = _model(nodes, [_f("x", [2, 4]), _f("x2", [2, 4]), _i("ints", [5])], outs, c)
    rng = np.random.default_rng(3)
    feeds = {"x": rng.normal(size=(2, 4)).astype(np.float32),
             "x2": (rng.uniform(0.5, 2.0, size=(2, 4)) * rng.choice([-1, 1], size=(2, 4))).astype(np.float32),
             "ints": np.array([-7, -1, 0, 4, 11], dtype=np.int64)}
    _both(model, feeds, outs)
