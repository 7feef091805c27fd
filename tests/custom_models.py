"""User-side custom sequence models, exported as a user would (TorchScript exporter), for tests.

Each builder returns a ``Custom``: the EAGER user module (the oracle), the ``model.onnx`` bytes
and the ``graph:`` section naming its tensors. Exporting runs here, in the test, which plays
the user's environment; the server only ever sees the ONNX file.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import yaml
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn

VOCAB = ["<pad>", "<unk>", *"ACGTNRYKMSW"]


# --- the MyRNN, exactly as written (PyTorch's char-RNN tutorial cell) -------------
class MyRNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super(MyRNN, self).__init__()  # noqa: UP008 - the issue's cell, exactly as written

        self.hidden_size = hidden_size

        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.i2o = nn.Linear(input_size + hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, input, hidden):
        combined = torch.cat((input, hidden), 1)
        hidden = self.i2h(combined)
        output = self.i2o(combined)
        output = self.softmax(output)
        return output, hidden


class MyRNNSequence(nn.Module):
    """One-hot tokens (a Gather of an identity matrix) through MyRNN, masked by lengths; also
    returns the per-step hidden states [B,T,H]."""

    def __init__(self, vocab: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.cell = MyRNN(vocab, hidden, classes)
        self.hidden = hidden
        self.classes = classes
        self.register_buffer("onehot", torch.eye(vocab))

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = nn.functional.embedding(inputs, self.onehot)
        b = inputs.shape[0]
        h = torch.zeros(b, self.hidden)
        out = torch.zeros(b, self.classes)
        states = []
        for t in range(inputs.shape[1]):
            o, h_new = self.cell(x[:, t], h)
            m = (lengths > t).unsqueeze(1)
            h = torch.where(m, h_new, h)
            out = torch.where(m, o, out)
            states.append(h)
        return out, torch.stack(states, 1)


class PeepholeCell(nn.Module):
    """An LSTM cell with peephole connections, written by hand."""

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.x2g = nn.Linear(n_in, 4 * hidden)
        self.h2g = nn.Linear(hidden, 4 * hidden, bias=False)
        self.peep = nn.Parameter(torch.randn(3, hidden) * 0.3)
        self.hidden = hidden

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        g = self.x2g(x) + self.h2g(h)
        i, f, o, u = g.chunk(4, 1)
        i = torch.sigmoid(i + self.peep[0] * c)
        f = torch.sigmoid(f + self.peep[1] * c)
        c_new = f * c + i * torch.tanh(u)
        o = torch.sigmoid(o + self.peep[2] * c_new)
        return o * torch.tanh(c_new), c_new


class PeepholeForecaster(nn.Module):
    """Features [B,T,F] -> a peephole LSTM loop -> horizon outputs [B,H] from the last real state."""

    def __init__(self, n_in: int, hidden: int, horizon: int) -> None:
        super().__init__()
        self.cell = PeepholeCell(n_in, hidden)
        self.head = nn.Linear(hidden, horizon)
        self.hidden = hidden

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        b = inputs.shape[0]
        h = torch.zeros(b, self.hidden)
        c = torch.zeros(b, self.hidden)
        states = []
        for t in range(inputs.shape[1]):
            h_new, c_new = self.cell(inputs[:, t], h, c)
            m = (lengths > t).unsqueeze(1)
            h = torch.where(m, h_new, h)
            c = torch.where(m, c_new, c)
            states.append(torch.cat([h, c], 1))
        return self.head(h), torch.stack(states, 1)


class AttentionLSTM(nn.Module):
    """Token embedding -> nn.LSTM -> attention pooling masked by lengths -> classes."""

    def __init__(self, vocab: int, emb: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.score = nn.Linear(hidden, 1)
        self.out = nn.Linear(hidden, classes)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        y, _ = self.lstm(self.embedding(inputs))
        s = self.score(y).squeeze(2)
        t = torch.arange(inputs.shape[1]).unsqueeze(0)
        s = s.masked_fill(t >= lengths.unsqueeze(1), -1e9)
        w = torch.softmax(s, 1).unsqueeze(2)
        return self.out((w * y).sum(1))


class Tagger(nn.Module):
    """Per-step tagger: embedding -> nn.LSTM -> per-step classes, zero past each length."""

    def __init__(self, vocab: int, emb: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, classes)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        y, _ = self.lstm(self.embedding(inputs))
        t = torch.arange(inputs.shape[1]).unsqueeze(0)
        return self.out(y) * (t < lengths.unsqueeze(1)).unsqueeze(2).to(y.dtype)


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    t = torch.arange(x.shape[1]).unsqueeze(0)
    n = lengths.unsqueeze(1)
    idx = torch.where(t < n, n - 1 - t, t)
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class BiGRU(nn.Module):
    """Features -> bidirectional GRU (the backward direction reads each sequence reversed within
    its length) -> classes from [h_fwd(last), h_bwd(first)]. Exported by ``bigru_graph`` as ONE
    ONNX ``GRU`` op with direction=bidirectional and sequence_lens, built by hand."""

    def __init__(self, n_in: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.fwd = nn.GRU(n_in, hidden, batch_first=True)
        self.bwd = nn.GRU(n_in, hidden, batch_first=True)
        self.out = nn.Linear(2 * hidden, classes)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        yf, _ = self.fwd(inputs)
        last = yf.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, yf.shape[2])).squeeze(1)
        yb, _ = self.bwd(reverse_within_length(inputs, lengths))
        first = yb.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, yb.shape[2])).squeeze(1)
        return self.out(torch.cat([last, first], 1))


# --- export -----------------------------------------------------------------------------
@dataclass
class Custom:
    name: str
    module: nn.Module  # the eager user module; forward(inputs, lengths) -> output (or (output, states))
    onnx_bytes: bytes
    graph: dict[str, Any]
    task: str
    tokens: bool
    n_out: int
    num_features: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def eager(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        out = self.module(inputs, lengths)
        return out[0] if isinstance(out, tuple) else out

    def eager_from_attribution(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The eager module fed at the attribution point (embedding output or input)."""
        if not self.tokens:
            return self.eager(x, lengths)
        m = self.module
        if isinstance(m, MyRNNSequence):
            return _myrnn_from(m, x, lengths)
        ids = torch.zeros(x.shape[:2], dtype=torch.int64)
        emb = m.embedding  # type: ignore[union-attr]
        handle = emb.register_forward_hook(lambda mod, args, out: x)
        try:
            return self.eager(ids, lengths)
        finally:
            handle.remove()

    def write_version(self, folder: Path, *, max_length: int = 64, extra_yaml: dict[str, Any] | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.onnx").write_bytes(self.onnx_bytes)
        data: dict[str, Any] = {"task": self.task, "max_length": max_length,
                                "architecture": {"kind": "onnx"}, "graph": dict(self.graph)}
        if self.tokens:
            data["input"] = {"kind": "tokens", "tokenizer": "char", "lowercase": False}
            (folder / "vocab.txt").write_text("".join(t + "\n" for t in VOCAB), encoding="utf-8")
        else:
            data["input"] = {"kind": "features", "feature_names": [f"f{i}" for i in range(self.num_features)]}
        if self.task in ("classification", "tagging"):
            data["labels"] = [f"c{i}" for i in range(self.n_out)]
        else:
            data["horizon"] = self.n_out
        data.update(extra_yaml or {})
        (folder / "model.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return folder


def _myrnn_from(m: MyRNNSequence, x: Tensor, lengths: Tensor) -> Tensor:
    b = x.shape[0]
    h = torch.zeros(b, m.hidden)
    out = torch.zeros(b, m.classes)
    for t in range(x.shape[1]):
        o, h_new = m.cell(x[:, t], h)
        msk = (lengths > t).unsqueeze(1)
        h = torch.where(msk, h_new, h)
        out = torch.where(msk, o, out)
    return out


def _export(module: nn.Module, example: tuple[Tensor, Tensor], outputs: list[str], script: bool) -> bytes:
    buf = io.BytesIO()
    target = torch.jit.script(module) if script else module
    dyn = {"inputs": {0: "B", 1: "T"}, "lengths": {0: "B"}}
    for o in outputs:
        dyn[o] = {0: "B", 1: "T"} if o == "states" else {0: "B"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(target, example, buf, input_names=["inputs", "lengths"], output_names=outputs,
                          dynamic_axes=dyn, opset_version=17, dynamo=False)
    return buf.getvalue()


def _embedding_output(onnx_bytes: bytes) -> str:
    """The name of the Gather output that embeds the token input."""
    model = onnx.load_from_string(onnx_bytes)
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[1] in ("inputs",):
            return node.output[0]
    raise AssertionError("no embedding Gather on 'inputs'")


def _example(tokens: bool, n_features: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    if tokens:
        return torch.randint(0, len(VOCAB), (2, 5), generator=g), torch.tensor([5, 3])
    return torch.randn(2, 5, n_features, generator=g), torch.tensor([5, 3])


def make_myrnn(seed: int = 0, hidden: int = 8, classes: int = 3) -> Custom:
    torch.manual_seed(seed)
    m = MyRNNSequence(len(VOCAB), hidden, classes).eval()
    data = _export(m, _example(True), ["outputs", "states"], script=True)
    graph = {"inputs": "inputs", "lengths": "lengths", "output": "outputs",
             "attribute_at": _embedding_output(data), "causal": True,
             "states": [{"output": "states", "slices": {"hidden": [0, hidden]}}]}
    return Custom("myrnn", m, data, graph, "classification", True, classes)


def make_peephole(seed: int = 0, n_in: int = 3, hidden: int = 6, horizon: int = 2) -> Custom:
    torch.manual_seed(seed)
    m = PeepholeForecaster(n_in, hidden, horizon).eval()
    data = _export(m, _example(False, n_in), ["outputs", "states"], script=True)
    graph = {"inputs": "inputs", "lengths": "lengths", "output": "outputs", "attribute_at": "input",
             "causal": True,
             "states": [{"output": "states", "slices": {"hidden": [0, hidden], "cell": [hidden, 2 * hidden]}}]}
    return Custom("peephole", m, data, graph, "forecasting", False, horizon, num_features=n_in)


def make_attention(seed: int = 0, emb: int = 5, hidden: int = 6, classes: int = 3) -> Custom:
    torch.manual_seed(seed)
    m = AttentionLSTM(len(VOCAB), emb, hidden, classes).eval()
    data = _export(m, _example(True), ["outputs"], script=False)
    graph = {"inputs": "inputs", "lengths": "lengths", "output": "outputs",
             "attribute_at": _embedding_output(data)}
    return Custom("attention", m, data, graph, "classification", True, classes)


def make_tagger(seed: int = 0, emb: int = 5, hidden: int = 6, classes: int = 3) -> Custom:
    torch.manual_seed(seed)
    m = Tagger(len(VOCAB), emb, hidden, classes).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, _example(True), buf, input_names=["inputs", "lengths"], output_names=["outputs"],
                          dynamic_axes={"inputs": {0: "B", 1: "T"}, "lengths": {0: "B"},
                                        "outputs": {0: "B", 1: "T"}}, opset_version=17, dynamo=False)
    data = buf.getvalue()
    graph = {"inputs": "inputs", "lengths": "lengths", "output": "outputs",
             "attribute_at": _embedding_output(data), "causal": True}
    return Custom("tagger", m, data, graph, "tagging", True, classes)


def _onnx_gru_weights(gru: nn.GRU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch r,z,n rows -> ONNX z,r,h rows; B = [Wb | Rb]."""
    h = gru.hidden_size
    perm = np.r_[np.arange(h, 2 * h), np.arange(0, h), np.arange(2 * h, 3 * h)]
    w = gru.weight_ih_l0.detach().numpy()[perm]
    r = gru.weight_hh_l0.detach().numpy()[perm]
    b = np.r_[gru.bias_ih_l0.detach().numpy()[perm], gru.bias_hh_l0.detach().numpy()[perm]]
    return w, r, b


def bigru_graph(m: BiGRU, n_in: int) -> bytes:
    """The BiGRU as one bidirectional ONNX GRU (linear_before_reset=1, sequence_lens)."""
    hidden = m.fwd.hidden_size
    wf, rf, bf = _onnx_gru_weights(m.fwd)
    wb, rb, bb = _onnx_gru_weights(m.bwd)
    inits = [
        numpy_helper.from_array(np.stack([wf, wb]).astype(np.float32), "W"),
        numpy_helper.from_array(np.stack([rf, rb]).astype(np.float32), "R"),
        numpy_helper.from_array(np.stack([bf, bb]).astype(np.float32), "B"),
        numpy_helper.from_array(m.out.weight.detach().numpy().T.copy(), "Wout"),
        numpy_helper.from_array(m.out.bias.detach().numpy(), "Bout"),
        numpy_helper.from_array(np.array([1, 0, 2], dtype=np.int64), "perm_unused"),
        numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("Transpose", ["inputs"], ["x_tm"], perm=[1, 0, 2]),
        helper.make_node("Cast", ["lengths"], ["lens32"], to=TensorProto.INT32),
        helper.make_node("GRU", ["x_tm", "W", "R", "B", "lens32"], ["Y", "Y_h"], hidden_size=hidden,
                         direction="bidirectional", linear_before_reset=1),
        helper.make_node("Transpose", ["Y_h"], ["h_bd"], perm=[1, 0, 2]),  # [B,2,H]
        helper.make_node("Reshape", ["h_bd", "flat_shape"], ["feat"]),
        helper.make_node("MatMul", ["feat", "Wout"], ["logits"]),
        helper.make_node("Add", ["logits", "Bout"], ["outputs"]),
    ]
    graph = helper.make_graph(
        nodes, "bigru",
        [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, ["B", "T", n_in]),
         helper.make_tensor_value_info("lengths", TensorProto.INT64, ["B"])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["B", m.out.out_features])],
        inits[:5] + inits[6:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_bigru(seed: int = 0, n_in: int = 3, hidden: int = 5, classes: int = 3) -> Custom:
    torch.manual_seed(seed)
    m = BiGRU(n_in, hidden, classes).eval()
    graph = {"inputs": "inputs", "lengths": "lengths", "output": "outputs", "attribute_at": "input"}
    return Custom("bigru", m, bigru_graph(m, n_in), graph, "classification", False, classes, num_features=n_in)


MAKERS = {"myrnn": make_myrnn, "peephole": make_peephole, "attention": make_attention,
          "tagger": make_tagger, "bigru": make_bigru}


def mixed_batch(c: Custom, batch: int, t_max: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    lengths = rng.integers(1, t_max + 1, size=batch)
    lengths[0] = t_max
    if c.tokens:
        x = torch.from_numpy(rng.integers(0, len(VOCAB), size=(batch, t_max)).astype(np.int64))
    else:
        x = torch.from_numpy(rng.standard_normal((batch, t_max, c.num_features)).astype(np.float32))
    return x, torch.from_numpy(lengths.astype(np.int64))
