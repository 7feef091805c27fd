"""A differentiable torch replay of an ONNX graph: the gradient path of ``kind: onnx`` versions.

The graph is parsed once into a plan of node closures (``_Plan``); ``ReplayGraph.run`` walks
the plan with torch ops, so autograd gives gradients through ``Loop``, ``Scan``, ``If`` and
the recurrent ops. Loading checks the safety rules (op allow-list, node count, initializer
bytes, nesting depth, no external data); running bounds loop trips. See docs/custom-graphs.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import onnx
import torch
from onnx import TensorProto, helper
from torch import Tensor, nn

from ..errors import ModelConfigError, ResourceExhausted
from .replay_ops import OPS, OpContext, attribute_values, tensor_of
from .replay_rnn import Recorder, build_recurrent

if TYPE_CHECKING:
    from ..schema import ModelConfig

MIN_OPSET = 17
CONTROL_OPS = ("Loop", "Scan", "If")
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted({*OPS, "Constant", *CONTROL_OPS, *RECURRENT_OPS}))


@dataclass(frozen=True)
class ReplayLimits:
    """What a graph may ask for. A version breaking one is FAILED with the rule named."""

    max_nodes: int = 20_000  # all nodes, subgraphs included
    max_initializer_bytes: int = 1 << 30  # initializers and constant tensors, subgraphs included
    max_depth: int = 4  # nesting of subgraphs (a Loop body is depth 1)
    max_loop_iterations: int = 1 << 20  # per run: trip counts multiplied through nested loops


_ITEMSIZE: dict[int, int] = {TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.INT64: 8, TensorProto.INT32: 4,
             TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.INT16: 2, TensorProto.INT8: 1,
             TensorProto.UINT8: 1, TensorProto.BOOL: 1}


def _declared_bytes(t: TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= max(int(d), 0)
    return n * _ITEMSIZE.get(t.data_type, 8)


def _is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL or len(t.external_data) > 0


class _RunState:
    """Per ``run`` call: the recorder and the loop-trip budget in use."""

    __slots__ = ("limits", "multiplier", "recorder")

    def __init__(self, limits: ReplayLimits, recorder: Recorder | None) -> None:
        self.limits = limits
        self.recorder = recorder
        self.multiplier = 1  # product of the trip counts of the loops entered

    def enter(self, trips: int, where: str) -> int:
        saved = self.multiplier
        total = saved * max(trips, 1)
        if total > self.limits.max_loop_iterations:
            raise ResourceExhausted(
                f"{where}: loop trip count {trips} (x{saved} from enclosing loops) exceeds the replay's bound "
                f"of {self.limits.max_loop_iterations} iterations per run")
        self.multiplier = total
        return saved


Env = dict[str, Any]
_TRUE = torch.tensor(True)  # a Loop body's condition input while it runs


@dataclass
class _Step:
    fn: Callable[..., Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    deps: frozenset[str]  # inputs plus the outer names its subgraphs read
    op: str
    where: str
    mode: int  # 0 plain fn(*args); 1 recurrent fn(*args, recorder=); 2 control fn(env, run, *args)


class _Plan:
    """One graph (the main graph or a subgraph) compiled into steps."""

    def __init__(self, graph: onnx.GraphProto, builder: _Builder, depth: int, label: str) -> None:
        self.inputs = [i.name for i in graph.input]
        self.outputs = [o.name for o in graph.output]
        self.consts: Env = {}
        for init in graph.initializer:
            builder.count_tensor(init, label)
            self.consts[init.name] = tensor_of(init)
        if len(graph.sparse_initializer):
            raise ModelConfigError(f"{label}: sparse initializers are not supported by the replay")
        self.steps: list[_Step] = []
        defined = set(self.inputs) | set(self.consts)
        reads: set[str] = set()
        for index, node in enumerate(graph.node):
            where = f"node {index} {node.name!r} ({node.op_type})" + (f" in {label}" if depth else "")
            step = builder.step(node, where, depth)
            if step is None:  # a Constant, folded
                continue
            self.steps.append(step)
            reads |= step.deps
            defined |= set(step.outputs)
        reads |= set(self.outputs)
        self.free = frozenset(n for n in reads - defined if n)  # read from the enclosing graph
        self.producer = {name: i for i, s in enumerate(self.steps) for name in s.outputs if name}
        self._needed: dict[tuple[tuple[str, ...], frozenset[str]], list[_Step]] = {}
        self._lock = threading.Lock()

    def needed(self, outputs: tuple[str, ...], given: frozenset[str]) -> list[_Step]:
        """The steps that ``outputs`` depend on, in order, not computing the ``given`` names."""
        key = (outputs, given)
        cached = self._needed.get(key)
        if cached is not None:
            return cached
        marked: set[int] = set()
        todo = [n for n in outputs if n not in given]
        while todo:
            name = todo.pop()
            i = self.producer.get(name)
            if i is None or i in marked:
                continue
            marked.add(i)
            todo.extend(d for d in self.steps[i].deps if d not in given)
        steps = [s for i, s in enumerate(self.steps) if i in marked]
        with self._lock:
            self._needed[key] = steps
        return steps

    def execute(self, env: Env, steps: Iterable[_Step], run: _RunState) -> None:
        for step in steps:
            try:
                args = [env[n] if n else None for n in step.inputs]
            except KeyError as exc:
                raise ModelConfigError(f"{step.where}: input {exc.args[0]!r} is not computed by the graph") from None
            if step.mode == 0:
                res = step.fn(*args)
            elif step.mode == 1:
                res = step.fn(*args, recorder=run.recorder)
            else:
                res = step.fn(env, run, *args)
            for name, value in zip(step.outputs, res, strict=False):
                if name:
                    env[name] = value

    def bind(self, outer: Env) -> Env:
        """The names a run of this subgraph starts with: what it reads outside, its constants."""
        env: Env = {n: outer[n] for n in self.free if n in outer}
        env.update(self.consts)
        return env

    def call(self, base: Env, run: _RunState, values: list[Any]) -> list[Any]:
        """Run the whole subgraph from ``bind``'s names with its inputs bound to ``values``."""
        env = base.copy()
        env.update(zip(self.inputs, values, strict=False))
        self.execute(env, self.steps, run)
        return [env[n] for n in self.outputs]


class _Builder:
    """Turns nodes into steps, enforcing the allow-list and the limits as it goes."""

    def __init__(self, limits: ReplayLimits) -> None:
        self.limits = limits
        self.nodes = 0
        self.bytes = 0

    def count_tensor(self, t: TensorProto, where: str) -> None:
        if _is_external(t):
            raise ModelConfigError(f"{where}: tensor {t.name!r} refers to external data; "
                                   "export one self-contained model.onnx")
        self.bytes += _declared_bytes(t)
        if self.bytes > self.limits.max_initializer_bytes:
            raise ModelConfigError(f"graph initializers exceed {self.limits.max_initializer_bytes} bytes "
                                   f"(max_initializer_bytes) at tensor {t.name!r}")

    def step(self, node: onnx.NodeProto, where: str, depth: int) -> _Step | None:
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise ModelConfigError(f"the graph has more than {self.limits.max_nodes} nodes (max_nodes), "
                                   "subgraphs included")
        op = node.op_type
        if node.domain not in ("", "ai.onnx") or op not in SUPPORTED_OPS:
            domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
            raise ModelConfigError(f"unsupported ONNX op '{domain}{op}' ({where}); "
                                   f"supported: {', '.join(SUPPORTED_OPS)}")
        for attr in node.attribute:
            if attr.type == helper.AttributeProto.TENSOR:
                self.count_tensor(attr.t, where)
            elif attr.type in (helper.AttributeProto.SPARSE_TENSOR, helper.AttributeProto.SPARSE_TENSORS):
                raise ModelConfigError(f"{where}: sparse tensor attributes are not supported by the replay")
        attrs = attribute_values(node)
        inputs, outputs = tuple(node.input), tuple(node.output)
        deps = frozenset(n for n in inputs if n)
        if op == "Constant":
            return self._constant(attrs, outputs, where)
        if op in CONTROL_OPS:
            if depth + 1 > self.limits.max_depth:
                raise ModelConfigError(f"{where}: subgraphs nest deeper than {self.limits.max_depth} "
                                       "levels (max_depth)")
            fn, free = _control(op, attrs, self, depth + 1, where, len(outputs))
            return _Step(fn, inputs, outputs, deps | free, op, where, 2)
        if op in RECURRENT_OPS:
            want_cell = len(outputs) > 2 and bool(outputs[2])
            return _Step(build_recurrent(op, attrs, where, want_cell), inputs, outputs, deps, op, where, 1)
        fn = OPS[op](attrs, OpContext(where))
        if op == "Split":
            fn.n_outputs = len(outputs)  # type: ignore[attr-defined]
        return _Step(fn, inputs, outputs, deps, op, where, 0)

    def _constant(self, attrs: dict[str, Any], outputs: tuple[str, ...], where: str) -> _Step:
        if "value" in attrs:
            value = attrs["value"]
        elif "value_float" in attrs:
            value = torch.tensor(float(attrs["value_float"]), dtype=torch.float32)
        elif "value_floats" in attrs:
            value = torch.tensor([float(v) for v in attrs["value_floats"]], dtype=torch.float32)
        elif "value_int" in attrs:
            value = torch.tensor(int(attrs["value_int"]), dtype=torch.int64)
        elif "value_ints" in attrs:
            value = torch.tensor([int(v) for v in attrs["value_ints"]], dtype=torch.int64)
        else:
            raise ModelConfigError(f"{where}: Constant kind {sorted(attrs)} is not supported by the replay")
        return _Step(lambda: (value,), (), outputs, frozenset(), "Constant", where, 0)


def _control(op: str, attrs: dict[str, Any], builder: _Builder, depth: int, where: str,
             n_outputs: int) -> tuple[Callable[..., Any], frozenset[str]]:
    if op == "If":
        then_p = _Plan(attrs["then_branch"], builder, depth, f"{where} then_branch")
        else_p = _Plan(attrs["else_branch"], builder, depth, f"{where} else_branch")

        def run_if(env: Env, run: _RunState, cond: Tensor) -> list[Any]:
            branch = then_p if bool(cond.reshape(-1)[0]) else else_p
            return branch.call(branch.bind(env), run, [])
        return run_if, then_p.free | else_p.free

    body = _Plan(attrs["body"], builder, depth, f"{where} body")
    if op == "Loop":
        n_carried = len(body.inputs) - 2

        def run_loop(env: Env, run: _RunState, m: Tensor | None, cond: Tensor | None, *init: Any) -> list[Any]:
            trips = int(m.item()) if m is not None else None
            saved = run.enter(trips if trips is not None else 1, where)
            carried = list(init)
            scans: list[list[Any]] = [[] for _ in range(len(body.outputs) - 1 - n_carried)]
            keep = True if cond is None else bool(cond.reshape(-1)[0])
            i = 0
            base = body.bind(env)
            try:
                while keep and (trips is None or i < trips):
                    if trips is None and (i + 1) * saved > run.limits.max_loop_iterations:
                        raise ResourceExhausted(f"{where}: loop ran past the replay's bound of "
                                                f"{run.limits.max_loop_iterations} iterations per run")
                    outs = body.call(base, run, [torch.scalar_tensor(i, dtype=torch.int64), _TRUE, *carried])
                    keep = bool(outs[0].reshape(-1)[0])
                    carried = outs[1:1 + n_carried]
                    for acc, v in zip(scans, outs[1 + n_carried:], strict=True):
                        acc.append(v)
                    i += 1
            finally:
                run.multiplier = saved
            stacked = [torch.stack(acc) if acc else torch.empty(0) for acc in scans]
            return [*carried, *stacked]
        return run_loop, body.free

    n_scan = int(attrs["num_scan_inputs"])
    n_state = len(body.inputs) - n_scan
    in_axes = list(attrs.get("scan_input_axes", [0] * n_scan))
    in_dirs = list(attrs.get("scan_input_directions", [0] * n_scan))
    n_scan_out = len(body.outputs) - n_state
    out_axes = list(attrs.get("scan_output_axes", [0] * n_scan_out))
    out_dirs = list(attrs.get("scan_output_directions", [0] * n_scan_out))

    def run_scan(env: Env, run: _RunState, *args: Any) -> list[Any]:
        states, xs = list(args[:n_state]), list(args[n_state:])
        axes = [a + x.dim() if a < 0 else a for a, x in zip(in_axes, xs, strict=True)]
        steps = int(xs[0].shape[axes[0]])
        saved = run.enter(steps, where)
        outs_acc: list[list[Tensor]] = [[] for _ in range(n_scan_out)]
        base = body.bind(env)
        try:
            for t in range(steps):
                slices = [x.select(a, steps - 1 - t if d else t) for x, a, d in zip(xs, axes, in_dirs, strict=True)]
                outs = body.call(base, run, [*states, *slices])
                states = outs[:n_state]
                for acc, v in zip(outs_acc, outs[n_state:], strict=True):
                    acc.append(v)
        finally:
            run.multiplier = saved
        stacked = []
        for acc, a, d in zip(outs_acc, out_axes, out_dirs, strict=True):
            seq = acc[::-1] if d else acc
            rank = seq[0].dim() + 1 if seq else 1
            stacked.append(torch.stack(seq, a + rank if a < 0 else a) if seq else torch.empty(0))
        return [*states, *stacked]
    return run_scan, body.free


def _walk_ops(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for g in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _walk_ops(g)


class ReplayGraph:
    """An ONNX model parsed once into torch closures. Raises ``ModelConfigError`` naming the rule
    a hostile or unsupported graph breaks."""

    def __init__(self, model: onnx.ModelProto, limits: ReplayLimits | None = None) -> None:
        self.limits = limits or ReplayLimits()
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset < MIN_OPSET:
            raise ModelConfigError(f"model.onnx uses opset {opset}; the replay needs opset >= {MIN_OPSET}")
        if len(model.functions):
            raise ModelConfigError("model.onnx defines local functions; the replay does not run them "
                                   "(export with them inlined)")
        # Allow-list first, over every node: the message names the first op outside it.
        for index, node in enumerate(_walk_ops(model.graph)):
            if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
                domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
                raise ModelConfigError(f"unsupported ONNX op '{domain}{node.op_type}' (node {index} "
                                       f"{node.name!r}); supported: {', '.join(SUPPORTED_OPS)}")
        builder = _Builder(self.limits)
        self.plan = _Plan(model.graph, builder, 0, "graph")
        self.num_nodes = builder.nodes
        self.initializer_bytes = builder.bytes
        self.input_names = [n for n in self.plan.inputs if n not in self.plan.consts]
        self.output_names = list(self.plan.outputs)
        self.recurrent_ops = [s.op for s in self.plan.steps if s.op in RECURRENT_OPS]
        self.num_parameters = sum(int(t.numel()) for t in self.plan.consts.values() if t.is_floating_point())

    def producer_op(self, name: str) -> _Step | None:
        i = self.plan.producer.get(name)
        return self.plan.steps[i] if i is not None else None

    def consumers(self, name: str, outputs: Iterable[str], given: Iterable[str] = ()) -> list[_Step]:
        """Steps needed for ``outputs`` (not computing ``given``) that read ``name``."""
        steps = self.plan.needed(tuple(outputs), frozenset(given))
        return [s for s in steps if name in s.deps]

    def run(self, feeds: Mapping[str, Tensor], outputs: Iterable[str] | None = None,
            overrides: Mapping[str, Tensor] | None = None, recorder: Recorder | None = None) -> dict[str, Tensor]:
        """Evaluate the graph. ``overrides`` replace tensors by name (gradients flow from them);
        only the nodes the requested ``outputs`` need run."""
        names = tuple(outputs) if outputs is not None else tuple(self.output_names)
        overrides = overrides or {}
        env: Env = dict(self.plan.consts)
        env.update(feeds)
        env.update(overrides)
        steps = self.plan.needed(names, frozenset(overrides) | frozenset(feeds))
        self.plan.execute(env, steps, _RunState(self.limits, recorder))
        missing = [n for n in names if n not in env]
        if missing:
            raise ModelConfigError(f"the graph does not compute {missing}")
        return {n: env[n] for n in names}


@dataclass(frozen=True)
class GraphNames:
    """Which graph tensors play which part (``model.yaml`` ``graph:``)."""

    inputs: str
    lengths: str
    output: str
    attribute_at: str  # "input" or a tensor name (the embedding Gather's output)


class ReplayModule(nn.Module):
    """The replay behind the interface explainers use on the built-in family:
    ``forward(inputs, lengths)``, ``embed(ids)`` and ``forward_from_embedding(emb, lengths)``."""

    def __init__(self, graph: ReplayGraph, config: ModelConfig | GraphNames) -> None:
        super().__init__()
        self.graph = graph
        if isinstance(config, GraphNames):
            self.names = config
        else:
            spec = config.graph
            if spec is None:
                raise ModelConfigError("a ReplayModule needs a model.yaml with a graph: section")
            self.names = GraphNames(spec.inputs, spec.lengths, spec.output, spec.attribute_at)
        self.at_input = self.names.attribute_at == "input"
        self.eval()

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        n = self.names
        return self.graph.run({n.inputs: inputs, n.lengths: lengths}, [n.output])[n.output]

    def run(self, inputs: Tensor, lengths: Tensor, outputs: list[str],
            recorder: Recorder | None = None) -> dict[str, Tensor]:
        n = self.names
        return self.graph.run({n.inputs: inputs, n.lengths: lengths}, outputs, recorder=recorder)

    def embed(self, inputs: Tensor) -> Tensor:
        """Token ids [B,T] -> the attribution tensor [B,T,E]; features pass through."""
        if self.at_input:
            return inputs
        n = self.names
        lengths = torch.full((inputs.shape[0],), inputs.shape[1], dtype=torch.int64)
        return self.graph.run({n.inputs: inputs, n.lengths: lengths}, [n.attribute_at])[n.attribute_at]

    def forward_from_embedding(self, emb: Tensor, lengths: Tensor) -> Tensor:
        if self.at_input:
            return self.forward(emb, lengths)
        n = self.names
        # The token ids are only read through the embedding (checked at load), and by shape ops:
        # placeholder ids of the right shape stand in for them.
        ids = torch.zeros(emb.shape[:2], dtype=torch.int64)
        return self.graph.run({n.inputs: ids, n.lengths: lengths}, [n.output],
                              overrides={n.attribute_at: emb})[n.output]


SHAPE_ONLY_OPS = ("Shape", "Size")


def check_attribution_point(graph: ReplayGraph, names: GraphNames) -> None:
    """For token graphs: ``attribute_at`` is a Gather output, and the rest of the graph reads the
    token ids only through it (or their shape), so attributing there sees every path."""
    if names.attribute_at == "input":
        return
    step = graph.producer_op(names.attribute_at)
    if step is None or step.op != "Gather":
        got = step.op if step is not None else "no node"
        raise ModelConfigError(f"graph.attribute_at: {names.attribute_at!r} must be the output of the Gather "
                               f"that embeds the token input; it is produced by {got}")
    others = [s for s in graph.consumers(names.inputs, [names.output], [names.attribute_at])
              if s.op not in SHAPE_ONLY_OPS]
    if others:
        raise ModelConfigError(
            f"graph.attribute_at: the graph reads the token input {names.inputs!r} besides the embedding "
            f"{names.attribute_at!r} ({others[0].where}); attributions there would miss that path")


def attribution_width(module: ReplayModule, num_features: int) -> int:
    """E of the attribution tensor [B,T,E], found by running the embedding once."""
    if module.at_input:
        return num_features
    with torch.no_grad():
        emb = module.embed(torch.zeros((1, 2), dtype=torch.int64))
    if emb.dim() != 3 or emb.shape[:2] != (1, 2):
        raise ModelConfigError(f"graph.attribute_at: {module.names.attribute_at!r} has shape {list(emb.shape)} "
                               "for ids [1, 2]; it must be [B, T, E]")
    return int(emb.shape[2])


__all__ = [
    "SUPPORTED_OPS",
    "GraphNames",
    "Recorder",
    "ReplayGraph",
    "ReplayLimits",
    "ReplayModule",
    "attribution_width",
    "check_attribution_point",
]
