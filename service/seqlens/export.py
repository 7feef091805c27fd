"""Write a repository version from a trained module: weights, ONNX graph, config, vocabulary.

The ONNX graph is exported once here (never at server start) with the TorchScript exporter:
it takes ~0.1 s per small RNN, keeps the weights inside ``model.onnx`` and emits one
recurrent op per direction (DESIGN.md, pitfalls). The version is written into a hidden
temporary folder and renamed into place, so a polling server never sees half a version.
"""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .errors import ModelConfigError
from .families import SequenceModel
from .runtimes.onnx import INPUT_NAMES, MIN_OPSET, OUTPUT_NAME
from .runtimes.torch import WEIGHTS_FILE, save_weights
from .schema import TokenInput, dump_config
from .tokenizers import Vocabulary
from .versions import CONFIG_FILE, ONNX_FILE, REFERENCE_FILE, LoadedVersion, load_version, probe_inputs


def export_onnx_bytes(module: SequenceModel) -> bytes:
    """Trace ``module`` with dynamic batch and time axes; example batch >= 2 (see pitfalls)."""
    config = module.config
    x, lengths = probe_inputs(config, module.embedding.num_embeddings if module.embedding else 0)
    per_step = config.head == "per_step"
    dynamic = {
        "inputs": {0: "batch", 1: "time"},
        "lengths": {0: "batch"},
        OUTPUT_NAME: {0: "batch", 1: "time"} if per_step else {0: "batch"},
    }
    buf = io.BytesIO()
    was_training = module.training
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(x), torch.from_numpy(lengths)), buf,  # type: ignore[arg-type]
                          input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                          dynamic_axes=dynamic, opset_version=MIN_OPSET, dynamo=False)
    module.train(was_training)
    return buf.getvalue()


def export_model(module: SequenceModel, directory: str | Path, *, vocabulary: list[str] | None = None,
                 reference: tuple[np.ndarray, np.ndarray] | None = None,
                 overwrite: bool = False) -> LoadedVersion:
    """Write ``directory`` (``<repo>/<model>/<version>``) and return it loaded and parity-checked.

    ``vocabulary`` (line i = token i) is required for token models. ``reference`` is an
    optional padded batch of typical inputs ``(inputs [N,T(,F)], lengths [N])`` stored as
    ``reference.safetensors``; the server fits state projections on it.
    """
    target = Path(directory)
    config = module.config
    if isinstance(config.input, TokenInput):
        if vocabulary is None:
            raise ModelConfigError("token models need a vocabulary")
        assert module.embedding is not None
        if len(vocabulary) != module.embedding.num_embeddings:
            raise ModelConfigError(
                f"vocabulary has {len(vocabulary)} tokens, the embedding {module.embedding.num_embeddings}")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists (pass overwrite=True to replace it)")
    tmp = target.parent / f".{target.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        module = module.eval()
        (tmp / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
        save_weights(module, tmp / WEIGHTS_FILE)
        (tmp / ONNX_FILE).write_bytes(export_onnx_bytes(module))
        if reference is not None:
            ref_x, ref_len = reference
            save_file({"inputs": torch.from_numpy(np.ascontiguousarray(ref_x)),
                       "lengths": torch.from_numpy(np.ascontiguousarray(ref_len, dtype=np.int64))},
                      str(tmp / REFERENCE_FILE))
        if isinstance(config.input, TokenInput) and vocabulary is not None:
            Vocabulary(vocabulary).save(tmp / config.input.vocabulary)
        load_version(tmp, target.parent.name, target.name)  # parity check before publishing
        for f in tmp.iterdir():
            f.chmod(0o644)  # servers often run as another user than the exporter
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_version(target, target.parent.name, target.name)
