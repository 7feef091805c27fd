"""Write a repository version from a trained module: weights, ONNX graph, config, vocabulary.

The ONNX graph is exported once here (never at server start) with the TorchScript exporter:
it takes ~0.1 s per small RNN, keeps the weights inside ``model.onnx`` and emits one
recurrent op per direction (DESIGN.md, pitfalls). The version is written into a hidden
temporary folder and renamed into place, so a polling server never sees half a version.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import ModelConfigError
from .families import SequenceModel
from .publish import refuse_existing, save_reference, staged
from .runtimes.onnx import INPUT_NAMES, MIN_OPSET, OUTPUT_NAME
from .runtimes.onnx_state import STATE_ONNX_FILE, export_stateful_bytes
from .runtimes.torch import WEIGHTS_FILE, save_weights
from .schema import TokenInput, dump_config
from .tokenizers import write_vocabulary
from .versions import (
    CONFIG_FILE,
    MAX_VOCAB_BYTES,
    ONNX_FILE,
    LoadedVersion,
    load_version,
    probe_inputs,
)


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


def _tokenizer_json(spec: TokenInput, path: str | Path | None) -> tuple[str, int]:
    """The text of a huggingface ``tokenizer.json``, checked to load with the library."""
    from .hf_tokenizer import HuggingFaceTokenizer

    if path is None:
        raise ModelConfigError("tokenizer 'huggingface' needs tokenizer_json (the tokenizer.json file)")
    source = Path(path)
    if source.stat().st_size > MAX_VOCAB_BYTES:
        raise ModelConfigError(f"{source.name} has {source.stat().st_size} bytes; at most {MAX_VOCAB_BYTES} are read")
    text = source.read_bytes().decode("utf-8")
    return text, HuggingFaceTokenizer.from_json(spec, text, source.name).vocab_size


def export_model(module: SequenceModel, directory: str | Path, *, vocabulary: list[str] | None = None,
                 tokenizer_json: str | Path | None = None,
                 reference: tuple[np.ndarray, np.ndarray] | None = None,
                 overwrite: bool = False) -> LoadedVersion:
    """Write ``directory`` (``<repo>/<model>/<version>``) and return it loaded and parity-checked.

    ``module`` must be a :class:`~seqlens.families.SequenceModel` (``build_model(config, ...)``).
    An existing ``directory`` is refused unless ``overwrite=True``: it may be a version in service.
    Token models need ``vocabulary`` (token i has id i; written to ``input.vocabulary``, by
    default ``vocab.json``, which holds any token) or, for ``tokenizer: huggingface``,
    ``tokenizer_json`` (a tokenizer.json path, copied as is). ``reference`` is an
    optional padded batch of typical inputs ``(inputs [N,T(,F)], lengths [N])`` stored as
    ``reference.safetensors``; the server fits state projections on it.
    """
    if not isinstance(module, SequenceModel):
        raise TypeError(
            f"export_model takes a seqlens SequenceModel (input layer -> RNN/LSTM/GRU -> head, configured by "
            f"model.yaml), got {type(module).__module__}.{type(module).__qualname__}: build one with "
            "seqlens.families.build_model(parse_config(...)), load your trained weights into it, then export it")
    target = Path(directory)
    config = module.config
    hf_text: str | None = None
    if isinstance(config.input, TokenInput):
        assert module.embedding is not None
        if config.input.tokenizer == "huggingface":
            hf_text, size = _tokenizer_json(config.input, tokenizer_json)
            if size != module.embedding.num_embeddings:
                raise ModelConfigError(
                    f"tokenizer.json has {size} token ids, the embedding {module.embedding.num_embeddings}")
        elif vocabulary is None:
            raise ModelConfigError("token models need a vocabulary")
        elif len(vocabulary) != module.embedding.num_embeddings:
            raise ModelConfigError(
                f"vocabulary has {len(vocabulary)} tokens, the embedding {module.embedding.num_embeddings}")
    refuse_existing(target, overwrite, "overwrite=True (seqlens export --overwrite)")
    with staged(target) as tmp:
        module = module.eval()
        (tmp / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
        save_weights(module, tmp / WEIGHTS_FILE)
        (tmp / ONNX_FILE).write_bytes(export_onnx_bytes(module))
        stateful = export_stateful_bytes(module)  # chunks of sequences on ONNX Runtime (docs/stateful.md)
        if stateful is not None:
            (tmp / STATE_ONNX_FILE).write_bytes(stateful)
        save_reference(tmp, reference)
        if isinstance(config.input, TokenInput):
            if hf_text is not None:
                (tmp / config.input.vocabulary).write_bytes(hf_text.encode("utf-8"))
            elif vocabulary is not None:
                write_vocabulary(tmp / config.input.vocabulary, vocabulary)
        load_version(tmp, target.parent.name, target.name)  # parity check before publishing
    return load_version(target, target.parent.name, target.name)
