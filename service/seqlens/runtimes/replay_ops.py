"""Torch implementations of the plain (non control-flow, non recurrent) ONNX ops the replay allows.

Each builder takes a node's attributes (already decoded into a dict) and returns a closure
``fn(*inputs) -> tuple of outputs``; attributes are read once, when the plan is built.
Semantics follow the ONNX operator specs (opset 17-21); see docs/custom-graphs.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor

from ..errors import ModelConfigError, ResourceExhausted

Fn = Callable[..., tuple[Any, ...]]
Builder = Callable[[dict[str, Any], "OpContext"], Fn]

# Bound on the elements of one tensor an op creates from shape data (ConstantOfShape, Expand,
# Tile, Range): shapes come from the graph, which could ask for anything.
MAX_CREATED_ELEMENTS = 1 << 28

ONNX_TO_TORCH: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT64: torch.int64, TensorProto.INT32: torch.int32,
    TensorProto.INT16: torch.int16, TensorProto.INT8: torch.int8, TensorProto.UINT8: torch.uint8,
    TensorProto.BOOL: torch.bool,
}


class OpContext:
    """What a builder may need beyond attributes: the node's place, for error messages."""

    def __init__(self, where: str) -> None:
        self.where = where


def to_torch(array: np.ndarray) -> Tensor:
    """A numpy array (from an initializer or attribute) as an owned torch tensor."""
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "u" and array.dtype != np.uint8):
        raise ModelConfigError(f"tensor dtype {array.dtype} is not supported by the replay")
    return torch.from_numpy(np.array(array, copy=True))


def tensor_of(proto: TensorProto) -> Tensor:
    return to_torch(numpy_helper.to_array(proto))


def _ints(t: Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _check_size(shape: Sequence[int], what: str) -> None:
    n = 1
    for d in shape:
        if d < 0:
            raise ModelConfigError(f"{what}: negative dimension in shape {list(shape)}")
        n *= d
    if n > MAX_CREATED_ELEMENTS:
        raise ResourceExhausted(f"{what}: a tensor of {n} elements exceeds the replay's bound of "
                                f"{MAX_CREATED_ELEMENTS}")


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --- elementwise ------------------------------------------------------------------------
def _div(a: Tensor, b: Tensor) -> Tensor:
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # integer division truncates (C semantics)


def _unary(f: Callable[[Tensor], Tensor]) -> Builder:
    return lambda attrs, ctx: (lambda x: (f(x),))


def _binary(f: Callable[[Tensor, Tensor], Tensor]) -> Builder:
    return lambda attrs, ctx: (lambda a, b: (f(a, b),))


def _variadic(f: Callable[[Tensor, Tensor], Tensor]) -> Builder:
    def build(attrs: dict[str, Any], ctx: OpContext) -> Fn:
        def run(*xs: Tensor) -> tuple[Tensor]:
            out = xs[0]
            for x in xs[1:]:
                out = f(out, x)
            return (out,)
        return run
    return build


def _pow(a: Tensor, b: Tensor) -> Tensor:
    out = torch.pow(a, b.to(a.dtype) if a.is_floating_point() else b)
    return out.to(a.dtype)


def _mod(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    f = torch.fmod if int(attrs.get("fmod", 0)) else torch.remainder  # fmod=0: the divisor's sign
    return lambda a, b: (f(a, b),)


def _leaky_relu(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    alpha = float(attrs.get("alpha", 0.01))
    return lambda x: (torch.nn.functional.leaky_relu(x, alpha),)


def _elu(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    alpha = float(attrs.get("alpha", 1.0))
    return lambda x: (torch.nn.functional.elu(x, alpha),)


def _hard_sigmoid(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    return lambda x: (torch.clamp(alpha * x + beta, 0.0, 1.0),)


def _softmax(log: bool) -> Builder:
    def build(attrs: dict[str, Any], ctx: OpContext) -> Fn:
        axis = int(attrs.get("axis", -1))
        f = torch.log_softmax if log else torch.softmax
        return lambda x: (f(x, axis),)
    return build


def _clip(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    def run(x: Tensor, lo: Tensor | None = None, hi: Tensor | None = None) -> tuple[Tensor]:
        if lo is not None:
            x = torch.maximum(x, lo.to(x.dtype))
        if hi is not None:
            x = torch.minimum(x, hi.to(x.dtype))
        return (x,)
    return run


def _where(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    return lambda c, a, b: (torch.where(c.to(torch.bool), a, b),)


def _cast(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    to = int(attrs["to"])
    if to not in ONNX_TO_TORCH:
        raise ModelConfigError(f"{ctx.where}: Cast to ONNX type {to} is not supported")
    dtype = ONNX_TO_TORCH[to]
    return lambda x: (x.to(dtype),)


def _cast_like(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    return lambda x, like: (x.to(like.dtype),)


# --- shapes -----------------------------------------------------------------------------
def _shape(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    start, end = attrs.get("start", 0), attrs.get("end")
    return lambda x: (torch.tensor(list(x.shape)[start:end], dtype=torch.int64),)


def _size(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    return lambda x: (torch.tensor(x.numel(), dtype=torch.int64),)


def _reshape(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    allowzero = int(attrs.get("allowzero", 0))

    def run(x: Tensor, shape: Tensor) -> tuple[Tensor]:
        dims = _ints(shape) or []
        if not allowzero:
            dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return (x.reshape(dims),)
    return run


def _flatten(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    axis = int(attrs.get("axis", 1))

    def run(x: Tensor) -> tuple[Tensor]:
        a = _axis(axis, x.dim())
        lead = int(np.prod(x.shape[:a])) if a else 1
        return (x.reshape(lead, -1) if x.numel() else x.reshape(lead, int(np.prod(x.shape[a:]))),)
    return run


def _transpose(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    perm = attrs.get("perm")

    def run(x: Tensor) -> tuple[Tensor]:
        return (x.permute(*(perm if perm is not None else range(x.dim() - 1, -1, -1))),)
    return run


def _squeeze(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    def run(x: Tensor, axes: Tensor | None = None) -> tuple[Tensor]:
        ax = _ints(axes)
        if ax is None:
            return (x.squeeze(),)
        return (x.squeeze(tuple(_axis(a, x.dim()) for a in ax)),)
    return run


def _unsqueeze(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    def run(x: Tensor, axes: Tensor) -> tuple[Tensor]:
        ax = _ints(axes) or []
        rank = x.dim() + len(ax)
        for a in sorted(_axis(a, rank) for a in ax):
            x = x.unsqueeze(a)
        return (x,)
    return run


def _concat(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    axis = int(attrs["axis"])
    return lambda *xs: (torch.cat([x for x in xs if x is not None], axis),)


def _split(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    axis = int(attrs.get("axis", 0))
    num_outputs = attrs.get("num_outputs")
    split_attr = attrs.get("split")

    def run(x: Tensor, split: Tensor | None = None) -> tuple[Tensor, ...]:
        sizes = _ints(split) or split_attr
        dim = x.shape[_axis(axis, x.dim())]
        if sizes is None:
            n = int(num_outputs or run.n_outputs)  # type: ignore[attr-defined]
            chunk = -(-dim // n)
            sizes = [min(chunk, dim - i * chunk) for i in range(n)]
        return tuple(torch.split(x, list(sizes), axis))
    run.n_outputs = 1  # type: ignore[attr-defined]  # set by the planner
    return run


def _slice(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    def run(x: Tensor, starts: Tensor, ends: Tensor, axes: Tensor | None = None,
            steps: Tensor | None = None) -> tuple[Tensor]:
        st, en = _ints(starts) or [], _ints(ends) or []
        ax = _ints(axes) or list(range(len(st)))
        sp = _ints(steps) or [1] * len(st)
        index: list[slice] = [slice(None)] * x.dim()
        flips: list[tuple[int, Tensor]] = []
        for s, e, a, p in zip(st, en, ax, sp, strict=True):
            a = _axis(a, x.dim())
            dim = x.shape[a]
            if p == 0:
                raise ModelConfigError(f"{ctx.where}: Slice step 0")
            s = s + dim if s < 0 else s
            e = e + dim if e < 0 else e
            if p > 0:
                index[a] = slice(min(max(s, 0), dim), min(max(e, 0), dim), p)
            else:  # torch has no negative-step slicing: take the indices explicitly
                s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
                flips.append((a, torch.arange(s, e, p, dtype=torch.int64)))
        out = x[tuple(index)]
        for a, idx in flips:
            out = out.index_select(a, idx)
        return (out,)
    return run


def _expand(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    def run(x: Tensor, shape: Tensor) -> tuple[Tensor]:
        target = torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape) or []))
        _check_size(target, ctx.where)
        return (x.expand(target),)
    return run


def _tile(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    def run(x: Tensor, repeats: Tensor) -> tuple[Tensor]:
        reps = _ints(repeats) or []
        _check_size([d * r for d, r in zip(x.shape, reps, strict=True)], ctx.where)
        return (x.repeat(*reps),)
    return run


def _constant_of_shape(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    value = attrs.get("value")
    fill = value.reshape(-1)[0] if isinstance(value, Tensor) else torch.tensor(0.0)

    def run(shape: Tensor) -> tuple[Tensor]:
        dims = _ints(shape) or []
        _check_size(dims, ctx.where)
        return (torch.full(dims, fill.item(), dtype=fill.dtype),)
    return run


def _range(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    def run(start: Tensor, limit: Tensor, delta: Tensor) -> tuple[Tensor]:
        a, b, d = start.item(), limit.item(), delta.item()
        if d == 0:
            raise ModelConfigError(f"{ctx.where}: Range delta 0")
        _check_size([max(0, int(np.ceil((b - a) / d)))], ctx.where)
        return (torch.arange(a, b, d, dtype=start.dtype),)
    return run


def _gather(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    axis = int(attrs.get("axis", 0))

    def run(x: Tensor, idx: Tensor) -> tuple[Tensor]:
        a = _axis(axis, x.dim())
        if idx.dim() == 0:  # one index (a time step in a loop body): a view, cheaper both ways
            return (x.select(a, int(idx)),)
        dim = x.shape[a]
        idx = idx.to(torch.int64)
        idx = torch.where(idx < 0, idx + dim, idx)
        flat = x.index_select(a, idx.reshape(-1))
        return (flat.reshape((*x.shape[:a], *idx.shape, *x.shape[a + 1:])),)
    return run


def _gather_elements(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    axis = int(attrs.get("axis", 0))

    def run(x: Tensor, idx: Tensor) -> tuple[Tensor]:
        a = _axis(axis, x.dim())
        idx = idx.to(torch.int64)
        return (torch.gather(x, a, torch.where(idx < 0, idx + x.shape[a], idx)),)
    return run


def _scatter_nd(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    if attrs.get("reduction", "none") not in ("none", b"none"):
        raise ModelConfigError(f"{ctx.where}: ScatterND reduction {attrs['reduction']!r} is not supported")

    def run(x: Tensor, idx: Tensor, updates: Tensor) -> tuple[Tensor]:
        k = idx.shape[-1]
        out = x.clone()
        flat_idx = idx.reshape(-1, k).to(torch.int64)
        out[tuple(flat_idx.T)] = updates.reshape(flat_idx.shape[0], *x.shape[k:]).to(x.dtype)
        return (out,)
    return run


def _scatter_elements(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    axis = int(attrs.get("axis", 0))
    if attrs.get("reduction", "none") not in ("none", b"none"):
        raise ModelConfigError(f"{ctx.where}: ScatterElements reduction is not supported")
    return lambda x, idx, upd: (torch.scatter(x, _axis(axis, x.dim()), idx.to(torch.int64), upd),)


# --- reductions and matrices ------------------------------------------------------------
def _reduce(kind: str) -> Builder:
    def build(attrs: dict[str, Any], ctx: OpContext) -> Fn:
        keepdims = bool(attrs.get("keepdims", 1))
        noop = bool(attrs.get("noop_with_empty_axes", 0))
        attr_axes = attrs.get("axes")

        def run(x: Tensor, axes: Tensor | None = None) -> tuple[Tensor]:
            ax = _ints(axes) if axes is not None else attr_axes
            if not ax:
                if noop:
                    return (x,)
                ax = list(range(x.dim()))
            dims = tuple(_axis(a, x.dim()) for a in ax)
            if kind == "sum":
                return (x.sum(dims, keepdim=keepdims),)
            if kind == "mean":
                return (x.mean(dims, keepdim=keepdims),)
            if kind == "prod":
                out = x
                for d in sorted(dims, reverse=True):
                    out = out.prod(d, keepdim=keepdims)
                return (out,)
            f = torch.amax if kind == "max" else torch.amin
            return (f(x, dims, keepdim=keepdims),)
        return run
    return build


def _gemm(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    ta, tb = int(attrs.get("transA", 0)), int(attrs.get("transB", 0))

    def run(a: Tensor, b: Tensor, c: Tensor | None = None) -> tuple[Tensor]:
        out = (a.T if ta else a) @ (b.T if tb else b)
        if alpha != 1.0:
            out = out * alpha
        if c is not None:
            out = out + (c * beta if beta != 1.0 else c)
        return (out,)
    return run


def _layer_norm(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    axis, eps = int(attrs.get("axis", -1)), float(attrs.get("epsilon", 1e-5))

    def run(x: Tensor, scale: Tensor, bias: Tensor | None = None) -> tuple[Tensor]:
        a = _axis(axis, x.dim())
        return (torch.nn.functional.layer_norm(x, tuple(x.shape[a:]), scale, bias, eps),)
    return run


def _arg(kind: str) -> Builder:
    def build(attrs: dict[str, Any], ctx: OpContext) -> Fn:
        axis, keep = int(attrs.get("axis", 0)), bool(attrs.get("keepdims", 1))
        if attrs.get("select_last_index", 0):
            raise ModelConfigError(f"{ctx.where}: select_last_index is not supported")
        f = torch.argmax if kind == "max" else torch.argmin
        return lambda x: (f(x, axis, keepdim=keep),)
    return build


def _einsum(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    eq = attrs["equation"]
    return lambda *xs: (torch.einsum(eq, *xs),)


def _identity(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    return lambda *xs: (xs[0],)


def _dropout(attrs: dict[str, Any], ctx: OpContext) -> Fn:  # inference: identity, mask all ones
    return lambda x, *rest: (x, torch.ones_like(x, dtype=torch.bool))


# --- sequences (exporters use them for lists built in loops) ----------------------------
def _sequence_empty(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    return lambda: ([],)


def _sequence_construct(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    return lambda *xs: (list(xs),)


def _sequence_insert(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    def run(seq: list[Tensor], x: Tensor, pos: Tensor | None = None) -> tuple[list[Tensor]]:
        out = list(seq)
        if pos is None:
            out.append(x)
        else:
            p = int(pos.item())
            out.insert(p + len(out) if p < 0 else p, x)
        return (out,)
    return run


def _sequence_at(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    return lambda seq, pos: (seq[int(pos.item())],)


def _sequence_length(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    return lambda seq: (torch.tensor(len(seq), dtype=torch.int64),)


def _concat_from_sequence(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    axis, new_axis = int(attrs["axis"]), int(attrs.get("new_axis", 0))
    return lambda seq: ((torch.stack if new_axis else torch.cat)(list(seq), axis),)


def _split_to_sequence(attrs: dict[str, Any], ctx: OpContext) -> Fn:
    axis, keepdims = int(attrs.get("axis", 0)), int(attrs.get("keepdims", 1))

    def run(x: Tensor, split: Tensor | None = None) -> tuple[list[Tensor]]:
        a = _axis(axis, x.dim())
        if split is None:
            parts = list(torch.split(x, 1, a))
            return ([p.squeeze(a) for p in parts] if not keepdims else parts,)
        sizes = _ints(split) or []
        if split.dim() == 0:
            return (list(torch.split(x, sizes[0], a)),)
        return (list(torch.split(x, sizes, a)),)
    return run


OPS: dict[str, Builder] = {
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _binary(_div),
    "Pow": _binary(_pow), "Mod": _mod, "MatMul": _binary(torch.matmul),
    "Equal": _binary(torch.eq), "Less": _binary(torch.lt), "LessOrEqual": _binary(torch.le),
    "Greater": _binary(torch.gt), "GreaterOrEqual": _binary(torch.ge),
    "And": _binary(torch.logical_and), "Or": _binary(torch.logical_or), "Xor": _binary(torch.logical_xor),
    "Not": _unary(torch.logical_not), "Neg": _unary(torch.neg), "Abs": _unary(torch.abs),
    "Sqrt": _unary(torch.sqrt), "Exp": _unary(torch.exp), "Log": _unary(torch.log),
    "Reciprocal": _unary(torch.reciprocal), "Floor": _unary(torch.floor), "Ceil": _unary(torch.ceil),
    "Sign": _unary(torch.sign), "Erf": _unary(torch.erf), "Sin": _unary(torch.sin), "Cos": _unary(torch.cos),
    "Tanh": _unary(torch.tanh), "Sigmoid": _unary(torch.sigmoid), "Relu": _unary(torch.relu),
    "Softplus": _unary(torch.nn.functional.softplus), "Softsign": _unary(torch.nn.functional.softsign),
    "LeakyRelu": _leaky_relu, "Elu": _elu, "HardSigmoid": _hard_sigmoid,
    "Min": _variadic(torch.minimum), "Max": _variadic(torch.maximum), "Sum": _variadic(torch.add),
    "Softmax": _softmax(False), "LogSoftmax": _softmax(True), "Clip": _clip, "Where": _where,
    "Cast": _cast, "CastLike": _cast_like, "Identity": _identity, "Dropout": _dropout,
    "Shape": _shape, "Size": _size, "Reshape": _reshape, "Flatten": _flatten, "Transpose": _transpose,
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Concat": _concat, "Split": _split, "Slice": _slice,
    "Expand": _expand, "Tile": _tile, "ConstantOfShape": _constant_of_shape, "Range": _range,
    "Gather": _gather, "GatherElements": _gather_elements, "ScatterND": _scatter_nd,
    "ScatterElements": _scatter_elements,
    "ReduceSum": _reduce("sum"), "ReduceMean": _reduce("mean"), "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"), "ReduceProd": _reduce("prod"),
    "ArgMax": _arg("max"), "ArgMin": _arg("min"),
    "Gemm": _gemm, "LayerNormalization": _layer_norm, "Einsum": _einsum,
    "SequenceEmpty": _sequence_empty, "SequenceConstruct": _sequence_construct,
    "SequenceInsert": _sequence_insert, "SequenceAt": _sequence_at, "SequenceLength": _sequence_length,
    "ConcatFromSequence": _concat_from_sequence, "SplitToSequence": _split_to_sequence,
}


def attribute_values(node: Any) -> dict[str, Any]:
    """A node's attributes as Python values; tensors as torch tensors, graphs left as protos."""
    out: dict[str, Any] = {}
    for attr in node.attribute:
        if attr.type == helper.AttributeProto.TENSOR:
            out[attr.name] = tensor_of(attr.t)
        elif attr.type in (helper.AttributeProto.GRAPH, helper.AttributeProto.GRAPHS):
            out[attr.name] = attr.g if attr.type == helper.AttributeProto.GRAPH else list(attr.graphs)
        else:
            value = helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            elif isinstance(value, list) and value and isinstance(value[0], bytes):
                value = [v.decode("utf-8", "replace") for v in value]
            out[attr.name] = value
    return out
