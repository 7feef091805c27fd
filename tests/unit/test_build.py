"""seqlens.build_version / seqlens build: user modules -> verified kind: onnx versions.

Oracles: the user's own module run eagerly on each sequence alone (a Python loop over the cell),
and in-process ONNX Runtime on the written model.onnx.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from safetensors.torch import save_file
from seqlens import build_version, load_model
from seqlens.build import BuildError
from seqlens.cli import main as cli_main
from seqlens.schema import FeatureInput, TokenInput
from seqlens_client import Client
from torch import Tensor, nn

DNA = ["<pad>", "<unk>", "A", "C", "G", "T"]
LABELS = ["EI", "IE", "N"]

MYRNN_SOURCE = '''
import torch
import torch.nn as nn


class MyRNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
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
    def initHidden(self):
        return torch.zeros(1, self.hidden_size)
'''


def _myrnn_class(tmp_path: Path) -> type[nn.Module]:
    """The seed's MyRNN, exactly as written, imported from a user file (as the CLI does)."""
    from seqlens.build.cli import load_user_module

    path = tmp_path / "user_model.py"
    path.write_text(MYRNN_SOURCE, encoding="utf-8")
    return type(load_user_module(f"{path}:MyRNN", {"input_size": 1, "hidden_size": 1, "output_size": 2}))


def _eager_myrnn(cell: nn.Module, ids: list[int]) -> np.ndarray:
    eye = torch.eye(len(DNA))
    hidden = cell.initHidden()
    with torch.no_grad():
        for i in ids:
            out, hidden = cell(eye[i][None], hidden)
    return out[0].numpy()


def _build_myrnn(tmp_path: Path, seed: int = 0, **kwargs: Any) -> tuple[nn.Module, Any]:
    torch.manual_seed(seed)
    cell = _myrnn_class(tmp_path)(len(DNA), 8, len(LABELS))
    report = build_version(cell, tmp_path / "repo", "splice", task="classification",
                           input=TokenInput(tokenizer="char", lowercase=False), max_length=40,
                           labels=LABELS, vocabulary=DNA, **kwargs)
    return cell, report


def test_myrnn_as_written_builds_and_loads(tmp_path: Path) -> None:
    cell, report = _build_myrnn(tmp_path)
    folder = tmp_path / "repo" / "splice" / "1"
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.yaml", "vocab.json"]
    assert len(report.onnx_vs_eager) >= 3 and report.export_length not in report.onnx_vs_eager
    assert max(report.onnx_vs_eager.values()) <= 1e-4 and max(report.replay_vs_eager.values()) <= 1e-4

    model = onnx.load(str(folder / "model.onnx"))
    assert model.opset_import[0].version >= 17
    assert any(n.op_type == "Loop" for n in model.graph.node)
    # One-hot letters: the Gather of an identity matrix by the ids, named as the attribution point.
    [gather] = [n for n in model.graph.node if "embedded" in n.output]
    assert gather.op_type == "Gather"
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
              if n.op_type == "Constant"}
    np.testing.assert_array_equal({**inits, **consts}[gather.input[0]], np.eye(len(DNA), dtype=np.float32))

    loaded = load_model(tmp_path / "repo", "splice")
    seqs = [[2, 3, 4, 5, 2, 2, 3], [5, 4], [3] * 23]
    lengths = np.array([len(s) for s in seqs])
    padded = np.zeros((3, 23), dtype=np.int64)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    got = loaded.onnx.run(padded, lengths)
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(got[i], _eager_myrnn(cell, s), atol=1e-5)
    with torch.no_grad():
        replay = loaded.torch_module(torch.from_numpy(padded), torch.from_numpy(lengths)).numpy()
    np.testing.assert_allclose(replay, got, atol=1e-5)


def test_myrnn_serves_over_grpc(tmp_path: Path, start_server: Any) -> None:
    cell, _ = _build_myrnn(tmp_path)
    server = start_server(tmp_path / "repo")
    with Client(server.target, timeout=60) as client:
        [pred] = client.predict("splice", "ACGTTGCA")
    ids = [DNA.index(c) for c in "ACGTTGCA"]
    np.testing.assert_allclose(pred.scores, _eager_myrnn(cell, ids), atol=1e-4)  # log-probabilities
    assert pred.label == LABELS[int(np.argmax(pred.scores))]


def test_overwrite_is_refused_unless_asked(tmp_path: Path) -> None:
    _build_myrnn(tmp_path)
    before = (tmp_path / "repo" / "splice" / "1" / "model.onnx").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        _build_myrnn(tmp_path)
    assert (tmp_path / "repo" / "splice" / "1" / "model.onnx").read_bytes() == before
    _build_myrnn(tmp_path, seed=1, overwrite=True)
    assert (tmp_path / "repo" / "splice" / "1" / "model.onnx").read_bytes() != before
    assert [p.name for p in (tmp_path / "repo" / "splice").iterdir()] == ["1"]  # no temp folder left


class PeepholeCell(nn.Module):
    """A hand-written peephole LSTM cell: tuple state (h, c); its output is h."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Linear(n_in + hidden, 4 * hidden)
        self.peep = nn.Parameter(torch.randn(3, hidden) * 0.1)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = state
        i, f, g, o = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f + self.peep[1] * c) * c + torch.sigmoid(i + self.peep[0] * c) * torch.tanh(g)
        h = torch.sigmoid(o + self.peep[2] * c) * torch.tanh(c)
        return self.out(h), (h, c)


def test_tuple_state_tagger_over_features(tmp_path: Path) -> None:
    torch.manual_seed(2)
    cell = PeepholeCell(3, 5, 4)
    init = (torch.zeros(1, 5), torch.zeros(1, 5))
    report = build_version(cell, tmp_path, "tagger", task="tagging", input=FeatureInput(feature_names=["a", "b", "c"]),
                           max_length=30, labels=["w", "x", "y", "z"], initial_state=init)
    assert max(report.onnx_vs_eager.values()) <= 1e-4
    manifest = yaml.safe_load((tmp_path / "tagger" / "1" / "model.yaml").read_text())
    assert manifest["architecture"] == {"kind": "onnx"}
    assert manifest["graph"]["attribute_at"] == "input" and manifest["graph"]["causal"] is True
    assert manifest["graph"]["states"] == [{"output": "states", "slices": {"hidden": [0, 5], "cell": [5, 10]}}]
    session = ort.InferenceSession(str(tmp_path / "tagger" / "1" / "model.onnx"))
    x = np.random.default_rng(0).standard_normal((2, 13, 3)).astype(np.float32)
    out, states = session.run(None, {"inputs": x, "lengths": np.array([13, 6])})
    assert out.shape == (2, 13, 4) and states.shape == (2, 13, 10)
    h, c = init
    with torch.no_grad():
        for t in range(6):
            o, (h, c) = cell(torch.from_numpy(x[1:2, t]), (h, c))
            np.testing.assert_allclose(out[1, t], o[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(states[1, t], torch.cat([h, c], 1)[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(states[1, 6:], np.broadcast_to(states[1, 5], (7, 10)), atol=0)  # frozen


class EmbeddedTanhCell(nn.Module):
    """A cell fed through the user's own nn.Embedding (not one-hot)."""

    def __init__(self, vocab: int, fused: bool = False) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, 4)
        self.step = nn.GRUCell(4, 6) if fused else nn.Linear(4 + 6, 6)
        self.fused = fused
        self.out = nn.Linear(6, 3)

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = self.step(x, h) if self.fused else torch.tanh(self.step(torch.cat([x, h], 1)))
        return self.out(h), h


def test_cell_through_a_user_embedding(tmp_path: Path) -> None:
    torch.manual_seed(6)
    cell = EmbeddedTanhCell(len(DNA))
    build_version(cell, tmp_path, "emb", task="classification", input=TokenInput(tokenizer="char"),
                  max_length=30, labels=LABELS, vocabulary=DNA, embedding=cell.embedding,
                  initial_state=torch.zeros(1, 6))
    model = onnx.load(str(tmp_path / "emb" / "1" / "model.onnx"))
    [gather] = [n for n in model.graph.node if "embedded" in n.output]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    np.testing.assert_allclose(inits[gather.input[0]], cell.embedding.weight.detach().numpy())
    loaded = load_model(tmp_path, "emb")
    ids = [2, 5, 5, 3, 4]
    h = torch.zeros(1, 6)
    with torch.no_grad():
        for i in ids:
            out, h = cell(cell.embedding(torch.tensor([i])), h)
    np.testing.assert_allclose(loaded.onnx.run(np.array([ids + [0, 0]]), np.array([5]))[0], out[0].numpy(),
                               atol=1e-5)


def test_fused_cell_is_refused_with_the_way_out(tmp_path: Path) -> None:
    cell = EmbeddedTanhCell(len(DNA), fused=True)
    with pytest.raises(BuildError, match=r"ONNX export failed: .*write the gates with nn.Linear"):
        build_version(cell, tmp_path, "fused", task="classification", input=TokenInput(tokenizer="char"),
                      max_length=30, labels=LABELS, vocabulary=DNA, embedding=cell.embedding,
                      initial_state=torch.zeros(1, 6))
    assert not (tmp_path / "fused").exists()


class AttentionOverLSTM(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, 6)
        self.lstm = nn.LSTM(6, 8, batch_first=True)
        self.score = nn.Linear(8, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        h, _ = self.lstm(self.embedding(inputs))
        real = torch.arange(inputs.shape[1])[None, :] < lengths[:, None]
        w = torch.softmax(self.score(h).squeeze(-1).masked_fill(~real, -1e9), dim=1)
        return self.head((w.unsqueeze(-1) * h).sum(1))


def test_sequence_module_builds(tmp_path: Path) -> None:
    torch.manual_seed(3)
    module = AttentionOverLSTM(len(DNA))
    report = build_version(module, tmp_path, "attn", protocol="sequence", task="classification",
                           input=TokenInput(tokenizer="char", lowercase=False), max_length=50,
                           labels=["a", "b"], vocabulary=DNA)
    assert max(report.onnx_vs_eager.values()) <= 1e-4 and max(report.replay_vs_eager.values()) <= 1e-4
    loaded = load_model(tmp_path, "attn")
    ids = np.array([[2, 3, 4, 5, 5, 4, 0, 0], [5, 5, 5, 2, 3, 3, 2, 4]])
    with torch.no_grad():
        want = module(torch.from_numpy(ids[:1, :6]), torch.tensor([6]))[0].numpy()
    np.testing.assert_allclose(loaded.onnx.run(ids, np.array([6, 8]))[0], want, atol=1e-5)


class PythonLoopRNN(nn.Module):
    """A sequence module with a Python loop over time: tracing it unrolls T at the export length."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.RNNCell(3, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        h = torch.zeros(inputs.shape[0], 6)
        for t in range(inputs.shape[1]):
            h = torch.where((lengths > t)[:, None], self.cell(inputs[:, t], h), h)
        return self.head(h)


def test_traced_python_loop_is_refused(tmp_path: Path) -> None:
    """The silent-freeze case: the graph declares T symbolic but ran T=export length only."""
    torch.manual_seed(4)
    with pytest.raises(BuildError) as refused:
        build_version(PythonLoopRNN(), tmp_path, "frozen", protocol="sequence", task="classification",
                      input=FeatureInput(feature_names=["a", "b", "c"]), max_length=20, labels=["x", "y"])
    message = str(refused.value)
    assert message.startswith("check 'ONNX Runtime = eager' failed: max |ORT - eager| = ")
    assert "exported at length 7" in message and "froze the time axis" in message
    # Above the export length ORT runs without error and answers wrong: the silent case, measured.
    diff_at_10 = float(re.search(r"T=10: \|ORT - eager\| = ([0-9.e+-]+)", message).group(1))  # type: ignore[union-attr]
    assert diff_at_10 > 1e-3
    assert not (tmp_path / "frozen").exists() or not any((tmp_path / "frozen").iterdir())


class MeanOverPadding(nn.Module):
    """Averages over every step, padding included: its answer for a row depends on the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        return self.lin(inputs.mean(dim=1))


def test_padding_leak_is_refused_with_the_difference(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"max \|ORT - eager\| = [0-9.e-]+ > 0.0001 on padded batches of mixed lengths"):
        build_version(MeanOverPadding(), tmp_path, "leak", protocol="sequence", task="classification",
                      input=FeatureInput(feature_names=["a", "b", "c"]), max_length=20, labels=["x", "y"])


def test_cli_build_from_a_user_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cls = _myrnn_class(tmp_path)
    torch.manual_seed(5)
    save_file(cls(len(DNA), 8, 3).state_dict(), str(tmp_path / "w.safetensors"))
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in DNA), encoding="utf-8")
    args = ["build", "--module", f"{tmp_path / 'user_model.py'}:MyRNN",
            "--module-args", json.dumps({"input_size": 6, "hidden_size": 8, "output_size": 3}),
            "--weights", str(tmp_path / "w.safetensors"), "--task", "classification", "--labels", "EI,IE,N",
            "--max-length", "60", "--vocab", str(tmp_path / "vocab.txt"), "--tokenizer", "char",
            "--output", str(tmp_path / "repo" / "splice" / "3")]
    assert cli_main(args) == 0
    assert "ONNX Runtime vs eager" in capsys.readouterr().out
    assert load_model(tmp_path / "repo", "splice").version == "3"
    assert cli_main(args) == 2
    assert "exists" in capsys.readouterr().err
