"""Hostile custom graphs (``architecture.kind: onnx``): each version is FAILED with the rule it
breaks named, nothing crashes, and a good custom model in the same repository keeps serving."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from seqlens_client import Client

from tests.conftest import ServerThread
from tests.custom_models import Custom, make_bigru

MAX_INITIALIZER_BYTES = 64_000  # the good model holds ~1 KB


def _graft(c: Custom, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto] | None = None) -> bytes:
    """The good graph with its output renamed 'raw' and ``nodes`` computing 'outputs' from it."""
    model = onnx.load_from_string(c.onnx_bytes)
    for node in model.graph.node:
        node.output[:] = ["raw" if o == "outputs" else o for o in node.output]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits or [])
    return model.SerializeToString()


def _scalar(name: str, value: float, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def _loop_bomb(depth: int, trips: int) -> list[onnx.NodeProto]:
    """``depth`` nested Loops of ``trips`` iterations each, then outputs = raw + 0 * result."""
    def body(level: int) -> onnx.GraphProto:
        inner = [helper.make_node("Add", [f"v{level}", "one"], [f"w{level}"])] if level == depth else [
            helper.make_node("Loop", ["trips", "", f"v{level}"], [f"w{level}"], body=body(level + 1))]
        return helper.make_graph(
            [helper.make_node("Identity", [f"c{level}"], [f"co{level}"]), *inner], f"b{level}",
            [helper.make_tensor_value_info(f"i{level}", TensorProto.INT64, []),
             helper.make_tensor_value_info(f"c{level}", TensorProto.BOOL, []),
             helper.make_tensor_value_info(f"v{level}", TensorProto.FLOAT, [])],
            [helper.make_tensor_value_info(f"co{level}", TensorProto.BOOL, []),
             helper.make_tensor_value_info(f"w{level}", TensorProto.FLOAT, [])])
    return [helper.make_node("Loop", ["trips", "", "zero"], ["bomb"], body=body(1)),
            helper.make_node("Mul", ["bomb", "zero"], ["nothing"]),
            helper.make_node("Add", ["raw", "nothing"], ["outputs"])]


def _bomb_inits(trips: int) -> list[onnx.TensorProto]:
    return [_scalar("trips", trips, np.int64), _scalar("zero", 0.0), _scalar("one", 1.0)]


def _external_escape(c: Custom) -> bytes:
    model = onnx.load_from_string(c.onnx_bytes)
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "64")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


HOSTILE: dict[str, tuple[str, str]] = {  # name -> (how, the rule the reason must name)
    "unknown-op": ("unknown", r"unsupported ONNX op 'Hardmax'"),
    "external-data": ("external", "refers to external data"),
    "oversize-initializer": ("oversize", f"exceed {MAX_INITIALIZER_BYTES} bytes"),
    "loop-bomb": ("bomb", "exceeds the replay's bound"),
    "too-deep": ("deep", "nest deeper than 4 levels"),
    "output-name": ("rename", "has no output 'outputs'"),
    "output-shape": ("labels", "output has shape"),
}


def _write(c: Custom, folder: Path, how: str) -> None:
    c.write_version(folder)
    onnx_path = folder / "model.onnx"
    if how == "unknown":
        onnx_path.write_bytes(_graft(c, [helper.make_node("Hardmax", ["raw"], ["outputs"])]))
    elif how == "external":
        onnx_path.write_bytes(_external_escape(c))
    elif how == "oversize":
        big = numpy_helper.from_array(np.zeros(MAX_INITIALIZER_BYTES // 4 + 1, dtype=np.float32), "ballast")
        onnx_path.write_bytes(_graft(c, [helper.make_node("Identity", ["raw"], ["outputs"])], [big]))
    elif how == "bomb":
        onnx_path.write_bytes(_graft(c, _loop_bomb(2, 100_000), _bomb_inits(100_000)))
    elif how == "deep":
        onnx_path.write_bytes(_graft(c, _loop_bomb(5, 1), _bomb_inits(1)))
    elif how == "rename":
        onnx_path.write_bytes(_renamed_output(c))
    elif how == "labels":
        c.write_version(folder, extra_yaml={"labels": ["a", "b", "c", "d", "e"]})


def _renamed_output(c: Custom) -> bytes:
    model = onnx.load_from_string(c.onnx_bytes)
    for node in model.graph.node:
        node.output[:] = ["final_out" if o == "outputs" else o for o in node.output]
    model.graph.output[0].name = "final_out"
    return model.SerializeToString()


@pytest.fixture(scope="module")
def good() -> Custom:
    return make_bigru(3)


@pytest.fixture(scope="module")
def server(good: Custom, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("hostile-graphs")
    good.write_version(root / "good" / "1")
    for name, (how, _) in HOSTILE.items():
        _write(good, root / name / "1", how)
    with ServerThread(root, poll_interval_s=0, graph_max_initializer_bytes=MAX_INITIALIZER_BYTES) as srv:
        yield srv


def test_hostile_graphs_fail_with_the_rule_named_and_good_models_serve(server: ServerThread, good: Custom) -> None:
    with Client(server.target) as client:
        for name, (_, rule) in HOSTILE.items():
            (status,) = client.get_model(name).versions
            assert status.state == "failed", (name, status)
            assert re.search(rule, status.reason), (name, status.reason)
        x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
        got = client.predict("good", [x]).predictions[0].scores
        with torch.no_grad():
            ref = good.eager(torch.from_numpy(x)[None], torch.tensor([6]))[0].numpy()
        np.testing.assert_allclose(got, ref, atol=1e-5)
        assert client.get_model("good").versions[0].state == "ready"

