"""Explain one sequence: prediction, per-method attributions, their quality, state, timings.

``explain`` is the whole computation, synchronous, for one worker thread of the gradient
pool: tokenize, check every option, the explicit target and the work limit before any model
code runs, predict on ONNX Runtime, fill the default target, run each method (gradient
methods on torch, perturbation methods on ONNX Runtime), then faithfulness and state
summaries on request.
``ExplainRunner`` puts it on that pool from the event loop, bounds the queue, passes the
deadline and cancellation in, and records the stage and quality metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from . import summaries
from .carry import CarriedState, Chunk, check_state, require_streamable, run_chunks, stack_states, zero_state
from .config import Settings
from .errors import ResourceExhausted, shutting_down
from .explainers import DEFAULT_METHOD, plan_method
from .explainers import faithfulness as faith
from .explainers import integrated_gradients as ig
from .explainers.baselines import BaselineKind, BaselineSpec, resolve_baseline
from .explainers.control import Cancelled, WorkControl
from .explainers.options import MethodOptions, Plan, PlanContext
from .explainers.problem import Problem
from .explainers.result import Attribution
from .explainers.running import run_plan
from .explainers.targets import ResolvedTarget, TargetSpec, check_target, resolve_target
from .explainers.threads import GradientLanes, lent
from .inputs import SequenceInput, encode, max_length_for
from .metrics import Metrics
from .results import Prediction, make_prediction
from .tokenizers import TokenSpan
from .versions import LoadedVersion

STAGES = ("queue", "tokenize", "onnx", "forward", "gradient", "summary", "faithfulness")  # forward: from a carried state


@dataclass(frozen=True)
class ExplainRequest:
    model_name: str
    input: SequenceInput
    model_version: str = ""
    target: TargetSpec = field(default_factory=TargetSpec)
    methods: tuple[MethodOptions, ...] = ()  # empty: integrated_gradients with its defaults
    baseline_kind: BaselineKind = "default"
    baseline_custom: SequenceInput | None = None  # CUSTOM: same length as the input
    state: summaries.StateOptions | None = None
    faithfulness: bool = False
    request_id: str = ""
    initial_state: CarriedState | None = None  # a chunk of a longer sequence (docs/stateful.md)
    return_state: bool = False


@dataclass
class ExplainResult:
    request_id: str
    model_name: str
    model_version: str
    prediction: Prediction
    tokens: list[TokenSpan] | None
    target: ResolvedTarget
    attributions: list[Attribution]
    state: list[summaries.LayerStateResult] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)  # (stage, seconds), in order
    final_state: CarriedState | None = None
    step_offset: int = 0  # absolute step of the input's first timestep


class _Stages:
    """Seconds per stage, summed when a stage runs more than once (e.g. onnx)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def ordered(self) -> list[tuple[str, float]]:
        return [(s, self.seconds[s]) for s in STAGES if s in self.seconds]


def plan_methods(request: ExplainRequest, ctx: PlanContext, settings: Settings) -> list[Plan]:
    """Check every method's options and the request's total work against max_explain_work.

    An adaptive IG without an explicit step cap gets the work the other methods leave
    (shared equally), so it refines as far as the limit allows instead of being refused.
    """
    options = request.methods or (MethodOptions(DEFAULT_METHOD),)
    budgeted = [o.name == ig.NAME and ig.runs_adaptive(o) and not o.max_steps for o in options]
    plans: dict[int, Plan] = {i: plan_method(o, ctx) for i, o in enumerate(options) if not budgeted[i]}
    faith_work = faith.work(ctx.length, len(options)) if request.faithfulness else 0
    fixed = sum(p.work for p in plans.values()) + faith_work
    share = max(0, settings.max_explain_work - fixed) // max(1, sum(budgeted))
    for i, o in enumerate(options):
        if budgeted[i]:
            plans[i] = plan_method(o, dataclasses.replace(ctx, adaptive_budget=share))
    ordered = [plans[i] for i in range(len(options))]
    total = sum(p.work for p in ordered) + faith_work
    if total > settings.max_explain_work:
        parts = ", ".join(f"{p.method} {p.work}" for p in ordered)
        if faith_work:
            parts += f", faithfulness {faith_work}"
        raise ResourceExhausted(
            f"explanation needs {total} units of work (model rows x timesteps: {parts}) for "
            f"{ctx.length} timesteps; the limit is max_explain_work={settings.max_explain_work}. "
            "Ask for fewer steps or samples, fewer methods, or a shorter sequence")
    return ordered


def explain(loaded: LoadedVersion, request: ExplainRequest, settings: Settings,
            control: WorkControl | None = None) -> ExplainResult:
    """The whole explanation, on the calling thread (a gradient-pool worker in the server)."""
    control = control or WorkControl()
    config = loaded.config
    stages = _Stages()
    control.check("tokenization")
    with stages("tokenize"):
        max_len = max_length_for(loaded, settings.max_length)
        enc = encode(loaded, request.input, max_length=max_len, where="input")
        custom = None
        if request.baseline_custom is not None:
            custom = encode(loaded, request.baseline_custom, max_length=max_len,
                            where="baseline.custom").values
        baseline = resolve_baseline(config, BaselineSpec(request.baseline_kind, custom), enc.values)
        ctx = PlanContext(length=enc.length, num_features=config.num_features, is_tokens=config.is_tokens,
                          max_steps=settings.max_steps, baseline_kind=baseline.kind,
                          baseline_replaces_ids=baseline.replaces_ids,
                          # perturbations that cannot start from cached states run on ONNX Runtime
                          bidirectional=not config.starts_late)
        check_target(config, request.target, enc.length)  # explicit targets: refused before any model run
        plans = plan_methods(request, ctx, settings)
        if request.state is not None and request.state.enabled:
            summaries.resolve_for(loaded, request.state)  # bad names fail before any work
    stateful = request.initial_state is not None or request.return_state
    initial: CarriedState | None = None
    final: CarriedState | None = None
    if stateful:
        require_streamable(loaded)
        initial = (check_state(loaded, request.initial_state, "initial_state") if request.initial_state is not None
                   else zero_state(loaded))
        with stages("forward"):  # model.onnx takes no initial state: stateful.onnx or torch
            chunk = run_chunks(loaded, [Chunk(enc.values, initial)])[0]
            raw, final = chunk.output, chunk.state
    else:
        with stages("onnx"):
            # raw outputs of the sequence: [C], [T,C] or [H]
            raw = loaded.onnx.run(enc.values[None], np.array([enc.length], dtype=np.int64))[0]
    prediction = make_prediction(config, raw, enc.tokens, enc.length)
    carried = stack_states(loaded, [initial]) if initial is not None and (
        initial.steps > 0 or any(np.any(a) for a in initial.tensors.values())) else None
    target = resolve_target(config, request.target, raw, enc.length)
    state: list[summaries.LayerStateResult] = []
    if request.state is not None and request.state.enabled:
        control.check("state summaries")
        with stages("summary"):
            state = summaries.compute_state(
                loaded, enc.values, request.state,
                target.class_index if target.is_class else target.horizon_step,
                timestep=target.timestep if target.timestep >= 0 else None,
                max_state_elements=settings.max_state_elements,
                initial=[tuple(t.numpy() for t in layer) for layer in carried] if carried is not None else None)
    problem = Problem(loaded, enc.values, target, baseline, chunk_elements=settings.gradient_chunk_elements,
                      control=control, initial=carried)
    attributions = []
    for plan in plans:  # stage "gradient" is torch work, "onnx" ONNX Runtime work
        with stages("gradient" if plan.runtime == "torch" else "onnx"):
            attributions.append(run_plan(plan, problem))  # timed, endpoints and result built there
    if request.faithfulness:
        with stages("faithfulness"):
            qualities = faith.faithfulness(problem, [a.scores for a in attributions])
            attributions = [dataclasses.replace(att, faithfulness=quality)
                            for att, quality in zip(attributions, qualities, strict=True)]
    return ExplainResult(request.request_id, loaded.name, loaded.version, prediction, enc.tokens, target,
                         attributions, state, stages.ordered(), final_state=final,
                         step_offset=initial.steps if initial is not None else 0)


class _Job:
    """One queued explanation; ``started`` and ``abandoned`` are guarded by the runner's lock."""

    def __init__(self) -> None:
        self.control = WorkControl()
        self.submitted = time.perf_counter()
        self.started = False
        self.abandoned = False


class ExplainRunner:
    """Runs explanations on the gradient pool: never on the event loop, never more than
    ``explain_max_queue`` waiting for a worker (RESOURCE_EXHAUSTED beyond that)."""

    def __init__(self, settings: Settings, metrics: Metrics, pool: Executor, extra_lanes: int = 0) -> None:
        self._settings = settings
        self._metrics = metrics
        self._pool = pool
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        # Helper threads a lone explanation splits its gradient rows across (threads.py).
        self.lanes = GradientLanes(extra_lanes, self.contended) if extra_lanes > 0 else None

    @property
    def waiting(self) -> int:
        """Explanations queued for a worker."""
        return self._waiting

    @property
    def running(self) -> int:
        """Explanations being computed."""
        return self._running

    def contended(self) -> bool:
        """Another gradient job runs or waits: each keeps to one core."""
        return self._running > 1 or self._waiting > 0

    def shutdown(self) -> None:
        if self.lanes is not None:
            self.lanes.shutdown()

    async def run(self, loaded: LoadedVersion, request: ExplainRequest,
                  deadline: float | None) -> ExplainResult:
        """``deadline``: a time.monotonic() instant, or None."""
        limit = self._settings.explain_max_queue
        job = _Job()
        job.control.deadline = deadline
        with self._lock:
            if self._waiting >= limit:
                raise ResourceExhausted(
                    f"explanation queue is full ({self._waiting} waiting for a worker, "
                    f"explain_max_queue={limit}); retry with backoff")
            self._waiting += 1
        try:
            future = self._pool.submit(self._work, job, loaded, request)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._leave_queue(job)
            raise shutting_down() from None
        try:
            result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            job.control.cancelled.set()  # a running job stops at its next chunk
            self._leave_queue(job)
            raise
        self._observe(loaded.name, result)
        return result

    def _leave_queue(self, job: _Job) -> None:
        with self._lock:
            if not job.started and not job.abandoned:
                job.abandoned = True
                self._waiting -= 1

    def _work(self, job: _Job, loaded: LoadedVersion, request: ExplainRequest) -> ExplainResult:
        with self._lock:
            if job.abandoned:
                raise Cancelled("the call was cancelled while queued")
            job.started = True
            self._waiting -= 1
            self._running += 1
        queued = time.perf_counter() - job.submitted
        try:
            with lent(self.lanes):
                result = explain(loaded, request, self._settings, job.control)
        finally:
            with self._lock:
                self._running -= 1
        result.timings.insert(0, ("queue", queued))
        return result

    def _observe(self, model: str, result: ExplainResult) -> None:
        for stage, seconds in result.timings:
            self._metrics.stage_duration.labels(model, stage).observe(seconds)
        for att in result.attributions:
            rel = att.relative_delta
            if rel is not None:
                self._metrics.relative_delta.labels(model, att.method).observe(rel)
            if att.converged is False:
                self._metrics.unconverged.labels(model, att.method).inc()
