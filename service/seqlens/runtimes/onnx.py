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


def load_onnx_model(path: Path) -> onnx.ModelProto:
    """Read and check ``model.onnx``: valid, self-contained (no external data), opset >= 17."""
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
    return model


class OnnxRuntime:
    """One inference session over a self-contained ``model.onnx``.

    The built-in family's graphs take ``inputs``/``lengths`` and give ``outputs``; custom graphs
    name theirs in ``model.yaml`` (``custom``; ``input_names``: token/feature input and lengths;
    ``output_name``; ``state_names``: per-step state outputs; the graph may give more outputs).
    ``run`` is thread-safe (ONNX Runtime sessions allow concurrent ``run`` calls).
    """

    def __init__(self, path: Path, intra_op_threads: int = 1, *, model: onnx.ModelProto | None = None,
                 input_names: tuple[str, str] = INPUT_NAMES, output_name: str = OUTPUT_NAME,
                 state_names: tuple[str, ...] = (), custom: bool = False,
                 runs: RunCounts | None = None) -> None:
        self.runs = runs or RunCounts()
        if model is None:
            model = load_onnx_model(path)
        self.input_names = input_names
        self.output_name = output_name
        initialized = {t.name for t in model.graph.initializer}
        names = tuple(i.name for i in model.graph.input if i.name not in initialized)
        outputs = [o.name for o in model.graph.output]
        if not custom:
            if names != INPUT_NAMES or outputs != [OUTPUT_NAME]:
                raise ModelConfigError(
                    f"model.onnx must take inputs {list(INPUT_NAMES)} and give output [{OUTPUT_NAME!r}], "
                    f"got inputs {list(names)}")
        else:
            if sorted(names) != sorted(input_names):
                raise ModelConfigError(f"model.onnx takes inputs {list(names)}; model.yaml graph: names "
                                       f"{list(input_names)} (graph.inputs, graph.lengths)")
            missing = [n for n in (output_name, *state_names) if n not in outputs]
            if missing:
                raise ModelConfigError(f"model.onnx has no output {missing[0]!r} named in model.yaml graph:; "
                                       f"its outputs are {outputs}")
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
        return self.run_outputs(inputs, lengths, [self.output_name])[0]

    def run_outputs(self, inputs: np.ndarray, lengths: np.ndarray, names: list[str]) -> list[np.ndarray]:
        self.runs.add("onnxruntime")
        x_name, len_name = self.input_names
        out = self.session.run(names, {x_name: inputs, len_name: lengths.astype(np.int64)})
        return [np.asarray(o) for o in out]
