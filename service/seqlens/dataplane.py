"""The core of the service: answers requests with domain types and knows nothing of gRPC.

The asyncio loop never runs model code: ONNX Runtime batches run in the prediction pool
(through one dynamic batcher per loaded version); gradient work runs in its own pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .batching import BatchPolicy, DynamicBatcher
from .config import Settings
from .cpus import available_cpus
from .errors import InvalidInput, ModelUnavailable, shutting_down
from .explain import ExplainRequest, ExplainResult, ExplainRunner
from .explainers import available_methods
from .explainers.gradients import gradient_executor
from .inputs import EncodedSequence, SequenceInput, Where, encode, max_length_for
from .metrics import Metrics
from .registry import ModelRegistry, VersionRecord, VersionState
from .results import (
    ArchitectureInfo,
    InputInfo,
    ModelDescription,
    ModelSummary,
    ModelTensors,
    PredictResult,
    TensorSpec,
    VersionInfo,
    make_prediction,
)
from .schema import FeatureInput
from .streaming import StreamingPlane
from .summaries import available_for
from .tensor_inputs import check_batch_shape, check_batch_values
from .version_cache import VersionCache
from .versions import LoadedVersion, expected_output_shape

_BATCHER: VersionCache[DynamicBatcher] = VersionCache("batcher")  # one per loaded version
_INLINE_ENCODE_ELEMENTS = 2048  # characters/timesteps per request encoded on the loop (~5 ms at most)


class DataPlane:
    def __init__(self, registry: ModelRegistry, settings: Settings, metrics: Metrics) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        # Two pools so that gradient work never starves predictions: ONNX Runtime batches run
        # in predict_pool (one dynamic batcher per version feeds it), torch work in explain_pool.
        self.predict_pool = ThreadPoolExecutor(settings.predict_workers, thread_name_prefix="seqlens-onnx")
        # Large requests are validated and tokenized here, so that the event loop never stalls on them.
        self.encode_pool = ThreadPoolExecutor(1, thread_name_prefix="seqlens-encode")
        self.explain_pool = gradient_executor(settings.explain_workers)  # flush-to-zero threads
        lanes = (settings.explain_threads or available_cpus()) - 1
        self.explainer = ExplainRunner(settings, metrics, self.explain_pool, extra_lanes=lanes)
        self.batch_policy = BatchPolicy(
            max_batch=settings.batch_max_size, max_delay_s=settings.batch_max_delay_ms / 1000.0,
            max_queue=settings.batch_max_queue, max_concurrent=settings.predict_workers,
            bucket_overhead_steps=settings.batch_bucket_overhead_steps)
        self.draining = False
        # Stateful calls (client- and server-held state), on the same prediction pool.
        self.streaming = StreamingPlane(registry, settings, metrics, self.predict_pool, self.batch_policy)
        self._tokenize_stages: dict[str, Any] = {}  # model -> its "tokenize" stage histogram child

    # --- lifecycle -------------------------------------------------------------------
    def on_version_change(self, rec: VersionRecord) -> None:
        """Registry listener (runs in the loading thread): keep the model gauges current.

        A version's batcher lives in its ``LoadedVersion.caches`` and holds no task, so an
        unloaded or replaced version takes its batcher with it once its last batch is done.
        """
        if rec.state == VersionState.UNLOADED:
            with contextlib.suppress(KeyError):  # keep label values bounded
                self.metrics.model_ready.remove(rec.name, rec.version)
            if not any(r.name == rec.name and r.state != VersionState.UNLOADED for r in self.registry.records()):
                with contextlib.suppress(KeyError):  # the model is gone altogether
                    self.metrics.model_load_seconds.remove(rec.name)
            return
        self.metrics.model_ready.labels(rec.name, rec.version).set(1 if rec.state == VersionState.READY else 0)
        if rec.state == VersionState.READY and rec.loaded is not None:
            self.metrics.model_load_seconds.labels(rec.name).set(rec.loaded.load_seconds)

    def check_serving(self) -> None:
        if self.draining:
            raise shutting_down()

    def ready(self) -> bool:
        return not self.draining and self.registry.all_ready()

    def batchers(self) -> list[DynamicBatcher]:
        """The batchers of the versions loaded now."""
        found = (_BATCHER.get(rec.loaded) for rec in self.registry.records() if rec.loaded is not None)
        return [b for b in found if b is not None]

    async def close(self) -> None:
        """After the gRPC server stopped: fail anything still queued and stop the pools."""
        for batcher in self.batchers():
            batcher.close()
        self.predict_pool.shutdown(wait=False, cancel_futures=True)
        self.encode_pool.shutdown(wait=False, cancel_futures=True)
        self.explain_pool.shutdown(wait=False, cancel_futures=True)
        self.explainer.shutdown()

    def batcher(self, loaded: LoadedVersion) -> DynamicBatcher:
        """The version's dynamic batcher, made on first use (on the event loop)."""
        batcher = _BATCHER.get(loaded)
        if batcher is not None:
            return batcher
        return _BATCHER.get_or_make(loaded, lambda: self._make_batcher(loaded))

    def _make_batcher(self, loaded: LoadedVersion) -> DynamicBatcher:
        name = loaded.name
        batch_size = self.metrics.batch_size.labels(name)
        queue_stage = self.metrics.stage_duration.labels(name, "queue")
        onnx_stage = self.metrics.stage_duration.labels(name, "onnx")

        def observe(size: int, waits: list[float], ran: float) -> None:
            batch_size.observe(size)
            onnx_stage.observe(ran)
            for wait in waits:
                queue_stage.observe(wait)

        return DynamicBatcher(name, loaded.onnx.run, self.predict_pool, per_step=loaded.config.head == "per_step",
                              policy=self.batch_policy, observer=observe)

    # --- models ----------------------------------------------------------------------
    def list_models(self) -> list[ModelSummary]:
        by_name: dict[str, list[VersionRecord]] = {}
        for rec in self.registry.records():
            if rec.state != VersionState.UNLOADED:
                by_name.setdefault(rec.name, []).append(rec)
        out = []
        for name in sorted(by_name):
            recs = self.registry.model_records(name)
            loaded = next((r.loaded for r in reversed(recs) if r.loaded is not None), None)
            default = self.registry.default_version(name) or ""
            out.append(ModelSummary(
                name=name,
                task=loaded.config.task if loaded else "",
                input_kind=(loaded.config.input.kind if loaded else ""),
                default_version=default,
                versions=[r.version for r in recs],
                ready=bool(default),
            ))
        return out

    def get_model(self, name: str) -> ModelDescription:
        recs = self.registry.model_records(name)
        default = self.registry.default_version(name) or ""
        chosen = next((r for r in reversed(recs) if r.version == default), None) or next(
            (r for r in reversed(recs) if r.loaded is not None), None)
        loaded = chosen.loaded if chosen else None
        versions = [VersionInfo(r.version, r.state, r.reason,
                                r.loaded.parity_max_abs_diff if r.loaded else 0.0,
                                r.loaded.load_seconds if r.loaded else 0.0) for r in recs]
        s = self.settings
        base = ModelDescription(name=name, default_version=default, versions=versions, attribution_methods=[],
                                state_summaries=[], max_length=0, min_length=0, max_batch=s.max_batch,
                                max_explain_work=s.max_explain_work, max_steps=s.max_steps)
        if loaded is None:
            return base
        c = loaded.config
        return dataclasses.replace(
            base, attribution_methods=available_methods(), state_summaries=available_for(loaded),
            max_length=max_length_for(loaded, s.max_length), min_length=c.min_length or 1, task=c.task,
            labels=list(c.labels or []), horizon=c.horizon or 0, description=c.description,
            architecture=_architecture(loaded), input=_input_info(loaded))

    def model_ready(self, name: str, version: str) -> bool:
        """Unknown models and versions raise NOT_FOUND; known ones not serving now answer False."""
        try:
            self.registry.get(name, version)
        except ModelUnavailable:
            return False
        return not self.draining

    def model_tensors(self, name: str, version: str) -> ModelTensors:
        """The padded-batch tensors of ``infer_tensor``: ids [B,T] or features [B,T,F], lengths [B]."""
        loaded = self.registry.get(name, version)
        c = loaded.config
        x = TensorSpec("inputs", "int64", [-1, -1]) if c.is_tokens else \
            TensorSpec("inputs", "float32", [-1, -1, c.num_features])
        out_shape = list(expected_output_shape(c, -1, -1))  # -1: any batch, any T
        return ModelTensors(name=loaded.name, versions=[r.version for r in self.registry.model_records(name)],
                            platform="onnxruntime_onnx", inputs=[x, TensorSpec("lengths", "int64", [-1])],
                            outputs=[TensorSpec("outputs", "float32", out_shape)])

    # --- predictions -----------------------------------------------------------------
    async def _encode(self, loaded: LoadedVersion, items: list[SequenceInput],
                      wheres: list[Where] | None = None) -> list[EncodedSequence]:
        """Validate and tokenize; large requests off the event loop (tokenizing 32 texts of 1,000
        words takes ~0.4 s of Python), small ones inline (a thread hop would cost more)."""
        max_len = max_length_for(loaded, self.settings.max_length)

        def work() -> list[EncodedSequence]:
            t0 = time.perf_counter()
            out = [encode(loaded, item, max_length=max_len, where=wheres[i] if wheres else f"inputs[{i}]")
                   for i, item in enumerate(items)]
            self.metrics.stage_duration.labels(loaded.name, "tokenize").observe(time.perf_counter() - t0)
            return out

        if sum(_input_size(item) for item in items) <= _INLINE_ENCODE_ELEMENTS:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self.encode_pool, work)

    async def predict(self, name: str, version: str, inputs: list[SequenceInput]) -> PredictResult:
        self.check_serving()
        loaded = self.registry.get(name, version)
        if not inputs:
            raise InvalidInput("inputs is empty: send at least one sequence")
        if len(inputs) > self.settings.max_batch:
            raise InvalidInput(f"inputs has {len(inputs)} sequences; at most max_batch={self.settings.max_batch}")
        batcher = self.batcher(loaded)
        batcher.admit(len(inputs))  # a full queue refuses before any tokenizing
        encoded = await self._encode(loaded, inputs)
        outputs = await batcher.run([e.values for e in encoded])
        preds = [make_prediction(loaded.config, out, enc.tokens, enc.length)
                 for out, enc in zip(outputs, encoded, strict=True)]
        return PredictResult(loaded.name, loaded.version, preds)

    async def infer_tensor(self, name: str, version: str, inputs: np.ndarray, lengths: np.ndarray | None, *,
                           inputs_where: str = "input 'inputs'", lengths_where: str = "input 'lengths'",
                           ) -> tuple[LoadedVersion, np.ndarray]:
        """OIP ModelInfer: a padded batch in, the padded raw outputs out (same as the ONNX graph).
        ``*_where`` name the request tensors in errors (OIP fields, not the typed API's)."""
        self.check_serving()
        loaded = self.registry.get(name, version)
        lengths = check_batch_shape(loaded, inputs, lengths, max_batch=self.settings.max_batch,
                                    inputs_where=inputs_where, lengths_where=lengths_where)
        batcher = self.batcher(loaded)
        batcher.admit(inputs.shape[0])  # a full queue refuses before any validation work
        # Whole-batch numpy checks: no per-sequence objects, no token spans (docs/performance.md).
        t0 = time.perf_counter()
        values = check_batch_values(loaded, inputs, lengths, max_length_for(loaded, self.settings.max_length),
                                    inputs_where)
        tokenize = self._tokenize_stages.get(loaded.name)
        if tokenize is None:
            tokenize = self._tokenize_stages[loaded.name] = self.metrics.stage_duration.labels(loaded.name, "tokenize")
        tokenize.observe(time.perf_counter() - t0)
        # Rows are views; the batcher pads each collected batch afresh (padding here may hold anything).
        outs = await batcher.run([values[i, :n] for i, n in enumerate(lengths.tolist())])
        return loaded, _stack_outputs(outs, inputs.shape[1])

    # --- explanations ----------------------------------------------------------------
    async def explain(self, request: ExplainRequest, deadline: float | None = None) -> ExplainResult:
        """One explanation on the gradient pool; ``deadline`` is a time.monotonic() instant."""
        self.check_serving()
        loaded = self.registry.get(request.model_name, request.model_version)
        return await self.explainer.run(loaded, request, deadline)


def _architecture(loaded: LoadedVersion) -> ArchitectureInfo:
    c = loaded.config
    if c.is_graph:
        return ArchitectureInfo(kind="onnx", head=c.head, embedding_dim=loaded.attribution_width,
                                num_parameters=loaded.num_parameters,
                                recurrent_ops=list(loaded.replay.graph.recurrent_ops))
    a = c.family
    return ArchitectureInfo(kind="family", head=a.head, embedding_dim=a.embedding_dim,
                            num_parameters=loaded.num_parameters, input_layer=a.input_layer, cell=a.cell,
                            num_layers=a.num_layers, hidden_size=a.hidden_size, bidirectional=a.bidirectional)


def _input_info(loaded: LoadedVersion) -> InputInfo:
    i = loaded.config.input
    if isinstance(i, FeatureInput):
        return InputInfo(kind="features", feature_names=list(i.feature_names))
    return InputInfo(kind="tokens", tokenizer=i.tokenizer, vocab_size=loaded.vocab_size, pad_id=i.pad_id,
                     unk_id=i.unk_id, lowercase=i.lowercase, vocabulary=i.vocabulary,
                     special_tokens=loaded.tokenizer.special_tokens if loaded.tokenizer else [],
                     add_special_tokens=i.tokenizer == "huggingface" and i.add_special_tokens)


def _input_size(item: SequenceInput) -> int:
    """Characters or timesteps: roughly what encoding one input costs."""
    if item.text is not None:
        return len(item.text)
    if item.token_ids is not None:
        return int(np.size(item.token_ids))
    return int(item.features.shape[0]) if item.features is not None else 0


def _stack_outputs(outs: list[np.ndarray], t: int) -> np.ndarray:
    """Per-sequence outputs -> one padded batch: [B,C] / [B,H], or [B,t,C] zero past each length."""
    if outs[0].ndim == 2:  # per-step [T_i,C]
        padded = np.zeros((len(outs), t, outs[0].shape[-1]), dtype=np.float32)
        for i, o in enumerate(outs):
            padded[i, : o.shape[0]] = o
        return padded
    return np.stack(outs).astype(np.float32, copy=False)
