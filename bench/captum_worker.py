"""Captum as users run it, in a process of its own: bench_explain.py's comparator.

    python captum_worker.py REPOSITORY [--threads N]

Without --threads, torch keeps its default intra-op thread count and nothing sets
flush-to-zero (seqlens' modules are only used to load the model, which sets no torch flag).
Reads one JSON request a line on stdin, answers one JSON line on stdout:
{"op": "ig" | "occlusion" | "ablation", "model", "ids", "target", "steps"} ->
{"seconds": compute time, "attr": per-token scores}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch
from captum.attr import FeatureAblation, LayerIntegratedGradients, Occlusion
from seqlens import load_model
from seqlens.versions import LoadedVersion


def answer(loaded: LoadedVersion, req: dict[str, Any]) -> dict[str, Any]:
    module = loaded.torch_module
    ids = torch.tensor(req["ids"], dtype=torch.int64)[None]
    lengths = torch.tensor([ids.shape[1]])
    target = int(req["target"])

    def forward(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return module(x, n)

    start = time.perf_counter()
    if req["op"] == "ig":
        lig = LayerIntegratedGradients(forward, module.embedding)
        attr, _delta = lig.attribute(ids, torch.zeros_like(ids), target=target, n_steps=int(req["steps"]),
                                     additional_forward_args=(lengths,), method="gausslegendre",
                                     return_convergence_delta=True)
        scores = attr[0].sum(dim=-1)
    elif req["op"] == "occlusion":
        scores = Occlusion(forward).attribute(ids, sliding_window_shapes=(1,), baselines=0, target=target,
                                              additional_forward_args=(lengths,))[0]
    else:
        scores = FeatureAblation(forward).attribute(ids, baselines=0, target=target, additional_forward_args=(lengths,),
                                                    perturbations_per_eval=ids.shape[1])[0]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "attr": scores.detach().double().tolist()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("repository")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models: dict[str, LoadedVersion] = {}
    print(json.dumps({"threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["model"] not in models:
            models[req["model"]] = load_model(args.repository, req["model"])
        print(json.dumps(answer(models[req["model"]], req)), flush=True)


if __name__ == "__main__":
    main()
