"""One loaded model version: config, tokenizer, torch module and ONNX session, parity-checked."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import PARITY_TOLERANCE
from .errors import ModelConfigError, ResourceExhausted
from .families import SequenceModel
from .runtimes.onnx import OnnxRuntime, load_onnx_model
from .runtimes.replay import (
    ReplayGraph,
    ReplayLimits,
    ReplayModule,
    attribution_width,
    check_attribution_point,
)
from .runtimes.runs import RunCounts, count_torch_runs
from .runtimes.torch import WEIGHTS_FILE, load_torch_module
from .schema import ModelConfig, TokenInput, parse_config
from .tokenizers import TextTokenizer, Tokenizer, Vocabulary
from .version_cache import CacheSlots

CONFIG_FILE = "model.yaml"
ONNX_FILE = "model.onnx"
REFERENCE_FILE = "reference.safetensors"  # optional: typical inputs, for state projections
# Text files are parsed whole; caps keep a hostile repository from costing unbounded memory.
MAX_CONFIG_BYTES = 1 << 20
MAX_VOCAB_BYTES = 64 << 20  # also the cap of a huggingface tokenizer.json
LEGACY_VOCAB_FILE = "vocab.txt"  # the default before vocab.json; still read when the config names neither


@dataclass
class LoadedVersion:
    name: str
    version: str
    path: Path
    config: ModelConfig
    torch_module: SequenceModel | ReplayModule  # the family module, or the replay of model.onnx
    onnx: OnnxRuntime
    tokenizer: TextTokenizer | None
    parity_max_abs_diff: float
    load_seconds: float = 0.0
    caches: CacheSlots = field(default_factory=CacheSlots, repr=False, compare=False)  # owners: version_cache.py
    attribution_width: int = 0  # E of the attribution tensor [T,E] (embedding or feature width)
    runs: RunCounts = field(default_factory=RunCounts)  # ONNX Runtime and torch runs, the load's included

    def __post_init__(self) -> None:
        if not self.attribution_width and not self.config.is_graph:
            self.attribution_width = self.config.family.embedding_dim

    @property
    def kind(self) -> str:
        return "onnx" if self.config.is_graph else "family"

    @property
    def family_module(self) -> SequenceModel:
        """The built-in family module; only for code that runs on family models."""
        if not isinstance(self.torch_module, SequenceModel):
            raise TypeError("not a built-in family model")
        return self.torch_module

    @property
    def replay(self) -> ReplayModule:
        """The replay module of a custom graph (``architecture.kind: onnx``)."""
        if not isinstance(self.torch_module, ReplayModule):
            raise TypeError("not a custom graph model")
        return self.torch_module

    @property
    def num_parameters(self) -> int:
        if isinstance(self.torch_module, ReplayModule):
            return self.torch_module.graph.num_parameters
        return sum(p.numel() for p in self.torch_module.parameters())

    @property
    def onnx_session(self):  # type: ignore[no-untyped-def]
        return self.onnx.session

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size if self.tokenizer else 0


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


def expected_output_shape(config: ModelConfig, batch: int, steps: int) -> tuple[int, ...]:
    if config.head == "per_step":
        return (batch, steps, config.num_outputs)
    return (batch, config.num_outputs)


def parity_diff(module: SequenceModel | ReplayModule, onnx_rt: OnnxRuntime, config: ModelConfig, vocab_size: int) -> float:
    """Max |ONNX Runtime - torch| over probe inputs, batched and one sequence at a time.

    Horizon heads are compared before de-normalization (divided by ``output_scale.std``):
    float32 rounding grows with the output's magnitude (a forecast in the hundreds differs
    by ~3e-5 with perfectly equal graphs), which says nothing about the graph.
    """
    x, lengths = probe_inputs(config, vocab_size)
    with torch.no_grad():  # torch (or the bounded replay) first: ORT has no loop-trip bound
        ref = module(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    want = expected_output_shape(config, x.shape[0], x.shape[1])
    if ref.shape != want:
        raise ModelConfigError(f"model.onnx output has shape {list(ref.shape)} on probe inputs [B={want[0]}, "
                               f"T={x.shape[1]}]; model.yaml ({config.task}, {config.num_outputs} outputs) "
                               f"needs {list(want)}")
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


def vocabulary_file_name(folder: Path, spec: TokenInput) -> str:
    """The configured vocabulary file; a config that names none falls back to the legacy
    ``vocab.txt`` where only that file exists (repositories written before vocab.json)."""
    if ("vocabulary" not in spec.model_fields_set and not (folder / spec.vocabulary).exists()
            and (folder / LEGACY_VOCAB_FILE).is_file()):
        return LEGACY_VOCAB_FILE
    return spec.vocabulary


def load_tokenizer(folder: Path, spec: TokenInput) -> TextTokenizer:
    """The version's tokenizer from its checked vocabulary (or tokenizer.json) file."""
    file_name = vocabulary_file_name(folder, spec)
    vocab_path = version_file(folder, file_name, max_bytes=MAX_VOCAB_BYTES)
    tokenizer: TextTokenizer
    if spec.tokenizer == "huggingface":
        from .hf_tokenizer import HuggingFaceTokenizer

        try:
            text = vocab_path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelConfigError(f"{file_name} is not UTF-8 text: {exc.reason}") from None
        tokenizer = HuggingFaceTokenizer.from_json(spec, text, file_name)
    else:
        tokenizer = Tokenizer(spec, Vocabulary.load(vocab_path))
    for field_name in ("pad_id", "unk_id"):
        if getattr(spec, field_name) >= tokenizer.vocab_size:
            raise ModelConfigError(f"input.{field_name} is outside the {tokenizer.vocab_size}-token vocabulary")
    return tokenizer


def load_version(path: Path, name: str, version: str, *, onnx_threads: int = 1,
                 tolerance: float = PARITY_TOLERANCE, limits: ReplayLimits | None = None) -> LoadedVersion:
    """Load and parity-check one version folder; raises ModelConfigError with the reason.

    Nothing in the folder is executed: the config is data (``yaml.safe_load``), weights come
    from safetensors, the ONNX graph must be self-contained, and every file must lie inside
    the folder.
    """
    start = time.perf_counter()
    config_path = version_file(path, CONFIG_FILE, max_bytes=MAX_CONFIG_BYTES)
    onnx_path = version_file(path, ONNX_FILE)
    try:
        config = parse_config(config_path.read_text(encoding="utf-8"), source=CONFIG_FILE)
    except UnicodeDecodeError as exc:
        raise ModelConfigError(f"{CONFIG_FILE} is not UTF-8 text: {exc.reason}") from None
    tokenizer = load_tokenizer(path, config.input) if isinstance(config.input, TokenInput) else None
    vocab_size = tokenizer.vocab_size if tokenizer else 0
    module: SequenceModel | ReplayModule
    runs = RunCounts()
    if config.is_graph:
        module, onnx_rt, width = _load_graph(config, onnx_path, onnx_threads, limits, vocab_size, runs)
    else:
        module = load_torch_module(config, version_file(path, WEIGHTS_FILE), vocab_size or None)
        onnx_rt = OnnxRuntime(onnx_path, intra_op_threads=onnx_threads, runs=runs)
        width = config.family.embedding_dim
    count_torch_runs(module, runs)
    try:
        diff = parity_diff(module, onnx_rt, config, vocab_size)
    except ResourceExhausted as exc:  # a replay bound (loop trips, created tensor size) on probe inputs
        raise ModelConfigError(f"probe run: {exc.message}") from None
    if diff > tolerance:
        runtime = "the replay of model.onnx" if config.is_graph else "torch"
        raise ModelConfigError(f"parity check failed: ONNX Runtime and {runtime} differ by {diff:.3g} "
                               f"(> {tolerance:g}) on probe inputs")
    loaded = LoadedVersion(name, version, path, config, module, onnx_rt, tokenizer, diff,
                           load_seconds=0.0, attribution_width=width, runs=runs)
    if config.is_graph:
        _check_state_outputs(loaded)
    loaded.load_seconds = time.perf_counter() - start
    return loaded


def _load_graph(config: ModelConfig, onnx_path: Path, onnx_threads: int, limits: ReplayLimits | None,
                vocab_size: int, runs: RunCounts) -> tuple[ReplayModule, OnnxRuntime, int]:
    """A custom graph: the replay (safety rules checked while parsing), then ONNX Runtime."""
    spec = config.graph
    assert spec is not None
    model = load_onnx_model(onnx_path)
    graph = ReplayGraph(model, limits)  # before ONNX Runtime sees the graph
    module = ReplayModule(graph, config)
    onnx_rt = OnnxRuntime(onnx_path, intra_op_threads=onnx_threads, model=model,
                          input_names=(spec.inputs, spec.lengths), output_name=spec.output,
                          state_names=tuple(s.output for s in spec.states), custom=True, runs=runs)
    check_attribution_point(graph, module.names)
    width = attribution_width(module, config.num_features)
    if config.is_tokens and config.training_mean is not None and len(config.training_mean) != width:
        raise ModelConfigError(f"training_mean has {len(config.training_mean)} values; the embedding "
                               f"{spec.attribute_at!r} has width {width}")
    return module, onnx_rt, width


def _check_state_outputs(loaded: LoadedVersion) -> None:
    """Each state output named in model.yaml is [B,T,S] with its slices inside S."""
    spec = loaded.config.graph
    if spec is None or not spec.states:
        return
    x, lengths = probe_inputs(loaded.config, loaded.vocab_size)
    with torch.no_grad():
        outs = loaded.replay.run(torch.from_numpy(x), torch.from_numpy(lengths), [s.output for s in spec.states])
    for state in spec.states:
        shape = list(outs[state.output].shape)
        if len(shape) != 3 or shape[:2] != list(x.shape[:2]):
            raise ModelConfigError(f"graph.states: output {state.output!r} has shape {shape} for inputs "
                                   f"[B={x.shape[0]}, T={x.shape[1]}]; it must be [B, T, S]")
        for slice_name, (_, hi) in state.slices.items():
            if hi > shape[2]:
                raise ModelConfigError(f"graph.states: slice {slice_name!r} ends at {hi}, past the "
                                       f"{shape[2]} units of {state.output!r}")
