"""README claims that had no test: INTERNAL carries only the request id (a fault injected into a
running server), the request-id length cut, OIP ServerMetadata/ModelMetadata contents, the
relative_delta histogram's values, `seqlens check` exit status, `seqlens export` from files and
a failed export check that leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from seqlens import __version__
from seqlens.runtimes.torch import save_weights
from seqlens.schema import dump_config
from seqlens.tokenizers import Vocabulary
from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.inference import grpc_service_pb2_grpc as oip_grpc
from seqlens_client._proto.seqlens.v1 import explain_pb2, models_pb2, service_pb2_grpc, types_pb2

from tests.conftest import ServerThread
from tests.factories import VOCAB, export_tiny, tiny_model

TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("claims")
    export_tiny(root, "words", "1", seed=1)
    export_tiny(root, "words", "2", seed=2)
    export_tiny(root, "tagger", seed=3, tokens=False, task="tagging")
    export_tiny(root, "broken", seed=4)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(repo, poll_interval_s=0) as srv:
        yield srv


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def _explain(model: str, request_id: str = "", **method: object) -> explain_pb2.ExplainRequest:
    return explain_pb2.ExplainRequest(
        model_name=model, request_id=request_id, input=types_pb2.SequenceInput(text="a good film , not dull"),
        methods=[explain_pb2.AttributionMethod(**method)] if method else [])  # type: ignore[arg-type]


class _Fault(torch.nn.Module):
    """A head that fails with text the caller must never see."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("SECRET-FAULT-TEXT /etc/seqlens/internal-path")


def test_internal_errors_carry_only_the_request_id(server: ServerThread, channel: grpc.Channel) -> None:
    loaded = server.server.registry.get("broken")
    loaded.torch_module.head = _Fault()  # the fault: gradient work raises an unmapped exception
    stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Explain(_explain("broken", name="saliency"), timeout=TIMEOUT, metadata=[("x-request-id", "rid-42")])
    assert info.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert info.value.details() == "internal error (request id rid-42); the server log has the details"  # type: ignore[attr-defined]
    [answer] = list(stub.StreamExplain(iter([_explain("broken", "item-7", name="saliency")]), timeout=TIMEOUT))
    assert answer.request_id == "item-7" and answer.error.code == grpc.StatusCode.INTERNAL.value[0]
    assert answer.error.message == "internal error; the server log has the details"
    assert "SECRET" not in answer.error.message


def test_request_id_is_cut_to_128_characters_and_echoed(channel: grpc.Channel) -> None:
    stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
    rid = "r" * 100 + "x" * 200
    _, call = stub.ListModels.with_call(models_pb2.ListModelsRequest(), timeout=TIMEOUT,
                                        metadata=[("x-request-id", rid)])
    echoed = dict(call.trailing_metadata())["x-request-id"]
    assert echoed == rid[:128]


def test_oip_server_and_model_metadata(channel: grpc.Channel) -> None:
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    server = stub.ServerMetadata(oip.ServerMetadataRequest(), timeout=TIMEOUT)
    assert (server.name, server.version, list(server.extensions)) == ("seqlens", __version__, ["model_repository"])
    words = stub.ModelMetadata(oip.ModelMetadataRequest(name="words"), timeout=TIMEOUT)
    assert words.name == "words" and sorted(words.versions) == ["1", "2"] and words.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in words.inputs] == [
        ("inputs", "INT64", [-1, -1]), ("lengths", "INT64", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in words.outputs] == [("outputs", "FP32", [-1, 3])]
    pinned = stub.ModelMetadata(oip.ModelMetadataRequest(name="words", version="1"), timeout=TIMEOUT)
    assert pinned.name == "words"
    tagger = stub.ModelMetadata(oip.ModelMetadataRequest(name="tagger"), timeout=TIMEOUT)
    assert (tagger.inputs[0].name, tagger.inputs[0].datatype, list(tagger.inputs[0].shape)) == (
        "inputs", "FP32", [-1, -1, 3])
    assert [list(t.shape) for t in tagger.outputs] == [[-1, -1, 3]]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelMetadata(oip.ModelMetadataRequest(name="words", version="9"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_relative_delta_histogram_observes_the_answer(server: ServerThread, channel: grpc.Channel) -> None:
    """|delta| / |f(x) - f(baseline)|, computed here from the answer's own fields."""
    registry = server.server.metrics.registry
    labels = {"model": "words", "method": "integrated_gradients"}
    before = registry.get_sample_value("seqlens_attribution_relative_delta_sum", labels) or 0.0
    count = registry.get_sample_value("seqlens_attribution_relative_delta_count", labels) or 0.0
    stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
    [att] = stub.Explain(_explain("words", name="integrated_gradients", n_steps=4), timeout=TIMEOUT).attributions
    expected = abs(att.convergence_delta) / abs(att.target_at_input - att.target_at_baseline)
    assert registry.get_sample_value("seqlens_attribution_relative_delta_count", labels) == count + 1
    observed = registry.get_sample_value("seqlens_attribution_relative_delta_sum", labels) - before
    assert observed == pytest.approx(expected, rel=1e-4, abs=1e-9)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'service'}:{ROOT / 'clients' / 'python'}"}
    return subprocess.run([sys.executable, "-m", "seqlens.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, check=False)


def test_seqlens_check_exit_status(tmp_path: Path) -> None:
    export_tiny(tmp_path / "good", "m", seed=1)
    ok = _cli("check", str(tmp_path / "good"))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "READY" in ok.stdout
    export_tiny(tmp_path / "bad", "m", seed=1)
    (tmp_path / "bad" / "m" / "1" / "model.onnx").write_bytes(b"not onnx")
    bad = _cli("check", str(tmp_path / "bad"))
    assert bad.returncode != 0
    assert "model.onnx is not a valid ONNX model" in bad.stdout + bad.stderr


def test_seqlens_export_from_files_and_a_failed_check_leaves_nothing(tmp_path: Path) -> None:
    module = tiny_model(seed=5)
    (tmp_path / "model.yaml").write_text(dump_config(module.config), encoding="utf-8")
    save_weights(module, tmp_path / "weights.safetensors")
    Vocabulary(VOCAB).save(tmp_path / "vocab.txt")
    out = tmp_path / "repo" / "m" / "1"
    done = _cli("export", "--config", str(tmp_path / "model.yaml"), "--weights", str(tmp_path / "weights.safetensors"),
                "--vocab", str(tmp_path / "vocab.txt"), "--output", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"model.yaml", "model.onnx", "weights.safetensors", "vocab.json"} <= {p.name for p in out.iterdir()}
    ok = _cli("check", str(tmp_path / "repo"))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    with torch.no_grad():
        module.head.weight[0, 0] = float("nan")  # the check before publishing refuses it
    save_weights(module, tmp_path / "weights.safetensors")
    failed = _cli("export", "--config", str(tmp_path / "model.yaml"), "--weights",
                  str(tmp_path / "weights.safetensors"), "--vocab", str(tmp_path / "vocab.txt"),
                  "--output", str(tmp_path / "repo" / "m" / "2"))
    assert failed.returncode != 0
    assert sorted(p.name for p in (tmp_path / "repo" / "m").iterdir()) == ["1"]  # no version 2, no temp folder
