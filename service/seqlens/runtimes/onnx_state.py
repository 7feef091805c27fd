"""ONNX Runtime for chunks of sequences: the family graph with initial-state inputs and
final-state outputs, written next to ``model.onnx`` as ``stateful.onnx`` by ``export``.

The graph takes equal-length chunks (``lengths`` all = T; callers group chunks by length) and
the state tensors ``state.<name>`` ``[B,H]``, and gives ``outputs`` plus ``final.<name>``. A
one-step chunk on it costs about what a batch-1 Predict costs, ~15x less than the torch
module (bench/bench_stateful.py; docs/stateful.md). Versions exported before it existed, or
whose graph fails the parity check, run chunks on torch.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from ..errors import ModelConfigError
from ..families import SequenceModel
from .onnx import external_tensors

STATE_ONNX_FILE = "stateful.onnx"
OPSET = 17


def state_names(module: SequenceModel) -> list[str]:
    """``layer<l>.forward.h`` (and ``.c`` for LSTMs), in layer order: ``carry.state_layout``'s names."""
    arch = module.config.family
    parts = ("h", "c") if arch.cell == "lstm" else ("h",)
    return [f"layer{layer}.forward.{p}" for layer in range(arch.num_layers) for p in parts]


class _WithState(nn.Module):
    def __init__(self, module: SequenceModel) -> None:
        super().__init__()
        self.module = module
        self.per_layer = 2 if module.config.family.cell == "lstm" else 1

    def forward(self, inputs: Tensor, lengths: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        k = self.per_layer
        initial = [tuple(states[i:i + k]) for i in range(0, len(states), k)]
        out, finals = self.module.forward_with_state(inputs, lengths, initial, uniform=True)
        return (out, *(t for layer in finals for t in layer))


def export_stateful_bytes(module: SequenceModel) -> bytes | None:
    """The stateful graph of a unidirectional module (None for bidirectional ones)."""
    config = module.config
    if config.family.bidirectional:
        return None
    names = state_names(module)
    b, t = 2, 3  # batch >= 2 and T > 1, so that neither axis is frozen (see the export pitfalls)
    x = torch.zeros((b, t), dtype=torch.int64) if config.is_tokens else torch.zeros((b, t, config.num_features))
    states = [torch.zeros(b, config.family.hidden_size) for _ in names]
    dynamic: dict[str, dict[int, str]] = {"inputs": {0: "batch", 1: "time"}, "lengths": {0: "batch"},
                                          "outputs": {0: "batch", 1: "time"} if config.head == "per_step"
                                          else {0: "batch"}}
    dynamic.update({f"state.{n}": {0: "batch"} for n in names})
    dynamic.update({f"final.{n}": {0: "batch"} for n in names})
    buf = io.BytesIO()
    was_training = module.training
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_WithState(module), (x, torch.full((b,), t, dtype=torch.int64), *states), buf,  # type: ignore[arg-type]
                          input_names=["inputs", "lengths", *(f"state.{n}" for n in names)],
                          output_names=["outputs", *(f"final.{n}" for n in names)],
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    module.train(was_training)
    return buf.getvalue()


class StatefulOnnx:
    """A session over ``stateful.onnx``; ``run`` is thread-safe."""

    def __init__(self, path: Path, names: list[str], intra_op_threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types for bad files
            raise ModelConfigError(f"{STATE_ONNX_FILE} is not a valid ONNX model: {str(exc)[:200]}") from None
        if external_tensors(model):  # never read: they could point anywhere
            raise ModelConfigError(f"{STATE_ONNX_FILE} refers to external data files")
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.names = names
        self._outputs = ["outputs", *(f"final.{n}" for n in names)]
        got = [i.name for i in self.session.get_inputs()]
        if got != ["inputs", "lengths", *(f"state.{n}" for n in names)]:
            raise ModelConfigError(f"{STATE_ONNX_FILE} takes inputs {got}")

    def run(self, inputs: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Equal-length chunks [b,T(,F)] and states [b,H] each -> (outputs, final states [b,H] each)."""
        feed = {"inputs": inputs, "lengths": np.full(inputs.shape[0], inputs.shape[1], dtype=np.int64)}
        feed.update({f"state.{n}": s for n, s in zip(self.names, states, strict=True)})
        out = self.session.run(self._outputs, feed)
        return np.asarray(out[0]), [np.asarray(a) for a in out[1:]]
