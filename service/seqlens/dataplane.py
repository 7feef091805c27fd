"""The core of the service: answers requests with domain types and knows nothing of gRPC.

The asyncio loop never runs model code: ONNX Runtime batches run in the prediction pool
(through one dynamic batcher per loaded version); gradient work runs in its own pool.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .batching import DynamicBatcher
from .config import Settings
from .errors import InvalidInput, ModelUnavailable
from .inputs import SequenceInput, encode, max_length_for
from .metrics import Metrics
from .registry import ModelRegistry, VersionRecord, VersionState
from .results import ModelDescription, ModelSummary, PredictResult, make_prediction
from .versions import LoadedVersion


class DataPlane:
    def __init__(self, registry: ModelRegistry, settings: Settings, metrics: Metrics) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.predict_pool = ThreadPoolExecutor(settings.predict_workers, thread_name_prefix="seqlens-onnx")
        self._batchers: dict[int, DynamicBatcher] = {}
        self.draining = False

    # --- lifecycle -------------------------------------------------------------------
    def on_version_change(self, rec: VersionRecord) -> None:
        """Registry listener: keep the ready gauge current and drop batchers of old loads."""
        self.metrics.model_ready.labels(rec.name, rec.version).set(1 if rec.state == VersionState.READY else 0)
        if rec.state == VersionState.READY and rec.loaded is not None:
            self.metrics.model_load_seconds.labels(rec.name).observe(rec.loaded.load_seconds)
        live = {id(r.loaded) for r in self.registry.records() if r.loaded is not None}
        for key in [k for k in self._batchers if k not in live]:
            self._batchers.pop(key, None)

    def check_serving(self) -> None:
        if self.draining:
            raise ModelUnavailable("server is shutting down; retry on another replica")

    def ready(self) -> bool:
        return not self.draining and self.registry.all_ready()

    async def close(self) -> None:
        for batcher in list(self._batchers.values()):
            await batcher.close()
        self.predict_pool.shutdown(wait=False, cancel_futures=True)

    def batcher(self, loaded: LoadedVersion) -> DynamicBatcher:
        key = id(loaded)
        batcher = self._batchers.get(key)
        if batcher is None:
            s = self.settings
            name = loaded.name

            def observe(size: int, queued: float, ran: float) -> None:
                self.metrics.batch_size.labels(name).observe(size)
                self.metrics.stage_duration.labels(name, "queue").observe(queued)
                self.metrics.stage_duration.labels(name, "onnx").observe(ran)

            batcher = DynamicBatcher(
                loaded.onnx, self.predict_pool, per_step=loaded.config.architecture.head == "per_step",
                max_batch=s.batch_max_size, max_delay_s=s.batch_max_delay_ms / 1000.0,
                max_queue=s.batch_max_queue, max_concurrent=s.predict_workers, observer=observe)
            self._batchers[key] = batcher
        return batcher

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
        from .explainers import available_methods
        from .summaries import available_summaries

        recs = self.registry.model_records(name)
        default = self.registry.default_version(name) or ""
        chosen = next((r for r in reversed(recs) if r.version == default), None) or next(
            (r for r in reversed(recs) if r.loaded is not None), None)
        loaded = chosen.loaded if chosen else None
        config = loaded.config if loaded else None
        return ModelDescription(
            name=name, default_version=default, records=recs, config=config,
            vocab_size=loaded.vocab_size if loaded else 0,
            num_parameters=sum(p.numel() for p in loaded.torch_module.parameters()) if loaded else 0,
            attribution_methods=available_methods(config) if config else [],
            state_summaries=available_summaries(config) if config else [],
            max_length=max_length_for(loaded, self.settings.max_length) if loaded else 0,
            max_batch=self.settings.max_batch, max_explain_work=self.settings.max_explain_work,
            max_steps=self.settings.max_steps)

    # --- predictions -----------------------------------------------------------------
    async def predict(self, name: str, version: str, inputs: list[SequenceInput]) -> PredictResult:
        self.check_serving()
        loaded = self.registry.get(name, version)
        if not inputs:
            raise InvalidInput("inputs is empty: send at least one sequence")
        if len(inputs) > self.settings.max_batch:
            raise InvalidInput(f"inputs has {len(inputs)} sequences; at most max_batch={self.settings.max_batch}")
        t0 = time.perf_counter()
        max_len = max_length_for(loaded, self.settings.max_length)
        encoded = [encode(loaded, item, max_length=max_len, where=f"inputs[{i}]") for i, item in enumerate(inputs)]
        self.metrics.stage_duration.labels(name, "tokenize").observe(time.perf_counter() - t0)
        outputs = await self.batcher(loaded).run([e.values for e in encoded])
        preds = [make_prediction(loaded.config, out, enc.tokens) for out, enc in zip(outputs, encoded)]
        for p, enc in zip(preds, encoded):
            p.length = enc.length
        return PredictResult(loaded.name, loaded.version, preds)

    async def infer_tensor(self, name: str, version: str, inputs: np.ndarray,
                           lengths: np.ndarray | None) -> tuple[LoadedVersion, np.ndarray]:
        """OIP ModelInfer: a padded batch in, the padded raw outputs out (same as the ONNX graph)."""
        self.check_serving()
        loaded = self.registry.get(name, version)
        config = loaded.config
        want_ndim = 2 if config.is_tokens else 3
        if inputs.ndim != want_ndim or inputs.shape[0] == 0 or inputs.shape[1] == 0:
            shape = "[B, T]" if config.is_tokens else f"[B, T, {config.num_features}]"
            raise InvalidInput(f"input 'inputs' has shape {list(inputs.shape)}; model {name!r} needs {shape}"
                               " with B, T >= 1")
        if config.is_tokens != np.issubdtype(inputs.dtype, np.integer):
            want = "INT64 token ids" if config.is_tokens else "FP32 features"
            raise InvalidInput(f"input 'inputs' is {inputs.dtype}; model {name!r} needs {want}")
        b, t = inputs.shape[:2]
        if b > self.settings.max_batch:
            raise InvalidInput(f"input 'inputs' has batch {b}; at most max_batch={self.settings.max_batch}")
        if lengths is None:
            lengths = np.full(b, t, dtype=np.int64)
        lengths = lengths.reshape(-1).astype(np.int64)
        if lengths.shape[0] != b or (lengths < 1).any() or (lengths > t).any():
            raise InvalidInput(f"input 'lengths' must be [{b}] integers in [1, {t}]")
        max_len = max_length_for(loaded, self.settings.max_length)
        seqs = []
        for i in range(b):
            n = int(lengths[i])
            row = inputs[i, :n]
            item = SequenceInput(token_ids=row) if config.is_tokens else SequenceInput(features=row)
            seqs.append(encode(loaded, item, max_length=max_len, where=f"inputs[{i}]").values)
        outs = await self.batcher(loaded).run(seqs)
        first = outs[0]
        if config.architecture.head == "per_step":
            padded = np.zeros((b, t, first.shape[-1]), dtype=np.float32)
            for i, o in enumerate(outs):
                padded[i, : o.shape[0]] = o
            return loaded, padded
        return loaded, np.stack(outs).astype(np.float32)
