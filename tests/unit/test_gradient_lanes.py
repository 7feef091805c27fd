"""A lone explanation splits its gradient rows across flush-to-zero lanes; under load it
keeps to one thread. Results equal the one-thread (and the unflushed) ones."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from seqlens import load_model
from seqlens.explainers import gradient_shap
from seqlens.explainers.integrated_gradients import integrate
from seqlens.explainers.options import MethodOptions, PlanContext
from seqlens.explainers.threads import GradientLanes, current_lanes, lent, split_rows
from seqlens.export import export_model
from seqlens.families import build_model
from seqlens.versions import LoadedVersion

from tests.factories import VOCAB, tiny_config
from tests.unit import test_explainers_common as common
from tests.unit.test_explainers_common import assert_rel, make_problem, sample_values

family_repo, family = common.family_repo, common.family  # the shared session fixtures
Family = Callable[[str], LoadedVersion]


class Contention:
    """Stands in for the explain runner's counters."""

    def __init__(self) -> None:
        self.busy = False

    def __call__(self) -> bool:
        return self.busy


def _on_plain_thread(fn: Callable[[], object]) -> object:
    """Runs ``fn`` on a fresh thread: no flush-to-zero there."""
    out: list[object] = []

    def run() -> None:
        torch.set_flush_denormal(False)  # a new thread inherits its creator's mode
        out.append(fn())

    th = threading.Thread(target=run)
    th.start()
    th.join()
    return out[0]


def test_split_rows_covers_the_chunk_in_order() -> None:
    assert split_rows(0, 50, 2) == [(0, 25), (25, 50)]
    assert split_rows(10, 17, 2) == [(10, 17)]  # 7 rows: not worth a second lane
    assert split_rows(0, 9, 3) == [(0, 4), (4, 9)]
    assert split_rows(0, 1, 4) == [(0, 1)]


def test_every_lane_flushes_denormals_to_zero() -> None:
    """torch.set_flush_denormal is per thread: each lane sets it itself (DAZ reads 1e-39 as 0)."""
    lanes = GradientLanes(3, Contention())
    try:
        seen = lanes.map([lambda: (threading.get_ident(), float(torch.tensor([1e-39]) * 1.0))] * 4)
    finally:
        lanes.shutdown()
    assert len({ident for ident, _ in seen[1:]}) >= 1
    assert [value for _, value in seen[1:]] == [0.0, 0.0, 0.0]
    # the control: a thread that did not ask keeps the denormal
    assert _on_plain_thread(lambda: float(torch.tensor([1e-39]) * 1.0)) != 0.0


@pytest.mark.parametrize("name", ["lstm_tokens_cls", "gru_tokens_bi_tag", "lstm_features_bi2_cls"])
def test_split_ig_equals_one_thread(family: Family, name: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded))
    one = integrate(problem, "gauss_legendre", 32)
    lanes = GradientLanes(1, Contention())
    try:
        with lent(lanes):
            split = integrate(problem, "gauss_legendre", 32)
    finally:
        lanes.shutdown()
    assert lanes.splits >= 1, "the chunk was not split: the test would prove nothing"
    assert_rel(split.numpy(), one, tol=1e-6)


def test_split_sampler_draws_the_same_rows(family: Family) -> None:
    """Rows are built once per chunk on the job's thread, so samplers draw as before."""
    loaded = family("lstm_tokens_cls")
    problem = make_problem(loaded, sample_values(loaded))
    ctx = PlanContext(length=problem.length, num_features=3, is_tokens=True, max_steps=1024, baseline_kind="pad",
                      baseline_replaces_ids=True, adaptive_budget=4_000_000)
    opts = MethodOptions("gradient_shap", n_samples=16, noise_stdev=0.2, seed=3)
    one = gradient_shap.plan(opts, ctx).run(problem)
    lanes = GradientLanes(1, Contention())
    try:
        with lent(lanes):
            split = gradient_shap.plan(opts, ctx).run(problem)
    finally:
        lanes.shutdown()
    assert lanes.splits >= 1
    assert_rel(split.full, one.full, tol=1e-6)


def test_contended_work_keeps_to_one_thread(family: Family) -> None:
    loaded = family("lstm_tokens_cls")
    problem = make_problem(loaded, sample_values(loaded))
    contention = Contention()
    contention.busy = True  # another gradient job runs or waits
    lanes = GradientLanes(1, contention)
    try:
        assert lanes.width() == 1
        with lent(lanes):
            assert current_lanes() is lanes
            integrate(problem, "gauss_legendre", 32)
        assert lanes.splits == 0
        contention.busy = False
        assert lanes.width() == 2
    finally:
        lanes.shutdown()
    assert current_lanes() is None


def test_split_flushed_ig_equals_unflushed_one_thread(tmp_path: Path) -> None:
    """The DESIGN pitfall at long T, across lanes: subnormal gradients flushed on every lane
    leave the attributions as the unflushed single-thread run has them."""
    config = tiny_config(cell="lstm", emb=64, hidden=128, max_length=512)
    export_model(build_model(config, len(VOCAB), seed=0).eval(), tmp_path / "long" / "1", vocabulary=VOCAB)
    loaded = load_model(tmp_path, "long")
    values = np.random.default_rng(0).integers(2, len(VOCAB), size=256).astype(np.int64)
    problem = make_problem(loaded, values)
    unflushed = _on_plain_thread(lambda: integrate(problem, "gauss_legendre", 8))
    assert isinstance(unflushed, torch.Tensor)
    lanes = GradientLanes(1, Contention())

    def split() -> torch.Tensor:
        torch.set_flush_denormal(True)
        with lent(lanes):
            return integrate(problem, "gauss_legendre", 8)

    try:
        flushed = _on_plain_thread(split)
    finally:
        lanes.shutdown()
    assert lanes.splits >= 1
    assert isinstance(flushed, torch.Tensor)
    assert_rel(flushed.numpy(), unflushed, tol=1e-6)
