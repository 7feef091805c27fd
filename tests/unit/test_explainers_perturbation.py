"""Perturbation methods (ONNX Runtime) equal Captum's (torch) on every family; faithfulness
follows the ERASER definitions."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import FeatureAblation, Occlusion, ShapleyValueSampling
from seqlens import load_model
from seqlens.explainers import faithfulness as faith
from seqlens.explainers import feature_ablation, occlusion, prefix, shapley_sampling
from seqlens.explainers.options import MethodOptions, PlanContext
from seqlens.explainers.perturbation import apply_masks
from seqlens.explainers.running import run_plan
from seqlens.explainers.targets import TargetSpec
from seqlens.versions import LoadedVersion

from tests.factories import export_tiny
from tests.unit import test_explainers_common as common
from tests.unit.test_explainers_common import (
    FAMILIES,
    FEATURE_FAMILIES,
    TOKEN_FAMILIES,
    assert_rel,
    captum_target,
    forward_inputs,
    lengths_arg,
    make_problem,
    output_rounding,
    sample_values,
)

family_repo, family = common.family_repo, common.family  # the shared session fixtures

Family = Callable[[str], LoadedVersion]


def _ctx(loaded: LoadedVersion, length: int) -> PlanContext:
    return PlanContext(length=length, num_features=loaded.config.num_features,
                       is_tokens=loaded.config.is_tokens,
                       max_steps=1024, baseline_kind="pad", baseline_replaces_ids=True)


def _step_mask(length: int) -> torch.Tensor:
    """Captum feature mask [1,T,F]: every feature of a step in the step's group."""
    return torch.arange(length).view(1, -1, 1).expand(1, -1, 3).contiguous()


def _captum_inputs(problem):  # type: ignore[no-untyped-def]
    """Model inputs and the removal baseline as Captum takes them."""
    x = torch.from_numpy(problem.values)[None]
    if problem.is_tokens:
        return x, int(problem.removal_values[0])  # PAD id
    return x, torch.from_numpy(problem.removal_values)[None]


@pytest.mark.parametrize(("window", "stride"), [(1, 1), (3, 1), (3, 2), (4, 3), (9, 1)])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_occlusion_equals_captum(family: Family, name: str, window: int, stride: int) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded, seed=1))
    ours = occlusion.plan(MethodOptions("occlusion", window=window, stride=stride),
                          _ctx(loaded, problem.length)).run(problem)
    x, base = _captum_inputs(problem)
    shape, strides = ((window,), (stride,)) if problem.is_tokens else ((window, 3), (stride, 1))
    ref = Occlusion(forward_inputs(loaded, problem.target)).attribute(
        x, sliding_window_shapes=shape, strides=strides, baselines=base, target=captum_target(problem.target),
        additional_forward_args=lengths_arg(problem))
    assert_rel(ours.full, ref, atol=output_rounding(problem))
    assert ours.n_steps == math.ceil((problem.length - window) / stride) + 1
    if not problem.is_tokens:  # scores: the per-step value, not F times it
        np.testing.assert_allclose(ours.scores, ours.full[:, 0], rtol=1e-6)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_feature_ablation_per_timestep_equals_captum(family: Family, name: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded, seed=2), TargetSpec(output_space="logit"))
    ours = feature_ablation.plan(MethodOptions("feature_ablation"), _ctx(loaded, problem.length)).run(problem)
    x, base = _captum_inputs(problem)
    mask = None if problem.is_tokens else _step_mask(problem.length)
    ref = FeatureAblation(forward_inputs(loaded, problem.target)).attribute(
        x, baselines=base, target=captum_target(problem.target), feature_mask=mask,
        additional_forward_args=lengths_arg(problem), perturbations_per_eval=problem.length)
    assert_rel(ours.full, ref, atol=output_rounding(problem))


@pytest.mark.parametrize("name", FEATURE_FAMILIES)
def test_feature_ablation_per_feature_equals_captum(family: Family, name: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded, seed=3), baseline="zeros")
    ours = feature_ablation.plan(MethodOptions("feature_ablation", ablation="per_feature"),
                                 _ctx(loaded, problem.length)).run(problem)
    x, base = _captum_inputs(problem)
    ref = FeatureAblation(forward_inputs(loaded, problem.target)).attribute(  # default mask: every cell
        x, baselines=base, target=captum_target(problem.target), additional_forward_args=lengths_arg(problem))
    assert_rel(ours.full, ref, atol=output_rounding(problem))
    np.testing.assert_allclose(ours.scores, ours.full.sum(axis=1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["lstm_tokens_cls", "gru_features_tag", "relu_tokens_bi_fc"])
def test_shapley_sampling_equals_captum_with_the_same_orders(family: Family, name: str) -> None:
    loaded = family(name)
    problem = make_problem(loaded, sample_values(loaded, length=6, seed=4))
    seed, samples = 7, 10
    x, base = _captum_inputs(problem)
    mask = None if problem.is_tokens else _step_mask(problem.length)
    torch.manual_seed(seed)  # Captum draws its orders with torch.randperm on the global generator
    ref = ShapleyValueSampling(forward_inputs(loaded, problem.target)).attribute(
        x, baselines=base, target=captum_target(problem.target), feature_mask=mask, n_samples=samples,
        additional_forward_args=lengths_arg(problem))
    ours = run_plan(shapley_sampling.plan(MethodOptions("shapley_sampling", n_samples=samples, seed=seed),
                                          _ctx(loaded, problem.length)), problem)
    assert_rel(ours.full, ref, atol=output_rounding(problem))
    gap = abs(ours.target_at_input - ours.target_at_baseline)
    assert abs(ours.convergence_delta) <= 1e-9 + 1e-9 * gap  # efficiency: credits sum to the gap


@pytest.mark.parametrize("name", TOKEN_FAMILIES)
def test_caller_token_ids_are_the_perturbation_baseline(family: Family, name: str) -> None:
    loaded = family(name)
    values = sample_values(loaded, seed=5)
    custom = np.roll(values, 1)
    problem = make_problem(loaded, values, baseline="custom", custom=custom)
    ours = feature_ablation.plan(MethodOptions("feature_ablation"), _ctx(loaded, len(values))).run(problem)
    ref = FeatureAblation(forward_inputs(loaded, problem.target)).attribute(
        torch.from_numpy(values)[None], baselines=torch.from_numpy(custom)[None],
        target=captum_target(problem.target), additional_forward_args=lengths_arg(problem))
    assert_rel(ours.full, ref, atol=output_rounding(problem))


def test_perturbations_run_in_chunks_with_the_same_answer(family: Family) -> None:
    loaded = family("lstm_features_bi2_cls")
    values = sample_values(loaded, length=12, seed=6)
    whole = make_problem(loaded, values)
    tiny = make_problem(loaded, values, chunk_elements=5 * 12 * loaded.config.architecture.embedding_dim)
    assert tiny.rows_per_chunk == 5
    plan = shapley_sampling.plan(MethodOptions("shapley_sampling", n_samples=3, ablation="per_feature"),
                                 _ctx(loaded, 12))
    np.testing.assert_allclose(plan.run(tiny).full, plan.run(whole).full, rtol=1e-6, atol=1e-7)


# --- faithfulness ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lstm_tokens_cls", "gru_features_tag", "rnn_features_fc"])
def test_faithfulness_follows_the_eraser_definitions(family: Family, name: str) -> None:
    loaded = family(name)
    t = 20
    values = sample_values(loaded, length=t, seed=7)
    problem = make_problem(loaded, values)
    scores = np.random.default_rng(0).normal(size=t)
    (result,) = faith.faithfulness(problem, [scores])
    assert result.top_k_percent == [1.0, 5.0, 10.0, 20.0, 50.0]
    space = "probability" if problem.target.is_class else "logit"

    def f(x: np.ndarray) -> float:  # the target in faithfulness space, by an independent forward
        out = torch.from_numpy(loaded.onnx.run(x[None], np.array([t]))[0])
        target = problem.target
        if not target.is_class:
            return float(out[target.horizon_step])
        step = out[target.timestep] if target.timestep >= 0 else out
        return float(torch.softmax(step, -1)[target.class_index] if space == "probability"
                     else step[target.class_index])

    order = np.argsort(-scores, kind="stable")
    removal = problem.removal_values
    for i, pct in enumerate(result.top_k_percent):
        k = math.ceil(pct * t / 100)
        without, only = values.copy(), removal.copy()
        without[order[:k]] = removal[order[:k]]
        only[order[:k]] = values[order[:k]]
        assert result.comprehensiveness[i] == pytest.approx(f(values) - f(without), abs=1e-5)
        assert result.sufficiency[i] == pytest.approx(f(values) - f(only), abs=1e-5)
    assert result.aopc_comprehensiveness == pytest.approx(np.mean(result.comprehensiveness))
    assert result.aopc_sufficiency == pytest.approx(np.mean(result.sufficiency))
    assert len(result.random_comprehensiveness) == 5


def test_faithfulness_of_an_exact_ranking_beats_chance(family: Family) -> None:
    """Occlusion per step ranks steps by exactly what comprehensiveness at one step measures."""
    loaded = family("lstm_tokens_cls")
    problem = make_problem(loaded, sample_values(loaded, length=40, seed=9))
    occ = occlusion.plan(MethodOptions("occlusion", window=1), _ctx(loaded, 40)).run(problem)
    (result,) = faith.faithfulness(problem, [occ.scores])
    assert result.comprehensiveness[0] >= max(result.random_comprehensiveness[0], 0.0)


@pytest.mark.parametrize(("spec", "target"), [
    ({"cell": "lstm", "tokens": True, "task": "tagging", "layers": 2}, TargetSpec(timestep=13)),
    ({"cell": "gru", "tokens": True, "task": "classification", "layers": 2},
     TargetSpec(output_space="probability")),
    ({"cell": "rnn_tanh", "tokens": False, "task": "forecasting"}, TargetSpec(horizon_step=1)),
])
@pytest.mark.parametrize("chunk", [4_000_000, 40])
def test_late_starting_runs_equal_whole_runs_on_onnx(tmp_path: Path, spec: dict[str, object],
                                                    target: TargetSpec, chunk: int) -> None:
    """Unidirectional stacks run perturbed copies from cached states: same outputs as whole runs."""
    export_tiny(tmp_path, "uni", seed=3, **spec)  # type: ignore[arg-type]
    loaded = load_model(tmp_path, "uni")
    values = sample_values(loaded, length=40, seed=8)
    problem = make_problem(loaded, values, target, chunk_elements=chunk * 40)
    starts = np.array([0, 0, 1, 5, 5, 13, 14, 30, 39])
    masks = np.zeros((len(starts), 40), dtype=bool)
    masks[np.arange(len(starts)), starts] = True
    masks[1, 7] = True  # a second change later in the same variant

    def make(lo: int, hi: int) -> np.ndarray:
        return apply_masks(problem, masks[lo:hi])

    assert prefix.applies(problem)
    late, base = prefix.suffix_targets(problem, starts, make, "test")
    whole = problem.onnx_targets(len(starts), make, "test")
    np.testing.assert_allclose(late, whole, rtol=1e-5, atol=1e-6)
    assert base == pytest.approx(problem.onnx_endpoints[0], abs=1e-5)
    if target.timestep is not None:  # steps after the tagged one change nothing
        np.testing.assert_array_equal(late[starts > 13], base)
