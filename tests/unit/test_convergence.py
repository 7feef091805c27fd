"""``converged`` tells the truth (issue: the default explanation must add up).

For every method with a completeness delta, ``converged`` is true exactly when |delta| <=
tolerance x |f(x) - f(baseline)| + 1e-6 (and, for adaptive IG, its refinement rule held);
methods without a delta report none (absent on the wire, not 0.0 / true).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from seqlens.config import Settings
from seqlens.explain import ExplainRequest, explain
from seqlens.explainers.options import MethodOptions
from seqlens.grpc.converters import attribution_to_proto
from seqlens.inputs import SequenceInput
from seqlens.versions import LoadedVersion

from tests.unit import test_explainers_common as common
from tests.unit.test_explainers_common import FEATURE_FAMILIES, sample_values

Family = Callable[[str], LoadedVersion]
family_repo, family = common.family_repo, common.family  # the shared session fixtures

SETTINGS = Settings(gradient_chunk_elements=4_000_000)
FLOOR = 1e-6


def _explain(loaded, *methods: MethodOptions, baseline: str = "default"):  # type: ignore[no-untyped-def]
    values = sample_values(loaded, seed=3)
    inp = SequenceInput(token_ids=values) if loaded.config.is_tokens else SequenceInput(features=values)
    request = ExplainRequest(loaded.name, inp, methods=methods, baseline_kind=baseline)  # type: ignore[arg-type]
    return explain(loaded, request, SETTINGS).attributions


def _honest(att) -> bool:  # type: ignore[no-untyped-def]
    gap = att.target_at_input - att.target_at_baseline
    return abs(att.convergence_delta) <= att.tolerance * abs(gap) + FLOOR


# (method options, tolerance the answer must be judged against)
WITH_DELTA = [
    (MethodOptions("integrated_gradients", n_steps=2), 0.01),
    (MethodOptions("integrated_gradients", n_steps=2, tolerance=0.5), 0.5),
    (MethodOptions("integrated_gradients", n_steps=64, quadrature="riemann_trapezoid"), 0.01),
    (MethodOptions("integrated_gradients"), 0.01),
    (MethodOptions("integrated_gradients", adaptive=True, tolerance=0.05), 0.05),
    (MethodOptions("gradient_shap", n_samples=3), 0.01),
    (MethodOptions("gradient_shap", n_samples=3, noise_stdev=0.5, tolerance=0.3), 0.3),
    (MethodOptions("shapley_sampling", n_samples=4), 0.01),
]


@pytest.mark.parametrize("name", ["lstm_tokens_cls", "gru_tokens_bi_tag", *FEATURE_FAMILIES])
@pytest.mark.parametrize(("opts", "tol"), WITH_DELTA, ids=lambda v: str(v) if isinstance(v, float) else
                         f"{v.name}-{v.n_steps or v.n_samples}-{v.tolerance}-{v.adaptive}")
def test_converged_is_false_exactly_when_the_tolerance_is_missed(family: Family, name: str,
                                                                  opts: MethodOptions, tol: float) -> None:
    loaded = family(name)
    if opts.name == "shapley_sampling" and loaded.config.is_tokens:
        baseline = "pad"
    else:
        baseline = "default"
    (att,) = _explain(loaded, opts, baseline=baseline)
    assert att.convergence_delta is not None and att.tolerance == tol
    if opts.name == "integrated_gradients" and (opts.adaptive or not opts.n_steps):
        # adaptive: the delta rule AND the refinement rule; it may be false only if the delta
        # rule fails or the work cap stopped refinement (n_steps then at the cap)
        assert not att.converged or _honest(att)
    else:
        assert att.converged is _honest(att)
    msg = attribution_to_proto(att)
    assert msg.HasField("converged") and msg.converged == att.converged
    assert msg.tolerance == tol and msg.convergence_delta == att.convergence_delta


def test_two_steps_of_ig_on_a_random_lstm_are_reported_unconverged(family: Family) -> None:
    """The case a quarter of real reviews hit: a fixed step count that does not add up is said so."""
    (att,) = _explain(family("lstm_features_bi2_cls"), MethodOptions("integrated_gradients", n_steps=2,
                                                                     quadrature="riemann_right"))
    assert not _honest(att) and att.converged is False
    assert att.relative_delta is not None and att.relative_delta > 0.01


@pytest.mark.parametrize("opts", [MethodOptions("saliency"), MethodOptions("input_x_gradient"),
                                  MethodOptions("smoothgrad", n_samples=3),
                                  MethodOptions("occlusion", window=2), MethodOptions("feature_ablation")],
                         ids=lambda o: o.name)
def test_methods_without_a_delta_report_none(family: Family, opts: MethodOptions) -> None:
    (att,) = _explain(family("lstm_features_bi2_cls"), opts)
    assert att.convergence_delta is None and att.converged is None and att.tolerance is None
    assert att.relative_delta is None
    msg = attribution_to_proto(att)
    for field in ("convergence_delta", "converged", "tolerance", "relative_delta"):
        assert not msg.HasField(field), field


def test_a_caller_who_sets_n_steps_gets_exactly_that_many(family: Family) -> None:
    (att,) = _explain(family("lstm_tokens_cls"), MethodOptions("integrated_gradients", n_steps=7))
    assert att.n_steps == 7


def test_bad_tolerance_is_refused_for_every_method_with_a_delta(family: Family) -> None:
    from seqlens.errors import InvalidInput

    for name in ("integrated_gradients", "gradient_shap", "shapley_sampling"):
        with pytest.raises(InvalidInput, match=rf"{name}\.tolerance is 1\.5"):
            _explain(family("gru_features_tag"), MethodOptions(name, tolerance=1.5))


def test_relative_delta_on_the_wire_is_delta_over_the_gap(family: Family) -> None:
    (att,) = _explain(family("rnn_features_fc"), MethodOptions("integrated_gradients", n_steps=3))
    msg = attribution_to_proto(att)
    gap = abs(att.target_at_input - att.target_at_baseline)
    assert msg.relative_delta == pytest.approx(abs(att.convergence_delta) / gap, rel=1e-12)
    assert np.isfinite(msg.relative_delta)
