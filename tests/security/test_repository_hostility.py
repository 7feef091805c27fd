"""A hostile model repository: every bad version is refused at load with a precise reason
(FAILED in GetModel), the other versions keep serving, and nothing in the repository runs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from seqlens.registry import ModelRegistry, VersionState
from seqlens.repository import ModelRepository
from seqlens.versions import load_version
from seqlens_client._proto.seqlens.v1 import models_pb2, predict_pb2, service_pb2_grpc, types_pb2

from tests.conftest import ServerThread
from tests.factories import VOCAB, export_tiny

Mutation = Callable[[Path, Path], object]  # (version folder, a scratch folder outside the repository)


def _edit_yaml(version: Path, change: Callable[[dict], None]) -> None:  # type: ignore[type-arg]
    data = yaml.safe_load((version / "model.yaml").read_text())
    change(data)
    (version / "model.yaml").write_text(yaml.safe_dump(data))


def _edit_weights(version: Path, change: Callable[[dict[str, torch.Tensor]], object]) -> None:
    tensors = load_file(str(version / "weights.safetensors"))
    change(tensors)
    save_file(tensors, str(version / "weights.safetensors"))


def _edit_onnx(version: Path, change: Callable[[onnx.ModelProto], None]) -> None:
    model = onnx.load(str(version / "model.onnx"))
    change(model)
    (version / "model.onnx").write_bytes(model.SerializeToString())


def _external_initializer(model: onnx.ModelProto) -> None:
    init = model.graph.initializer[0]
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    init.external_data.add(key="location", value="../../../../../../etc/passwd")


def _external_in_subgraph(model: onnx.ModelProto) -> None:
    """An external tensor inside an If branch: found however deep it hides."""
    branch = onnx.helper.make_graph(
        [onnx.helper.make_node("Constant", [], ["c"], value=onnx.helper.make_tensor("c", onnx.TensorProto.FLOAT,
                                                                                    [1], [0.0]))],
        "branch", [], [onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [1])])
    tensor = branch.node[0].attribute[0].t
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="/etc/shadow")
    cond = onnx.helper.make_tensor("cond", onnx.TensorProto.BOOL, [], [True])
    model.graph.initializer.append(cond)
    model.graph.node.append(onnx.helper.make_node("If", ["cond"], ["unused"], then_branch=branch,
                                                  else_branch=branch))


def _custom_op(model: onnx.ModelProto) -> None:
    node = model.graph.node[-1]
    model.graph.node.append(onnx.helper.make_node("Exec", [node.output[0]], ["evil"], domain="com.evil"))
    model.opset_import.append(onnx.helper.make_opsetid("com.evil", 1))


def _symlink_out(name: str) -> Mutation:
    def mutate(version: Path, outside: Path) -> None:
        target = outside / f"outside-{name}"
        shutil.copy(version / name, target)  # a valid file: only its place is wrong
        (version / name).unlink()
        os.symlink(target, version / name)
    return mutate


class _Evil:
    """A pickle that would create a marker file if anything unpickled it."""

    marker = Path("/nonexistent")

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _pickle_weights(version: Path, outside: Path) -> None:
    _Evil.marker = outside / "pickle-ran"
    (version / "weights.safetensors").write_bytes(pickle.dumps(_Evil()))


def _yaml_tag(version: Path, outside: Path) -> None:
    text = (version / "model.yaml").read_text()
    marker = outside / "yaml-ran"
    (version / "model.yaml").write_text(f"evil: !!python/object/apply:os.system ['touch {marker}']\n" + text)


def _huge_architecture(version: Path, outside: Path) -> None:
    """~1.6e9 parameters (6 GB) asked for by a 400-byte config, with the tiny weights file."""
    _edit_yaml(version, lambda d: d["architecture"].update(hidden_size=4096, num_layers=8, embedding_dim=4096,
                                                          bidirectional=True))
    _edit_yaml(version, lambda d: d.update(training_mean=[0.0] * 4096))


def _other_onnx(version: Path, outside: Path) -> None:
    """A valid graph of another model (different weights): parity catches it."""
    other = export_tiny(outside / "other-repo", "x", seed=99)
    shutil.copy(other / "model.onnx", version / "model.onnx")


# case -> (mutation, text the FAILED reason must contain)
CASES: dict[str, tuple[Mutation, str]] = {
    "truncated onnx": (lambda v, o: (v / "model.onnx").write_bytes((v / "model.onnx").read_bytes()[:300]),
                       "model.onnx is not a valid ONNX model"),
    "empty onnx": (lambda v, o: (v / "model.onnx").write_bytes(b""), "model.onnx"),
    "garbage onnx": (lambda v, o: (v / "model.onnx").write_bytes(np.random.default_rng(0).bytes(4096)),
                     "model.onnx is not a valid ONNX model"),
    "onnx of another model": (_other_onnx, "parity check failed"),
    "onnx external initializer": (lambda v, o: _edit_onnx(v, _external_initializer), "external data"),
    "onnx external in subgraph": (lambda v, o: _edit_onnx(v, _external_in_subgraph), "external data"),
    "onnx custom op": (lambda v, o: _edit_onnx(v, _custom_op), "model.onnx"),
    "onnx wrong input names": (lambda v, o: _edit_onnx(v, lambda m: setattr(m.graph.input[0], "name", "x")),
                               "model.onnx"),
    "onnx missing": (lambda v, o: (v / "model.onnx").unlink(), "missing model.onnx"),
    "weights wrong shape": (lambda v, o: _edit_weights(v, lambda t: t.update(
        {"head.weight": torch.zeros(4, 6)})), "tensor 'head.weight' is F32 (4, 6), model.yaml needs F32 (3, 6)"),
    "weights wrong dtype": (lambda v, o: _edit_weights(v, lambda t: t.update(
        {"head.bias": t["head.bias"].double()})), "tensor 'head.bias' is F64"),
    "weights missing tensor": (lambda v, o: _edit_weights(v, lambda t: t.pop("head.bias")), "missing ['head.bias']"),
    "weights extra tensor": (lambda v, o: _edit_weights(v, lambda t: t.update({"extra": torch.zeros(1)})),
                             "unexpected ['extra']"),
    "weights nan": (lambda v, o: _edit_weights(v, lambda t: t["head.bias"].fill_(float("nan"))), "NaN or inf"),
    "weights garbage": (lambda v, o: (v / "weights.safetensors").write_bytes(b"\xff" * 64), "cannot read"),
    "weights truncated": (lambda v, o: (v / "weights.safetensors").write_bytes(
        (v / "weights.safetensors").read_bytes()[:-8]), "cannot read"),
    "weights are a pickle": (_pickle_weights, "cannot read"),
    "config unknown cell": (lambda v, o: _edit_yaml(v, lambda d: d["architecture"].update(cell="transformer")),
                            "architecture.cell"),
    "config unknown field": (lambda v, o: _edit_yaml(v, lambda d: d.update(plugin="evil.py")), "plugin"),
    "config head for another task": (lambda v, o: _edit_yaml(v, lambda d: d.update(task="forecasting",
                                                                                  horizon=3)), "head"),
    "config hidden too big": (lambda v, o: _edit_yaml(v, lambda d: d["architecture"].update(hidden_size=10**6)),
                              "architecture.hidden_size"),
    "config huge architecture": (_huge_architecture, "does not match model.yaml"),
    "config vocabulary path": (lambda v, o: _edit_yaml(v, lambda d: d["input"].update(vocabulary="../../x")),
                               "input.tokens.vocabulary"),
    "config pad beyond vocab": (lambda v, o: _edit_yaml(v, lambda d: d["input"].update(pad_id=10**6)),
                                "input.pad_id is outside"),
    "config yaml python tag": (_yaml_tag, "not valid YAML"),
    "config not a mapping": (lambda v, o: (v / "model.yaml").write_text("- a\n- b\n"), "expected a mapping"),
    "config binary": (lambda v, o: (v / "model.yaml").write_bytes(b"\xff\xfe\x00task"), "not UTF-8"),
    "config too large": (lambda v, o: (v / "model.yaml").write_text("#" * (2 << 20)), "at most 1048576"),
    "vocab extra tokens": (lambda v, o: (v / "vocab.json").write_text(
        json.dumps([*json.loads((v / "vocab.json").read_text()), "more"])), "embedding.weight"),
    "vocab binary": (lambda v, o: (v / "vocab.json").write_bytes(b"\xff\xfe\xfd\n" * 20), "vocab.json is not UTF-8"),
    "vocab duplicate": (lambda v, o: (v / "vocab.json").write_text(
        json.dumps([*json.loads((v / "vocab.json").read_text())[:-1], "the"])), 'token "the" appears twice'),
    "vocab nesting bomb": (lambda v, o: (v / "vocab.json").write_text("[" * 500_000), "vocab.json: not valid JSON"),
    "vocab not a list": (lambda v, o: (v / "vocab.json").write_text('{"a": "b"}'), "integer ids"),
    "symlinked config out": (_symlink_out("model.yaml"), "model.yaml is a link to a file outside"),
    "symlinked weights out": (_symlink_out("weights.safetensors"), "weights.safetensors is a link"),
    "symlinked onnx out": (_symlink_out("model.onnx"), "model.onnx is a link"),
    "symlinked vocab out": (_symlink_out("vocab.json"), "vocab.json is a link"),
    "legacy vocab.txt named": (lambda v, o: _legacy_vocab(v, name_it=True), "missing vocab.json"),
}


def _legacy_vocab(version: Path, *, name_it: bool) -> None:
    """The pre-vocab.json layout: vocab.txt, one token a line; the config names it or not."""
    tokens = json.loads((version / "vocab.json").read_text())
    (version / "vocab.json").unlink()
    (version / "vocab.txt").write_text("".join(t + "\n" for t in tokens))
    _edit_yaml(version, lambda d: d["input"].update(vocabulary="vocab.json") if name_it else d["input"].pop("vocabulary"))


def test_legacy_vocab_txt_still_loads(tmp_path: Path) -> None:
    """A config that names no vocabulary, over a folder holding only vocab.txt, reads it."""
    version = export_tiny(tmp_path, "old", seed=4)
    _legacy_vocab(version, name_it=False)
    loaded = load_version(version, "old", "1")
    assert loaded.tokenizer is not None and loaded.tokenizer.vocab_size == len(VOCAB)
    assert [t.id for t in loaded.tokenizer.encode("the good film")] == [VOCAB.index(w) for w in ("the", "good", "film")]


def _model_name(case: str) -> str:
    return case.replace(" ", "-")


@pytest.fixture(scope="module")
def hostile_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``good/1``, ``mixed/1`` (good) + ``mixed/2`` (truncated ONNX), and ``<case>/1`` per case."""
    root, outside = tmp_path_factory.mktemp("repo"), tmp_path_factory.mktemp("outside")
    template = export_tiny(root, "good", seed=4)
    export_tiny(root, "mixed", version="1", seed=5)
    shutil.copytree(template, root / "mixed" / "2")
    CASES["truncated onnx"][0](root / "mixed" / "2", outside)
    for case, (mutate, _) in CASES.items():
        version = root / _model_name(case) / "1"
        shutil.copytree(template, version)
        mutate(version, outside)
    # A whole version folder linked from outside is not even listed.
    shutil.copytree(template, outside / "linked-version")
    os.symlink(outside / "linked-version", root / "good" / "2")
    return root, outside


def test_every_hostile_version_fails_with_its_reason(hostile_repo: tuple[Path, Path]) -> None:
    root, outside = hostile_repo
    registry = ModelRegistry(ModelRepository(root))
    start = time.thread_time()  # this thread's CPU time (loading runs here): other processes do not bend it
    registry.refresh()
    cpu = time.thread_time() - start
    records = {(r.name, r.version): r for r in registry.records()}
    assert ("good", "2") not in records  # symlinked version folder: skipped
    assert records[("good", "1")].state == VersionState.READY
    for case, (_, reason) in CASES.items():
        rec = records[(_model_name(case), "1")]
        assert rec.state == VersionState.FAILED, case
        assert reason in rec.reason, f"{case}: {rec.reason}"
        assert not rec.reason.split(":")[0].endswith(("Error", "Exception")), f"{case}: imprecise {rec.reason}"
        assert str(outside) not in rec.reason, f"{case}: reason leaks a path outside the repository"
    assert not (outside / "yaml-ran").exists() and not (outside / "pickle-ran").exists()
    assert cpu < 30, f"loading the hostile repository took {cpu:.1f}s of CPU"


def test_huge_architecture_is_refused_before_allocating(hostile_repo: tuple[Path, Path]) -> None:
    import resource

    from seqlens.errors import ModelConfigError
    from seqlens.versions import load_version

    version = hostile_repo[0] / _model_name("config huge architecture") / "1"
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelConfigError, match="does not match model.yaml"):
        load_version(version, "huge", "1")
    # the process's peak memory barely moved: 6 GB of weights were never allocated
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kib < 512 * 1024


@pytest.fixture(scope="module")
def server(hostile_repo: tuple[Path, Path]) -> Iterator[ServerThread]:
    with ServerThread(hostile_repo[0], poll_interval_s=0) as srv:
        yield srv


def test_get_model_shows_failed_versions_and_the_rest_keeps_serving(server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        for case, (_, reason) in CASES.items():
            info = stub.GetModel(models_pb2.GetModelRequest(name=_model_name(case)), timeout=10)
            assert [(v.state, reason in v.reason) for v in info.versions] == [(models_pb2.VERSION_STATE_FAILED, True)], case
        mixed = stub.GetModel(models_pb2.GetModelRequest(name="mixed"), timeout=10)
        assert [v.state for v in mixed.versions] == [models_pb2.VERSION_STATE_READY, models_pb2.VERSION_STATE_FAILED]
        assert mixed.default_version == "1"
        text = [types_pb2.SequenceInput(text="a good film")]
        assert stub.Predict(predict_pb2.PredictRequest(model_name="mixed", inputs=text),
                            timeout=10).model_version == "1"
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(predict_pb2.PredictRequest(model_name="mixed", model_version="2", inputs=text), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "version '2' is FAILED: model.onnx is not a valid ONNX model" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(predict_pb2.PredictRequest(model_name="weights-nan", inputs=text), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "NaN or inf" in info.value.details()
        assert stub.Predict(predict_pb2.PredictRequest(model_name="good", inputs=text), timeout=10).predictions
