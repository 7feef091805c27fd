"""ONNX Runtime: the forward path for Predict, ModelInfer and perturbation methods."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import ModelConfigError
from .runs import RunCounts

INPUT_NAMES = ("inputs", "lengths")
OUTPUT_NAME = "outputs"
MIN_OPSET = 17


def _node_tensors(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
    """Tensors held by node attributes, recursing into subgraphs (``If``/``Loop`` bodies)."""
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sparse in (*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []), *attr.sparse_tensors):
                yield from (sparse.values, sparse.indices)
            for graph in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _graph_tensors(graph)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    yield from _node_tensors(graph.node)


def external_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of tensors whose data lives in other files: never read, they could point anywhere."""
    tensors = [*_graph_tensors(model.graph), *(t for f in model.functions for t in _node_tensors(f.node))]
    return [t.name or "(unnamed)" for t in tensors
            if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) > 0]


class OnnxRuntime:
    """One inference session over a self-contained ``model.onnx``.

    ``run`` is thread-safe (ONNX Runtime sessions allow concurrent ``run`` calls).
    """

    def __init__(self, path: Path, intra_op_threads: int = 1, runs: RunCounts | None = None) -> None:
        self.runs = runs or RunCounts()
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types for bad files
            raise ModelConfigError(f"model.onnx is not a valid ONNX model: {str(exc)[:200]}") from None
        # Before the checker and ONNX Runtime, either of which may open the referenced files.
        external = external_tensors(model)
        if external:
            raise ModelConfigError(
                f"model.onnx refers to external data files (tensors {external[:3]}); "
                "export one self-contained file")
        try:
            onnx.checker.check_model(model)
        except Exception as exc:  # noqa: BLE001 - the checker raises several types
            raise ModelConfigError(f"model.onnx is not a valid ONNX model: {str(exc)[:200]}") from None
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset < MIN_OPSET:
            raise ModelConfigError(f"model.onnx uses opset {opset}; seqlens needs opset >= {MIN_OPSET}")
        names = tuple(i.name for i in model.graph.input)
        if names != INPUT_NAMES or [o.name for o in model.graph.output] != [OUTPUT_NAME]:
            raise ModelConfigError(
                f"model.onnx must take inputs {list(INPUT_NAMES)} and give output [{OUTPUT_NAME!r}], "
                f"got inputs {list(names)}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own unrelated types
            raise ModelConfigError(f"ONNX Runtime cannot load model.onnx: {str(exc)[:200]}") from None

    def run(self, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """inputs [B,T] int64 or [B,T,F] float32, lengths [B] int64 -> outputs."""
        self.runs.add("onnxruntime")
        out = self.session.run([OUTPUT_NAME], {"inputs": inputs, "lengths": lengths.astype(np.int64)})
        return np.asarray(out[0])
