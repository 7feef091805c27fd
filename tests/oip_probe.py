"""Runs tritonclient.grpc in its own process (its stubs register the same ``inference.*``
protobuf symbols as seqlens' own, so the two cannot share one descriptor pool).

stdin: JSON {"target", "calls": [{"op": "infer"|"live"|"ready"|"model_ready"|"metadata", ...}]}
stdout: JSON list of results ({"ok": ...} or {"error": {"status", "message"}}).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as triton


def _infer(client: triton.InferenceServerClient, call: dict) -> object:
    inputs = []
    for spec in call["inputs"]:
        arr = np.asarray(spec["data"], dtype={"INT64": np.int64, "FP32": np.float32}[spec["datatype"]])
        t = triton.InferInput(spec["name"], list(arr.shape), spec["datatype"])
        t.set_data_from_numpy(arr)
        inputs.append(t)
    sequence = {k: call[k] for k in ("sequence_id", "sequence_start", "sequence_end") if k in call}
    result = client.infer(call["model"], inputs, model_version=call.get("version", ""), **sequence)
    return {"outputs": result.as_numpy("outputs").tolist(), "version": result.get_response().model_version}


def main() -> None:
    job = json.load(sys.stdin)
    client = triton.InferenceServerClient(job["target"])
    out = []
    for call in job["calls"]:
        try:
            op = call["op"]
            if op == "infer":
                value: object = _infer(client, call)
            elif op == "live":
                value = client.is_server_live()
            elif op == "ready":
                value = client.is_server_ready()
            elif op == "model_ready":
                value = client.is_model_ready(call["model"])
            else:
                meta = client.get_model_metadata(call["model"])
                value = {"inputs": [i.name for i in meta.inputs], "outputs": [o.name for o in meta.outputs],
                         "platform": meta.platform}
            out.append({"ok": value})
        except triton.InferenceServerException as exc:
            out.append({"error": {"status": str(exc.status()), "message": exc.message()}})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
