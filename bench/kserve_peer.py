"""KServe's Python model server around the same ONNX Runtime session (run in the peer venv).

    python kserve_peer.py MODEL_ONNX GRPC_PORT HTTP_PORT
"""

import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class Sentiment(Model):
    def __init__(self, path: str) -> None:
        super().__init__("sentiment")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # as seqlens' default session options
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.ready = True

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        by_name = {i.name: i.as_numpy() for i in payload.inputs}
        x = by_name["inputs"]
        lengths = by_name.get("lengths", np.full(x.shape[0], x.shape[1], dtype=np.int64))
        (out,) = self.session.run(None, {"inputs": x, "lengths": lengths.astype(np.int64)})
        result = InferOutput(name="outputs", shape=list(out.shape), datatype="FP32")
        result.set_data_from_numpy(out, binary_data=True)
        return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=[result],
                             use_binary_outputs=True)


if __name__ == "__main__":
    model_path, grpc_port, http_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ModelServer(grpc_port=grpc_port, http_port=http_port).start([Sentiment(model_path)])
