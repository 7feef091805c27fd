"""Export to one self-contained ONNX file and name the tensors the manifest points at.

The TorchScript exporter is used (``dynamo=False``): on a scripted loop it emits an ONNX ``Loop``
over a symbolic time axis in about a second, where ``torch.export`` + dynamo either freezes T
(a Python loop) or needs ``scan`` and 10-20 s (docs/build.md).
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import Tensor, nn

from ..runtimes.onnx import MIN_OPSET

INPUTS, LENGTHS, OUTPUTS, STATES = "inputs", "lengths", "outputs", "states"
EMBEDDED = "embedded"  # the renamed output of the Gather that embeds token ids
_PASS_THROUGH = {"Cast", "Identity"}  # ops allowed between the ids input and its Gather


class BuildError(ValueError):
    """A build refused: the message says which check failed and by how much."""


def export_onnx(module: nn.Module, example: tuple[Tensor, Tensor], *, per_step: bool, with_states: bool
                ) -> onnx.ModelProto:
    """``module(inputs, lengths)`` -> ONNX with dynamic batch and time axes."""
    outputs = [OUTPUTS, STATES] if with_states else [OUTPUTS]
    dynamic: dict[str, dict[int, str]] = {INPUTS: {0: "batch", 1: "time"}, LENGTHS: {0: "batch"},
                                          OUTPUTS: {0: "batch", 1: "time"} if per_step else {0: "batch"}}
    if with_states:
        dynamic[STATES] = {0: "batch", 1: "time"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(module, example, buf, input_names=[INPUTS, LENGTHS],  # type: ignore[arg-type]
                              output_names=outputs, dynamic_axes=dynamic, opset_version=MIN_OPSET, dynamo=False)
        except torch.onnx.errors.OnnxExporterError as exc:
            raise BuildError(
                f"ONNX export failed: {str(exc).splitlines()[0][:300]}. Inside the cell protocol's loop the "
                "exporter knows no static sizes, so fused cells (nn.GRUCell, nn.LSTMCell) do not export: write "
                "the gates with nn.Linear, or use the sequence protocol with nn.GRU/nn.LSTM") from None
    model = onnx.load_from_string(buf.getvalue())
    if LENGTHS not in {i.name for i in model.graph.input}:
        # The module ignores lengths and the exporter dropped the input; the server always feeds it.
        model.graph.input.append(onnx.helper.make_tensor_value_info(LENGTHS, onnx.TensorProto.INT64, ["batch"]))
    if model.graph.output[0].name != OUTPUTS:
        raise BuildError(f"the exported graph's first output is {model.graph.output[0].name!r}, not {OUTPUTS!r}")
    return model


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere, subgraphs included (a Loop body reads outer tensors by name)."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename(attr.g, old, new)
            for g in attr.graphs:
                _rename(g, old, new)
    for vi in [*graph.value_info, *graph.output]:
        if vi.name == old:
            vi.name = new


def name_embedding(model: onnx.ModelProto) -> str:
    """Rename the output of the Gather that embeds the token ids to ``embedded`` and return it.

    Exactly one ``Gather`` may take the ids (possibly through Cast/Identity) as its indices:
    that is where Captum's LayerIntegratedGradients would attribute.
    """
    sources = {INPUTS}
    for node in model.graph.node:
        if node.op_type in _PASS_THROUGH and node.input and node.input[0] in sources:
            sources.update(node.output)
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and len(n.input) == 2 and n.input[1] in sources]
    if len(gathers) != 1:
        raise BuildError(f"a token model's graph must embed the ids with exactly one Gather at the top level "
                         f"(an nn.Embedding or the one-hot lookup); found {len(gathers)}")
    _rename(model.graph, gathers[0].output[0], EMBEDDED)
    return EMBEDDED


def _dim_symbolic(vi: onnx.ValueInfoProto, axis: int) -> bool | None:
    dims = vi.type.tensor_type.shape.dim
    if axis >= len(dims):
        return None
    return dims[axis].HasField("dim_param") or not dims[axis].HasField("dim_value")


def check_symbolic_axes(model: onnx.ModelProto, per_step: bool) -> None:
    """The graph declares batch and time symbolic on the input (and time on a per-step output)."""
    by_name = {vi.name: vi for vi in [*model.graph.input, *model.graph.output]}
    wanted = [(INPUTS, 0, "batch"), (INPUTS, 1, "time"), (LENGTHS, 0, "batch"), (OUTPUTS, 0, "batch")]
    if per_step:
        wanted.append((OUTPUTS, 1, "time"))
    for name, axis, what in wanted:
        ok = _dim_symbolic(by_name[name], axis)
        if not ok:
            dims = by_name[name].type.tensor_type.shape.dim
            fixed = dims[axis].dim_value if ok is False else "missing"
            raise BuildError(f"check 'symbolic time axis' failed: ONNX {name!r} axis {axis} ({what}) is fixed "
                             f"to {fixed}, not symbolic; export the loop with torch.jit.script or the "
                             "cell protocol")


def finish(model: onnx.ModelProto) -> bytes:
    """Validate and serialize as one self-contained file (weights inside, no external data)."""
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    if len(data) >= 2**31 - 1:
        raise BuildError("the ONNX graph is over 2 GB; seqlens keeps model.onnx one self-contained file")
    return data
