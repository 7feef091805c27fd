"""Stateful calls: chunks of sequences with a client-held or a server-held state.

Knows nothing of gRPC. Chunks of different sequences are batched by a per-version
``ChunkBatcher`` (the dynamic batcher with a torch step instead of ONNX Runtime: the exported
graphs take no initial state); server-held states live in a ``SequenceTable``.
Design and guarantees: docs/stateful.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batching import BatchObserver, BatchPolicy, DynamicBatcher
from .carry import CarriedState, Chunk, ChunkResult, check_state, require_streamable, run_chunks, zero_state
from .config import Settings
from .errors import FailedPrecondition, InvalidInput, ModelNotFound, ModelUnavailable, shutting_down
from .explain import ExplainRequest, ExplainResult
from .inputs import EncodedSequence, SequenceInput, encode, max_length_for
from .metrics import Metrics
from .registry import ModelRegistry
from .results import Prediction, PredictResult, make_prediction
from .sequences import LiveSequence, SequenceId, SequenceTable, describe
from .tensor_inputs import check_batch_shape
from .version_cache import VersionCache
from .versions import LoadedVersion

MAX_ID_CHARS = 256  # ids are table keys and live in tombstones: bounded


class ChunkBatcher(DynamicBatcher):
    """The dynamic batcher over ``Chunk`` items: one torch pass per collected batch."""

    def __init__(self, loaded: LoadedVersion, executor: Executor, policy: BatchPolicy,
                 observer: BatchObserver | None) -> None:
        super().__init__(loaded.name, loaded.onnx.run, executor,
                         per_step=loaded.config.head == "per_step", policy=policy, observer=observer)
        self._loaded = loaded

    def _compute(self, seqs: list[Any]) -> tuple[list[Any], float]:
        t0 = time.perf_counter()
        return run_chunks(self._loaded, seqs), time.perf_counter() - t0

    async def step(self, chunks: list[Chunk]) -> list[ChunkResult]:
        return await self.run_items(chunks)


_CHUNK_BATCHER: VersionCache[ChunkBatcher] = VersionCache("chunk batcher")  # one per loaded version


@dataclass(frozen=True)
class SequenceRef:
    """A server-held sequence named by a call: its id and the start/end flags."""

    seq_id: SequenceId
    start: bool = False
    end: bool = False


@dataclass
class StatefulPredictResult:
    result: PredictResult
    states: list[CarriedState]  # final state of each input


@dataclass
class ChunkOutcome:
    model_name: str
    model_version: str
    prediction: Prediction | None  # None: a message that only ended the sequence
    raw: np.ndarray | None  # the chunk's raw outputs (OIP)
    offset: int  # absolute step of the chunk's first timestep
    steps: int  # timesteps consumed, this chunk included
    ended: bool


class StreamingPlane:
    def __init__(self, registry: ModelRegistry, settings: Settings, metrics: Metrics, executor: Executor,
                 policy: BatchPolicy) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self._executor = executor
        self._policy = policy
        self.table = SequenceTable(max_live=settings.max_live_sequences,
                                   idle_timeout_s=settings.sequence_idle_timeout_s,
                                   max_state_bytes=settings.max_sequence_state_bytes, on_evict=self._evicted)
        self.closing = asyncio.Event()
        self._sweeper: asyncio.TimerHandle | None = None

    # --- plumbing ----------------------------------------------------------------------
    def batcher(self, loaded: LoadedVersion) -> ChunkBatcher:
        found = _CHUNK_BATCHER.get(loaded)
        if found is not None:
            return found
        size = self.metrics.batch_size.labels(loaded.name)
        return _CHUNK_BATCHER.get_or_make(loaded, lambda: ChunkBatcher(
            loaded, self._executor, self._policy, lambda n, _waits, _ran: size.observe(n)))

    def _check_serving(self) -> None:
        if self.closing.is_set():
            raise shutting_down()

    def _evicted(self, model: str, reason: str) -> None:
        self.metrics.sequence_evictions.labels(model, reason).inc()
        self._publish(model)

    def _publish(self, model: str) -> None:
        self.metrics.live_sequences.labels(model).set(self.table.count(model))
        self.metrics.sequence_state_bytes.set(self.table.state_bytes)

    def _encode(self, loaded: LoadedVersion, item: SequenceInput, where: str) -> EncodedSequence:
        # A chunk continues a sequence: min_length is the whole input's bound (README, "Stateful sequences").
        return encode(loaded, item, max_length=max_length_for(loaded, self.settings.max_length), where=where,
                      whole=False)

    def _schedule_sweep(self) -> None:
        """Evict idle sequences and those of unloaded versions on the server's clock, while any live."""
        if self._sweeper is not None or len(self.table) == 0 or self.closing.is_set():
            return
        interval = min(5.0, max(0.005, self.settings.sequence_idle_timeout_s / 4))
        self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        self.table.sweep()
        served: dict[tuple[str, str], bool] = {}  # one registry look-up per (model, version) per sweep

        def is_served(model: str, version: str) -> bool:
            if (model, version) not in served:
                served[model, version] = self._served(model, version)
            return served[model, version]

        self.table.drop_unserved(is_served, self._serving)
        self._schedule_sweep()

    def _served(self, model: str, version: str) -> bool:
        try:
            self.registry.get(model, version)
        except (ModelNotFound, ModelUnavailable):
            return False
        return True

    def _serving(self, model: str) -> str | None:
        try:
            return self.registry.default_version(model)
        except ModelNotFound:
            return None

    def close(self) -> None:
        """Draining: refuse new chunks, drop every live sequence (state is lost on restart)."""
        self.closing.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        models = {s.model for s in self.table.live()}
        self.table.close()
        for m in models:
            self._publish(m)

    # --- client-held state -------------------------------------------------------------
    async def predict(self, name: str, version: str, inputs: list[SequenceInput],
                      states: list[CarriedState | None]) -> StatefulPredictResult:
        """Predict from the given initial states (None: zero) and return the final states."""
        self._check_serving()
        loaded = self.registry.get(name, version)
        require_streamable(loaded)
        if not inputs:
            raise InvalidInput("inputs is empty: send at least one sequence")
        if len(inputs) > self.settings.max_batch:
            raise InvalidInput(f"inputs has {len(inputs)} sequences; at most max_batch={self.settings.max_batch}")
        if len(states) != len(inputs):
            raise InvalidInput(f"states has {len(states)} entries; give one per input ({len(inputs)}) or none")
        start = time.perf_counter()
        batcher = self.batcher(loaded)
        batcher.admit(len(inputs))
        encoded = [self._encode(loaded, item, f"inputs[{i}]") for i, item in enumerate(inputs)]
        initial = [check_state(loaded, s, f"states[{i}]") if s is not None else zero_state(loaded)
                   for i, s in enumerate(states)]
        results = await batcher.step([Chunk(e.values, s) for e, s in zip(encoded, initial)])
        preds = []
        for enc, res in zip(encoded, results):
            p = make_prediction(loaded.config, res.output, enc.tokens, enc.length)
            preds.append(p)
        self.metrics.chunk_duration.labels(name, "client").observe(time.perf_counter() - start)
        return StatefulPredictResult(PredictResult(loaded.name, loaded.version, preds), [r.state for r in results])

    # --- server-held sequences ---------------------------------------------------------
    async def chunk(self, name: str, version: str, ref: SequenceRef, item: SequenceInput | None,
                    where: str = "input") -> ChunkOutcome:
        """Run one chunk of a server-held sequence (or only end it when ``item`` is None)."""
        self._check_serving()
        _check_id(ref.seq_id)
        start = time.perf_counter()
        encoded: EncodedSequence | None
        if ref.start:
            loaded = self.registry.get(name, version)
            require_streamable(loaded)
            if item is None:
                raise InvalidInput(f"{where} is empty: the first chunk of a sequence needs timesteps")
            encoded = self._encode(loaded, item, where)  # a bad first chunk starts nothing
            self.batcher(loaded).admit(1)
            seq = self.table.start(name, ref.seq_id, zero_state(loaded))
            self._publish(name)
            self._schedule_sweep()
        else:
            seq = self.table.get(name, ref.seq_id)
            loaded = self._version_of(seq, version)
            encoded = self._encode(loaded, item, where) if item is not None else None
        seq.users += 1
        try:
            async with seq.lock:  # FIFO: chunks of one sequence run one at a time, in order
                if seq.gone is not None:  # evicted or restarted while this chunk waited
                    raise FailedPrecondition(self.table.why_gone(name, ref.seq_id) or (
                        f"sequence {describe(ref.seq_id)} of model {name!r} was restarted (a chunk with sequence "
                        "start) while this chunk waited"))
                offset = seq.state.steps
                outcome = ChunkOutcome(loaded.name, loaded.version, None, None, offset, offset, ref.end)
                if encoded is not None:
                    result = (await self.batcher(loaded).step([Chunk(encoded.values, seq.state)]))[0]
                    self.table.update(seq, result.state)
                    pred = make_prediction(loaded.config, result.output, encoded.tokens, encoded.length)
                    outcome.prediction, outcome.raw, outcome.steps = pred, result.output, result.state.steps
                if ref.end:
                    self.table.end(seq)
        finally:
            self._release(seq, name)
        self.metrics.chunk_duration.labels(name, "server").observe(time.perf_counter() - start)
        return outcome

    async def unary_chunk(self, name: str, version: str, ref: SequenceRef, inputs: list[SequenceInput], *,
                          with_state: bool) -> ChunkOutcome:
        """``Predict`` with ``sequence``: one chunk (or none, to only end the sequence)."""
        if with_state:
            raise InvalidInput("a server-held sequence keeps its state on the server: leave states and "
                               "return_state unset")
        if len(inputs) > 1 or (not inputs and not (ref.end and not ref.start)):
            raise InvalidInput(f"a sequence call carries one chunk (or none, to only end it): inputs has "
                               f"{len(inputs)} sequences")
        return await self.chunk(name, version, ref, inputs[0] if inputs else None, "inputs[0]")

    async def explain_chunk(self, request: ExplainRequest, ref: SequenceRef,
                            run: Callable[[ExplainRequest], Awaitable[ExplainResult]]) -> tuple[ExplainResult, bool]:
        """Explain the next chunk of a server-held sequence from its state (held fixed), and
        advance the sequence by the chunk. Returns the result and whether the sequence ended."""
        self._check_serving()
        if request.initial_state is not None:
            raise InvalidInput("initial_state and sequence are exclusive: a server-held sequence has its own state")
        _check_id(ref.seq_id)
        name = request.model_name
        if ref.start:
            loaded = self.registry.get(name, request.model_version)
            require_streamable(loaded)
            self._encode(loaded, request.input, "input")  # a bad first chunk starts nothing
            seq = self.table.start(name, ref.seq_id, zero_state(loaded))
            self._publish(name)
            self._schedule_sweep()
        else:
            seq = self.table.get(name, ref.seq_id)
            loaded = self._version_of(seq, request.model_version)
        seq.users += 1
        try:
            async with seq.lock:
                if seq.gone is not None:
                    raise FailedPrecondition(self.table.why_gone(name, ref.seq_id) or (
                        f"sequence {describe(ref.seq_id)} of model {name!r} was restarted while this call waited"))
                result = await run(dataclasses.replace(request, model_version=loaded.version,
                                                       initial_state=seq.state, return_state=True))
                assert result.final_state is not None
                self.table.update(seq, result.final_state)
                if ref.end:
                    self.table.end(seq)
        finally:
            self._release(seq, name)
        return result, ref.end

    def _release(self, seq: LiveSequence, name: str) -> None:
        """A call on ``seq`` is over: it may be evicted again once idle."""
        seq.users -= 1
        seq.last_used = self.table.clock()
        self._publish(name)

    def _version_of(self, seq: LiveSequence, pinned: str) -> LoadedVersion:
        """The version holding ``seq``; a sequence whose version stopped serving is dropped."""
        if pinned and pinned != seq.version:
            raise FailedPrecondition(
                f"sequence {describe(seq.seq_id)} of model {seq.model!r} runs on version {seq.version!r}; this "
                f"call pins version {pinned!r}: a state does not carry across versions")
        serving = self._serving(seq.model)
        if not self._served(seq.model, seq.version) or (not pinned and serving != seq.version):
            self.table.drop_version(seq, serving)
            self._publish(seq.model)
            self.table.get(seq.model, seq.seq_id)  # raises with the reason
        return self.registry.get(seq.model, seq.version)

    async def infer(self, name: str, version: str, ref: SequenceRef, inputs: np.ndarray,
                    lengths: np.ndarray | None, *, inputs_where: str = "input 'inputs'",
                    lengths_where: str = "input 'lengths'") -> tuple[str, np.ndarray]:
        """OIP ModelInfer with Triton's sequence parameters: a batch of one chunk ``[1,T(,F)]``."""
        if inputs.ndim < 2 or inputs.shape[0] != 1:
            raise InvalidInput(f"{inputs_where} has shape {list(inputs.shape)}; a sequence request (sequence_id) "
                               "carries one chunk: batch size 1")
        checked = check_batch_shape(self.registry.get(name, version), inputs, lengths, max_batch=1,
                                    inputs_where=inputs_where, lengths_where=lengths_where)
        t, n = int(inputs.shape[1]), int(checked[0])
        row = inputs[0, :n]
        is_tokens = np.issubdtype(row.dtype, np.integer)
        item = SequenceInput(token_ids=row) if is_tokens else SequenceInput(features=row)
        out = await self.chunk(name, version, ref, item, where="inputs")
        assert out.raw is not None
        raw = out.raw
        if raw.ndim == 2:  # per-step [n,C] -> [1,t,C], zero past the length
            padded = np.zeros((1, t, raw.shape[1]), dtype=np.float32)
            padded[0, :n] = raw
            return out.model_version, padded
        return out.model_version, raw[None].astype(np.float32, copy=False)


def _check_id(seq_id: SequenceId) -> None:
    if seq_id in (0, ""):
        raise InvalidInput("sequence id is empty (or 0): give a non-empty string or a non-zero uint64")
    if isinstance(seq_id, str) and len(seq_id) > MAX_ID_CHARS:
        raise InvalidInput(f"sequence id has {len(seq_id)} characters; at most {MAX_ID_CHARS}")
