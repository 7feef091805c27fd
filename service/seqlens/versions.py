"""One loaded model version: config, tokenizer, torch module and ONNX session, parity-checked."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import ModelConfigError
from .families import SequenceModel
from .runtimes.onnx import OnnxRuntime
from .runtimes.runs import RunCounts, count_torch_runs
from .runtimes.torch import WEIGHTS_FILE, load_torch_module
from .schema import ModelConfig, TokenInput, parse_config
from .tokenizers import Tokenizer, Vocabulary

CONFIG_FILE = "model.yaml"
ONNX_FILE = "model.onnx"
REFERENCE_FILE = "reference.safetensors"  # optional: typical inputs, for state projections
PARITY_TOLERANCE = 1e-4
# Text files are parsed whole; caps keep a hostile repository from costing unbounded memory.
MAX_CONFIG_BYTES = 1 << 20
MAX_VOCAB_BYTES = 64 << 20


@dataclass
class LoadedVersion:
    name: str
    version: str
    path: Path
    config: ModelConfig
    torch_module: SequenceModel
    onnx: OnnxRuntime
    tokenizer: Tokenizer | None
    parity_max_abs_diff: float
    load_seconds: float = 0.0
    extras: dict[str, object] = field(default_factory=dict)  # per-version caches (e.g. PCA)
    runs: RunCounts = field(default_factory=RunCounts)  # ONNX Runtime and torch runs, the load's included

    @property
    def onnx_session(self):  # type: ignore[no-untyped-def]
        return self.onnx.session

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer.vocab) if self.tokenizer else 0


def probe_inputs(config: ModelConfig, vocab_size: int, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic padded batch with lengths 1..T_max for the parity check."""
    rng = np.random.default_rng(seed)
    t_max = min(config.max_length, 24)
    lengths = np.array(sorted({t_max, max(1, t_max // 2), 1}, reverse=True), dtype=np.int64)
    b = len(lengths)
    if config.is_tokens:
        x = rng.integers(0, vocab_size, size=(b, t_max)).astype(np.int64)
    else:
        assert not isinstance(config.input, TokenInput)
        mean = np.array(config.input.mean or [0.0] * config.num_features, dtype=np.float32)
        std = np.array(config.input.std or [1.0] * config.num_features, dtype=np.float32)
        x = (rng.standard_normal((b, t_max, config.num_features)) * std + mean).astype(np.float32)
    return x, lengths


def parity_diff(module: SequenceModel, onnx_rt: OnnxRuntime, config: ModelConfig, vocab_size: int) -> float:
    """Max |ONNX Runtime - torch| over probe inputs, batched and one sequence at a time.

    Horizon heads are compared before de-normalization (divided by ``output_scale.std``):
    float32 rounding grows with the output's magnitude (a forecast in the hundreds differs
    by ~3e-5 with perfectly equal graphs), which says nothing about the graph.
    """
    x, lengths = probe_inputs(config, vocab_size)
    with torch.no_grad():
        ref = module(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    got = onnx_rt.run(x, lengths)
    if got.shape != ref.shape:
        raise ModelConfigError(f"model.onnx output shape {got.shape} differs from torch {ref.shape}")
    worst = float(np.max(np.abs(got - ref)))
    # The shortest sequence alone must equal its padded row (exact padding handling).
    n = int(lengths[-1])
    alone = onnx_rt.run(x[-1:, :n], lengths[-1:])[0]
    padded_row = ref[-1][:n] if ref.ndim == 3 else ref[-1]
    worst = max(worst, float(np.max(np.abs(alone - padded_row))))
    if not np.isfinite(worst):
        raise ModelConfigError("parity check: non-finite outputs on probe inputs")
    return worst / (config.output_scale.std if config.output_scale else 1.0)


def version_file(folder: Path, file_name: str, *, max_bytes: int | None = None) -> Path:
    """``folder/file_name`` checked: a regular file, inside ``folder`` after resolving links
    (a symlink out of the version folder is refused, never followed), at most ``max_bytes``."""
    path = folder / file_name
    if not path.is_file():
        raise ModelConfigError(f"missing {file_name} in {folder.parent.name}/{folder.name}")
    try:
        path.resolve(strict=True).relative_to(folder.resolve(strict=True))
    except (ValueError, OSError):
        raise ModelConfigError(
            f"{file_name} is a link to a file outside the version folder; copy the file into it") from None
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise ModelConfigError(f"{file_name} has {path.stat().st_size} bytes; at most {max_bytes} are read")
    return path


def load_version(path: Path, name: str, version: str, *, onnx_threads: int = 1,
                 tolerance: float = PARITY_TOLERANCE) -> LoadedVersion:
    """Load and parity-check one version folder; raises ModelConfigError with the reason.

    Nothing in the folder is executed: the config is data (``yaml.safe_load``), weights come
    from safetensors, the ONNX graph must be self-contained, and every file must lie inside
    the folder.
    """
    start = time.perf_counter()
    config_path = version_file(path, CONFIG_FILE, max_bytes=MAX_CONFIG_BYTES)
    onnx_path = version_file(path, ONNX_FILE)
    weights_path = version_file(path, WEIGHTS_FILE)
    try:
        config = parse_config(config_path.read_text(encoding="utf-8"), source=CONFIG_FILE)
    except UnicodeDecodeError as exc:
        raise ModelConfigError(f"{CONFIG_FILE} is not UTF-8 text: {exc.reason}") from None
    tokenizer = None
    if isinstance(config.input, TokenInput):
        vocab_path = version_file(path, config.input.vocabulary, max_bytes=MAX_VOCAB_BYTES)
        try:
            vocab = Vocabulary.load(vocab_path)
        except UnicodeDecodeError as exc:
            raise ModelConfigError(f"{config.input.vocabulary} is not UTF-8 text: {exc.reason}") from None
        for field_name in ("pad_id", "unk_id"):
            if getattr(config.input, field_name) >= len(vocab):
                raise ModelConfigError(f"input.{field_name} is outside the {len(vocab)}-token vocabulary")
        tokenizer = Tokenizer(config.input, vocab)
    vocab_size = len(tokenizer.vocab) if tokenizer else 0
    module = load_torch_module(config, weights_path, vocab_size or None)
    runs = RunCounts()
    count_torch_runs(module, runs)
    onnx_rt = OnnxRuntime(onnx_path, intra_op_threads=onnx_threads, runs=runs)
    diff = parity_diff(module, onnx_rt, config, vocab_size)
    if diff > tolerance:
        raise ModelConfigError(
            f"parity check failed: ONNX Runtime and torch differ by {diff:.3g} (> {tolerance:g}) on probe inputs")
    return LoadedVersion(name, version, path, config, module, onnx_rt, tokenizer, diff,
                         load_seconds=time.perf_counter() - start, runs=runs)
