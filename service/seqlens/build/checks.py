"""The build's checks: ONNX Runtime and the replay against the eager module, at several lengths.

Each check compares a padded batch of MIXED lengths (the graph's answers) with the eager module
run on each sequence alone (the oracle), at lengths different from the export length: a graph
that froze the time axis, or that lets padding leak into a row, fails here with the difference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor

from .graph import INPUTS, LENGTHS, OUTPUTS, BuildError

# (inputs [B,T(,F)], lengths [B]) -> eager rows: [C] or [L_i, C] each
EagerRows = Callable[[Tensor, Tensor], list[Tensor]]
# attribution-point values [B,T,E] (requires grad), lengths -> eager rows from that point
EagerFromPoint = Callable[[Tensor, Tensor], list[Tensor]]


@dataclass(frozen=True)
class Probe:
    """One padded batch: ``inputs`` (ids or features), ``lengths``, all mixed."""

    inputs: Tensor
    lengths: Tensor

    @property
    def time(self) -> int:
        return int(self.inputs.shape[1])


def check_lengths(export_length: int, max_length: int) -> list[int]:
    """At least three batch lengths (T), all different from the export length, within max_length
    when it leaves room."""
    upper = max(max_length, export_length + 4)
    picks = [max_length, max(1, export_length // 2), export_length + 3, 2, export_length + 1, 1, 3]
    out: list[int] = []
    for t in picks:
        if t != export_length and 1 <= t <= upper and t not in out:
            out.append(t)
    return sorted(out[:4])


def mixed_lengths(t: int) -> list[int]:
    """Four rows: the full length, one shorter, a single step, about half."""
    return [t, max(1, t - 1), 1, max(1, (t + 1) // 2)]


def make_probes(lengths: list[int], sample: Callable[[int, int, np.random.Generator], np.ndarray], seed: int = 7
                ) -> list[Probe]:
    rng = np.random.default_rng(seed)
    probes = []
    for t in lengths:
        rows = mixed_lengths(t)
        probes.append(Probe(torch.from_numpy(sample(len(rows), t, rng)), torch.tensor(rows, dtype=torch.int64)))
    return probes


def _row_diffs(got: Tensor | np.ndarray, rows: list[Tensor], lengths: Tensor, per_step: bool) -> float:
    got_t = torch.as_tensor(got)
    worst = 0.0
    for i, ref in enumerate(rows):
        n = int(lengths[i])
        g = got_t[i, :n] if per_step else got_t[i]
        if g.shape != ref.shape:
            raise BuildError(f"the graph's output for a row has shape {tuple(g.shape)}; the eager module "
                             f"gives {tuple(ref.shape)}")
        worst = max(worst, float((g.double() - ref.detach().double()).abs().max()))
    return worst


def check_onnx_runtime(model_bytes: bytes, probes: list[Probe], eager: EagerRows, *, per_step: bool,
                       export_length: int, tolerance: float) -> dict[int, float]:
    """Max |ORT - eager| per batch length; raises BuildError listing every length that failed.

    A graph that hard-coded the export length typically fails to run below it (an index out of
    range) and runs silently wrong above it: both are reported, with the differences.
    """
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    diffs: dict[int, float] = {}
    errors: dict[int, str] = {}
    for p in probes:
        try:
            got = session.run([OUTPUTS], {INPUTS: p.inputs.numpy(), LENGTHS: p.lengths.numpy()})[0]
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types; the first line names the node
            errors[p.time] = str(exc).splitlines()[0][:200]
            continue
        with torch.no_grad():
            rows = eager(p.inputs, p.lengths)
        diffs[p.time] = _row_diffs(got, rows, p.lengths, per_step)
    bad = {t: d for t, d in diffs.items() if not d <= tolerance}  # NaN counts as bad
    if bad or errors:
        listed = "; ".join([*(f"T={t}: |ORT - eager| = {d:.3g}" for t, d in sorted(diffs.items())),
                            *(f"T={t}: ONNX Runtime failed ({e})" for t, e in sorted(errors.items()))])
        worst = f"max |ORT - eager| = {max(bad.values()):.3g} > {tolerance:g}" if bad else "ONNX Runtime failed"
        raise BuildError(
            f"check 'ONNX Runtime = eager' failed: {worst} on padded batches of mixed lengths, exported at "
            f"length {export_length} ({listed}). A graph right only at the export length froze the time "
            "axis (a traced Python loop: use the cell protocol or torch.jit.script the loop); one wrong "
            "only for the shorter rows lets padding leak into a row's answer")
    return diffs


def _weights(shape: tuple[int, ...], seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float32)


def check_replay_gradients(model: onnx.ModelProto, probes: list[Probe], *, attribute_at: str,
                           point_of: Callable[[Tensor], Tensor], eager_from_point: EagerFromPoint,
                           per_step: bool, tolerance: float) -> dict[int, float]:
    """The replay (seqlens.runtimes.replay, the server's torch path) with its attribution point
    overridden gives the same outputs and the same gradients there as the eager module.

    ``point_of(inputs)`` computes the attribution-point values ``[B,T,E]`` (the embedding, or the
    features themselves); the gradient of a random projection of the outputs of real steps is
    compared at real steps. The tolerance is relative to the largest gradient (at least 1).
    """
    from ..runtimes.replay import ReplayGraph  # late: the replay is the server's, not every build's import

    graph = ReplayGraph(model)
    diffs: dict[int, float] = {}
    for k, p in enumerate(probes):
        with torch.no_grad():
            base = point_of(p.inputs)
        mine = base.clone().requires_grad_(True)
        overrides = {attribute_at: mine}
        out = graph.run({INPUTS: p.inputs, LENGTHS: p.lengths}, outputs=[OUTPUTS], overrides=overrides)[OUTPUTS]
        theirs = base.clone().requires_grad_(True)
        rows = eager_from_point(theirs, p.lengths)
        out_diff = _row_diffs(out.detach(), rows, p.lengths, per_step)
        loss_graph, loss_eager = out.new_zeros(()), out.new_zeros(())
        for i, ref in enumerate(rows):
            w = _weights(tuple(ref.shape), seed=1000 * k + i)
            n = int(p.lengths[i])
            loss_graph = loss_graph + ((out[i, :n] if per_step else out[i]) * w).sum()
            loss_eager = loss_eager + (ref * w).sum()
        (g_graph,) = torch.autograd.grad(loss_graph, mine, allow_unused=True)
        (g_eager,) = torch.autograd.grad(loss_eager, theirs, allow_unused=True)
        if g_graph is None:
            raise BuildError(f"check 'replay gradients = eager' failed: the graph's outputs do not depend on "
                             f"{attribute_at!r} in the replay")
        if g_eager is None:
            g_eager = torch.zeros_like(base)
        mask = (torch.arange(p.time)[None, :] < p.lengths[:, None]).unsqueeze(-1)
        scale = max(1.0, float((g_eager * mask).abs().max()))
        grad_diff = float(((g_graph - g_eager) * mask).abs().max()) / scale
        diffs[p.time] = max(out_diff, grad_diff)
        if diffs[p.time] > tolerance or not np.isfinite(diffs[p.time]):
            what = "outputs" if out_diff >= grad_diff else "gradients (relative to the largest)"
            raise BuildError(
                f"check 'replay gradients = eager' failed: the replay's {what} differ from eager torch by "
                f"{diffs[p.time]:.3g} > {tolerance:g} at batch length {p.time} (attribution point "
                f"{attribute_at!r}, mixed lengths {mixed_lengths(p.time)})")
    return diffs
