"""Gradient methods equal Captum's on every family; completeness, adaptive IG, chunking,
flush-to-zero, deadlines and cancellation."""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import (
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from seqlens import load_model
from seqlens.errors import DeadlineExceeded, InvalidInput
from seqlens.explainers import gradient_shap, integrated_gradients, kronrod, smoothgrad
from seqlens.explainers.control import Cancelled, WorkControl
from seqlens.explainers.gradients import gradient_at, init_gradient_thread
from seqlens.explainers.input_x_gradient import InputXGradient as OurInputXGradient
from seqlens.explainers.integrated_gradients import IntegratedGradients as OurIG
from seqlens.explainers.integrated_gradients import integrate, relative_l1
from seqlens.explainers.options import MethodOptions, PlanContext
from seqlens.explainers.running import run_plan
from seqlens.explainers.saliency import Saliency as OurSaliency
from seqlens.explainers.sampling import GivenDraws
from seqlens.explainers.targets import TargetSpec
from seqlens.export import export_model
from seqlens.families import build_model
from seqlens.versions import LoadedVersion

from tests.factories import VOCAB, tiny_config
from tests.unit import test_explainers_common as common
from tests.unit.test_explainers_common import (
    FAMILIES,
    FEATURE_FAMILIES,
    TOKEN_FAMILIES,
    assert_rel,
    captum_target,
    forward_embedding,
    forward_inputs,
    lengths_arg,
    make_problem,
    sample_values,
)

family_repo, family = common.family_repo, common.family  # the shared session fixtures
# Captum sets requires_grad on the inputs it is given and says so.
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")

Family = Callable[[str], LoadedVersion]
QUADRATURES = ["gauss_legendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"]
CAPTUM_RULE = {"gauss_legendre": "gausslegendre"}  # Captum's spelling of the one rule it writes differently


def _ctx(length: int) -> PlanContext:
    return PlanContext(length=length, num_features=3, is_tokens=True, max_steps=1024, baseline_kind="pad",
                       baseline_replaces_ids=True, adaptive_budget=4_000_000)


def _ig(problem, n: int, rule: str = "gauss_legendre"):  # type: ignore[no-untyped-def]
    return run_plan(OurIG(n, rule, False, 0.01, n, problem.length), problem)  # type: ignore[arg-type]


# --- integrated gradients ----------------------------------------------------------------
@pytest.mark.parametrize("name", list(FAMILIES))
def test_ig_equals_captum_on_every_family(family: Family, name: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded))
    ours = _ig(problem, 24)
    t = problem.target
    if loaded.config.is_tokens:  # PAD baseline: Captum's LayerIntegratedGradients on model.embedding
        lig = LayerIntegratedGradients(forward_inputs(loaded, t), loaded.torch_module.embedding)
        ids = torch.from_numpy(problem.values)[None]
        ref, delta = lig.attribute(ids, torch.zeros_like(ids), target=captum_target(t),
                                   additional_forward_args=lengths_arg(problem), n_steps=24,
                                   method="gausslegendre", return_convergence_delta=True)
    else:  # training-mean baseline in raw feature units
        ig = IntegratedGradients(forward_inputs(loaded, t))
        ref, delta = ig.attribute(problem.x[None], problem.b[None], target=captum_target(t),
                                  additional_forward_args=lengths_arg(problem), n_steps=24,
                                  method="gausslegendre", return_convergence_delta=True)
    assert_rel(ours.full, ref)
    gap = abs(ours.target_at_input - ours.target_at_baseline)
    assert abs(ours.convergence_delta - float(delta)) <= 1e-5 * gap + 1e-7
    # A fixed count converges exactly when its delta meets the 1% default tolerance.
    assert ours.n_steps == 24 and ours.tolerance == 0.01
    assert ours.converged == (abs(float(delta)) <= 0.01 * gap + 1e-6)


@pytest.mark.parametrize("rule", QUADRATURES)
@pytest.mark.parametrize("name", ["gru_tokens_bi_tag", "lstm_features_bi2_cls"])
def test_ig_quadratures_equal_captum(family: Family, name: str, rule: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded, seed=3), TargetSpec(output_space="probability"),
                           baseline="zeros")
    ours = _ig(problem, 16, rule)
    t = problem.target
    fwd = forward_embedding(loaded, t) if loaded.config.is_tokens else forward_inputs(loaded, t)
    ref = IntegratedGradients(fwd).attribute(problem.x[None], problem.b[None], target=captum_target(t),
                                             additional_forward_args=lengths_arg(problem), n_steps=16,
                                             method=CAPTUM_RULE.get(rule, rule))
    assert_rel(ours.full, ref)


@pytest.mark.parametrize("name", TOKEN_FAMILIES)
def test_token_scores_are_the_signed_sum_and_l2_norm_over_the_embedding(family: Family, name: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded), baseline="training_mean")
    ours = _ig(problem, 8)
    assert ours.full.shape == (problem.length, loaded.config.architecture.embedding_dim)
    np.testing.assert_allclose(ours.scores, ours.full.sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(ours.l2_norm, np.linalg.norm(ours.full, axis=1), rtol=1e-6)
    assert ours.feature_scores is None


@pytest.mark.parametrize("name", FEATURE_FAMILIES)
def test_feature_scores_are_per_feature_and_summed_per_step(family: Family, name: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded))
    ours = _ig(problem, 8)
    assert ours.feature_scores is not None and ours.feature_scores.shape == (problem.length, 3)
    np.testing.assert_allclose(ours.scores, ours.feature_scores.sum(axis=1), rtol=1e-6)
    assert ours.l2_norm is None


@pytest.mark.parametrize("name", list(FAMILIES))
def test_completeness_delta_is_what_is_reported(family: Family, name: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded, seed=5))
    ours = _ig(problem, 64)
    # f(x), f(baseline) straight from the module: an independent forward.
    with torch.no_grad():
        if loaded.config.is_tokens:
            out = loaded.torch_module.forward_from_embedding(torch.stack([problem.x, problem.b]),
                                                             torch.tensor([problem.length] * 2))
        else:
            out = loaded.torch_module(torch.stack([problem.x, problem.b]), torch.tensor([problem.length] * 2))
    t = problem.target
    if not t.is_class:
        sel = out[:, t.horizon_step]
    elif t.timestep >= 0:
        sel = out[:, t.timestep, t.class_index]
    else:
        sel = out[:, t.class_index]
    fx, fb = float(sel[0]), float(sel[1])
    residual = float(np.sum(ours.full, dtype=np.float64)) - (fx - fb)
    assert abs(residual - ours.convergence_delta) <= 1e-6 + 1e-6 * abs(fx - fb)
    # Gauss-Legendre, 64 nodes; ReLU kinks make the integrand non-smooth, so it converges slower.
    limit = 1e-2 if loaded.config.architecture.cell == "rnn_relu" else 1e-3
    assert abs(ours.convergence_delta) <= limit * abs(fx - fb) + 1e-6


# --- adaptive IG -------------------------------------------------------------------------
def test_gauss_kronrod_pair_is_nested_and_exact_to_its_degrees() -> None:
    pair = kronrod.PAIR
    nodes, gauss = pair.nodes, pair.gauss  # on [0,1]
    g_nodes, g_weights = np.polynomial.legendre.leggauss(7)  # numpy's Gauss-Legendre as the oracle
    assert np.allclose(nodes[gauss > 0], 0.5 * (g_nodes + 1)) and np.allclose(gauss[gauss > 0], 0.5 * g_weights)
    for k in range(24):  # Kronrod 15: exact to degree 22 (23 by symmetry); Gauss 7: to 13
        assert pair.kronrod @ nodes**k == pytest.approx(1 / (k + 1), rel=1e-13)
        if k <= 13:
            assert gauss @ nodes**k == pytest.approx(1 / (k + 1), rel=1e-13)


@pytest.mark.parametrize("rule", ["gauss_legendre", "riemann_trapezoid"])
@pytest.mark.parametrize("name", ["lstm_tokens_cls", "lstm_features_bi2_cls", "gru_tokens_bi_tag"])
def test_adaptive_ig_meets_its_tolerance(family: Family, name: str, rule: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded, length=20, seed=7))
    tol = 0.01
    plan = integrated_gradients.plan(MethodOptions("integrated_gradients", adaptive=True, tolerance=tol,
                                                   quadrature=rule),  # type: ignore[arg-type]
                                     _ctx(problem.length))
    ours = run_plan(plan, problem)
    assert ours.converged
    gap = abs(ours.target_at_input - ours.target_at_baseline)
    assert abs(ours.convergence_delta) <= tol * gap + integrated_gradients.DELTA_FLOOR
    reference = integrate(problem, "gauss_legendre", 512)
    assert relative_l1(torch.from_numpy(ours.full), reference) <= tol
    if rule == "gauss_legendre":  # panels of 15 rows: 2 to start, then 2 or 3 per refined panel
        assert plan.panels == 2 and ours.n_steps % 15 == 0 and 30 <= ours.n_steps <= plan.cap
    else:
        assert ours.n_steps in plan.ladder()


def _sharpened(loaded: LoadedVersion, scale: float) -> LoadedVersion:
    """A copy of the model with its first recurrent layer's input weights scaled: saturated
    gates make the IG path turn sharply on a short stretch (as on the trained sentiment model)."""
    module = copy.deepcopy(loaded.torch_module)
    rnn = next(m for m in module.modules() if isinstance(m, torch.nn.LSTM))
    with torch.no_grad():
        rnn.weight_ih_l0.mul_(scale)
    return dataclasses.replace(loaded, torch_module=module)


def test_adaptive_ig_refines_a_sharp_path_within_tolerance(family: Family) -> None:
    loaded = _sharpened(family("lstm_tokens_cls"), 200.0)
    problem = make_problem(loaded, sample_values(loaded, length=12, seed=0))
    plan = integrated_gradients.plan(MethodOptions("integrated_gradients", adaptive=True, tolerance=0.01),
                                     _ctx(problem.length))
    ours = run_plan(plan, problem)
    fine = integrate(problem, "gauss_legendre", 1024)
    assert relative_l1(integrate(problem, "gauss_legendre", 16), fine) > 0.01  # 16 nodes are not enough here
    assert relative_l1(integrate(problem, "gauss_legendre", 512), fine) < 1e-4  # the reference has converged
    assert ours.converged and ours.n_steps > 30  # it refined panels beyond the first two
    assert relative_l1(torch.from_numpy(ours.full), fine) <= 0.01


@pytest.mark.parametrize("rule", ["gauss_legendre", "riemann_trapezoid"])
def test_adaptive_ig_reports_not_converged_at_its_step_cap(family: Family, rule: str) -> None:
    problem = make_problem(family("lstm_tokens_cls"), sample_values(family("lstm_tokens_cls"), length=20))
    plan = integrated_gradients.plan(
        MethodOptions("integrated_gradients", adaptive=True, tolerance=1e-9, n_steps=8, max_steps=32,
                      quadrature=rule),  # type: ignore[arg-type]
        _ctx(problem.length))
    ours = run_plan(plan, problem)
    if rule == "gauss_legendre":  # one panel (15 rows); refining it (30 or 45 more) would pass 32
        assert plan.panels == 1 and ours.n_steps == 15
    else:
        assert plan.ladder() == [8, 16, 32] and ours.n_steps == 32
    assert not ours.converged


@pytest.mark.parametrize("rule", ["gauss_legendre", "riemann_trapezoid"])
def test_adaptive_cap_follows_the_work_budget(rule: str) -> None:
    ctx = _ctx(100)
    budget = 100 * (8 + 16 + 32 + 40)  # room for the rungs 8, 16, 32; not for 64
    plan = integrated_gradients.plan(MethodOptions("integrated_gradients", adaptive=True,
                                                   quadrature=rule),  # type: ignore[arg-type]
                                     dataclasses.replace(ctx, adaptive_budget=budget))
    if rule == "gauss_legendre":  # Gauss-Kronrod: gradient rows in all
        assert plan.cap == 96 and plan.work == budget
    else:
        assert plan.ladder() == [8, 16, 32] and plan.work <= 100 * 96


def test_adaptive_gauss_kronrod_needs_room_for_one_panel() -> None:
    with pytest.raises(InvalidInput, match="max_steps is 12; adaptive Gauss-Kronrod needs at least 15"):
        integrated_gradients.plan(MethodOptions("integrated_gradients", adaptive=True, n_steps=4, max_steps=12),
                                  _ctx(10))
    with pytest.raises(InvalidInput, match="at least 15 steps .* the server's max_steps is 10"):
        integrated_gradients.plan(MethodOptions("integrated_gradients", adaptive=True),
                                  dataclasses.replace(_ctx(10), max_steps=10))
    riemann = integrated_gradients.plan(MethodOptions("integrated_gradients", adaptive=True,
                                                      quadrature="riemann_trapezoid"),
                                        dataclasses.replace(_ctx(10), max_steps=10))
    assert riemann.ladder() == [8]  # the Riemann ladder still serves such a server


# --- saliency, input x gradient ----------------------------------------------------------
@pytest.mark.parametrize("absolute", [True, False])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_saliency_equals_captum(family: Family, name: str, absolute: bool) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded, seed=2))
    ours = OurSaliency(absolute, problem.length).run(problem)
    t = problem.target
    fwd = forward_embedding(loaded, t) if loaded.config.is_tokens else forward_inputs(loaded, t)
    ref = Saliency(fwd).attribute(problem.x[None], target=captum_target(t), abs=absolute,
                                  additional_forward_args=lengths_arg(problem))
    assert_rel(ours.full, ref)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_input_x_gradient_equals_captum(family: Family, name: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded, seed=4), TargetSpec(output_space="logit"))
    ours = OurInputXGradient(problem.length).run(problem)
    t = problem.target
    if loaded.config.is_tokens:
        ref = LayerGradientXActivation(forward_inputs(loaded, t), loaded.torch_module.embedding).attribute(
            torch.from_numpy(problem.values)[None], target=captum_target(t),
            additional_forward_args=lengths_arg(problem))
    else:
        ref = InputXGradient(forward_inputs(loaded, t)).attribute(
            problem.x[None], target=captum_target(t), additional_forward_args=lengths_arg(problem))
    assert_rel(ours.full, ref)


# --- GradientSHAP, SmoothGrad: Captum's own random draws, replayed -----------------------
@pytest.mark.parametrize("name", list(FAMILIES))
def test_gradient_shap_equals_captum_given_the_same_draws(family: Family, name: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded, seed=6))
    t = problem.target
    fwd = forward_embedding(loaded, t) if loaded.config.is_tokens else forward_inputs(loaded, t)
    samples, stdev, seed = 7, 0.1, 1234
    np.random.seed(seed)
    torch.manual_seed(seed)
    ref, deltas = GradientShap(fwd).attribute(problem.x[None], problem.b[None], n_samples=samples,
                                              stdevs=stdev, target=captum_target(t),
                                              return_convergence_delta=True,
                                              additional_forward_args=lengths_arg(problem))
    # Captum's draws, in its order: numpy picks baselines then the alphas; torch draws the noise.
    np.random.seed(seed)
    np.random.choice(1, samples)
    alphas = torch.tensor(np.random.uniform(0.0, 1.0, samples), dtype=torch.float32)
    torch.manual_seed(seed)
    noise = torch.normal(0, torch.tensor(stdev).repeat((samples, *problem.x.shape)))
    plan = gradient_shap.plan(MethodOptions("gradient_shap", n_samples=samples, noise_stdev=stdev),
                              _ctx(problem.length))
    ours = plan.run(problem, GivenDraws(noise, alphas))
    assert_rel(ours.full, ref)
    f_input, f_baseline = problem.endpoints(plan.endpoints)
    gap = abs(f_input - f_baseline)
    assert abs(ours.convergence_delta - float(deltas.mean())) <= 1e-5 * gap + 1e-6


@pytest.mark.parametrize("name", ["lstm_tokens_cls", "gru_features_tag", "relu_tokens_bi_fc"])
def test_smoothgrad_equals_captum_noise_tunnel_given_the_same_noise(family: Family, name: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded, seed=8))
    t = problem.target
    fwd = forward_embedding(loaded, t) if loaded.config.is_tokens else forward_inputs(loaded, t)
    samples, stdev, seed = 6, 0.2, 99
    torch.manual_seed(seed)
    ref = NoiseTunnel(Saliency(fwd)).attribute(problem.x[None], nt_type="smoothgrad", nt_samples=samples,
                                               stdevs=stdev, target=captum_target(t),
                                               additional_forward_args=lengths_arg(problem))
    torch.manual_seed(seed)
    noise = torch.normal(0, torch.tensor(stdev).repeat((samples, *problem.x.shape)))
    options = MethodOptions("smoothgrad", n_samples=samples, noise_stdev=stdev)
    plan = smoothgrad.plan(options, _ctx(problem.length))
    assert_rel(plan.run(problem, GivenDraws(noise)).full, ref)


def test_seeded_sampling_methods_repeat_exactly_and_depend_on_the_seed(family: Family) -> None:
    loaded = family("lstm_tokens_cls")
    problem = make_problem(loaded, sample_values(loaded))
    for planner, name in ((gradient_shap.plan, "gradient_shap"), (smoothgrad.plan, "smoothgrad")):
        a = planner(MethodOptions(name, seed=1, noise_stdev=0.3), _ctx(problem.length)).run(problem)
        b = planner(MethodOptions(name, seed=1, noise_stdev=0.3), _ctx(problem.length)).run(problem)
        c = planner(MethodOptions(name, seed=2, noise_stdev=0.3), _ctx(problem.length)).run(problem)
        np.testing.assert_array_equal(a.full, b.full)
        assert not np.array_equal(a.full, c.full)


# --- chunking, flush-to-zero, deadlines --------------------------------------------------
@pytest.mark.parametrize("name", ["gru_tokens_bi_tag", "lstm_features_bi2_cls"])
def test_chunked_passes_give_the_same_attributions(family: Family, name: str) -> None:
    loaded = family(name)
    values = sample_values(loaded)
    whole = make_problem(loaded, values)
    width = loaded.config.architecture.embedding_dim
    tiny = make_problem(loaded, values, chunk_elements=3 * len(values) * width)  # 3 rows per pass
    assert tiny.rows_per_chunk == 3 and whole.rows_per_chunk >= 20
    assert_rel(_ig(tiny, 20).full, _ig(whole, 20).full, tol=1e-6)
    draws = {"n_samples": 11, "noise_stdev": 0.2, "seed": 5}
    a = gradient_shap.plan(MethodOptions("gradient_shap", **draws), _ctx(len(values))).run(tiny)
    b = gradient_shap.plan(MethodOptions("gradient_shap", **draws), _ctx(len(values))).run(whole)
    assert_rel(a.full, b.full, tol=1e-6)


def _on_thread(fn: Callable[[], object], flush: bool) -> object:
    out: list[object] = []

    def run() -> None:
        if flush:
            init_gradient_thread()
        else:  # a new thread inherits its creator's floating-point mode: clear it explicitly
            torch.set_flush_denormal(False)
        out.append(fn())

    # One intra-op thread: torch's pool threads keep the mode of whoever created them, so the
    # maths must run on this thread for its mode to be the one under test.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        th = threading.Thread(target=run)
        th.start()
        th.join()
    finally:
        torch.set_num_threads(threads)
    return out[0]


def test_flush_to_zero_changes_no_attribution(tmp_path: Path) -> None:
    """The DESIGN pitfall: at long T, backpropagated gradients turn subnormal. Flushing them
    to zero must leave the attributions as they are."""

    config = tiny_config(cell="lstm", emb=64, hidden=128, max_length=512)
    module = build_model(config, len(VOCAB), seed=0).eval()
    export_model(module, tmp_path / "long" / "1", vocabulary=VOCAB)
    loaded = load_model(tmp_path, "long")
    values = np.random.default_rng(0).integers(2, len(VOCAB), size=256).astype(np.int64)
    problem = make_problem(loaded, values)
    raw = _on_thread(lambda: gradient_at(problem, "probe"), flush=False)
    assert isinstance(raw, torch.Tensor)
    subnormal = (raw != 0) & (raw.abs() < torch.finfo(torch.float32).tiny)
    assert bool(subnormal.any()), "no subnormal gradients: the test would not exercise flushing"
    flushed = _on_thread(lambda: integrate(problem, "gauss_legendre", 8), flush=True)
    unflushed = _on_thread(lambda: integrate(problem, "gauss_legendre", 8), flush=False)
    assert isinstance(flushed, torch.Tensor) and isinstance(unflushed, torch.Tensor)
    assert_rel(flushed.numpy(), unflushed, tol=1e-6)


def test_deadline_stops_gradient_work_between_chunks(family: Family) -> None:
    loaded = family("lstm_tokens_cls")
    values = sample_values(loaded)
    control = WorkControl(deadline=time.monotonic() - 1.0)
    problem = make_problem(loaded, values, control=control)
    with pytest.raises(DeadlineExceeded, match="deadline exceeded during integrated_gradients"):
        integrate(problem, "gauss_legendre", 10)


class CancelOnCheck(WorkControl):
    """Cancels itself at its n-th check, as the event loop does when the RPC is cancelled."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.checks = 0

    def check(self, what: str) -> None:
        self.checks += 1
        if self.checks == self.at:
            self.cancelled.set()
        super().check(what)


def test_cancellation_stops_gradient_work_between_chunks(family: Family) -> None:
    loaded = family("lstm_tokens_cls")
    values = sample_values(loaded)
    control = CancelOnCheck(at=3)
    width = loaded.config.architecture.embedding_dim
    problem = make_problem(loaded, values, control=control, chunk_elements=len(values) * width)  # 1 row/pass
    with pytest.raises(Cancelled):
        integrate(problem, "gauss_legendre", 50)
    assert control.checks == 3  # two chunks ran, the third never started


def test_gradient_workers_run_at_a_lower_priority() -> None:
    """Explanations yield the CPU to predictions: the pool's threads are niced."""
    import os
    import threading

    from seqlens.explainers.gradients import GRADIENT_NICE, gradient_executor

    pool = gradient_executor(1)
    try:
        nice = pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
    finally:
        pool.shutdown()
    assert nice >= min(19, os.getpriority(os.PRIO_PROCESS, 0) + GRADIENT_NICE)
