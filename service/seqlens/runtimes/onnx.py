"""ONNX Runtime: the forward path for Predict, ModelInfer and perturbation methods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import ModelConfigError

INPUT_NAMES = ("inputs", "lengths")
OUTPUT_NAME = "outputs"
MIN_OPSET = 17


class OnnxRuntime:
    """One inference session over a self-contained ``model.onnx``.

    ``run`` is thread-safe (ONNX Runtime sessions allow concurrent ``run`` calls).
    """

    def __init__(self, path: Path, intra_op_threads: int = 1) -> None:
        try:
            model = onnx.load(str(path), load_external_data=False)
            onnx.checker.check_model(model)
        except Exception as exc:  # onnx raises several unrelated types for bad files
            raise ModelConfigError(f"model.onnx is not a valid ONNX model: {str(exc)[:200]}") from None
        if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
            raise ModelConfigError("model.onnx refers to external weight files; export one self-contained file")
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
        except Exception as exc:
            raise ModelConfigError(f"ONNX Runtime cannot load model.onnx: {str(exc)[:200]}") from None

    def run(self, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """inputs [B,T] int64 or [B,T,F] float32, lengths [B] int64 -> outputs."""
        out = self.session.run([OUTPUT_NAME], {"inputs": inputs, "lengths": lengths.astype(np.int64)})
        return np.asarray(out[0])
