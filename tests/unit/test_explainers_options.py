"""The explain orchestration: defaults, targets, baselines, option checks and work limits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from seqlens.config import Settings
from seqlens.errors import InvalidInput, ResourceExhausted
from seqlens.explain import ExplainRequest, explain
from seqlens.explainers import available_methods
from seqlens.explainers.options import MethodOptions
from seqlens.explainers.targets import TargetSpec
from seqlens.inputs import SequenceInput
from seqlens.summaries import StateOptions
from seqlens.versions import LoadedVersion

from tests.unit import test_explainers_common as common
from tests.unit.test_explainers_common import sample_values

family_repo, family = common.family_repo, common.family  # the shared session fixtures

Family = Callable[[str], LoadedVersion]
SETTINGS = Settings(max_steps=64, max_explain_work=20_000)


def _request(loaded: LoadedVersion, values: np.ndarray, *methods: MethodOptions,
             **kw: object) -> ExplainRequest:
    item = SequenceInput(token_ids=values) if loaded.config.is_tokens else SequenceInput(features=values)
    return ExplainRequest(loaded.name, item, methods=methods, **kw)  # type: ignore[arg-type]


def test_defaults_text_input_tokens_prediction_and_timings(family: Family) -> None:
    loaded = family("lstm_tokens_cls")
    request = ExplainRequest(loaded.name, SequenceInput(text="The film was  witty !"))
    result = explain(loaded, request, SETTINGS)
    assert [(t.text, t.start, t.end) for t in result.tokens or []] == [
        ("The", 0, 3), ("film", 4, 8), ("was", 9, 12), ("witty", 14, 19), ("!", 20, 21)]
    (att,) = result.attributions
    # The default IG is adaptive: it refines past its first estimate (30 rows) until it adds up.
    assert att.method == "integrated_gradients" and att.n_steps >= 30 and att.scores.shape == (5,)
    gap = att.target_at_input - att.target_at_baseline
    assert att.converged and att.tolerance == 0.01
    assert att.convergence_delta is not None and abs(att.convergence_delta) <= 0.01 * abs(gap) + 1e-6
    ids = np.array([t.id for t in result.tokens or []])
    logits = loaded.onnx.run(ids[None], np.array([5]))[0]
    assert result.target.class_index == int(np.argmax(logits)) == result.prediction.label_index
    np.testing.assert_allclose(result.prediction.scores, logits)
    assert att.target_at_input == pytest.approx(float(logits[result.target.class_index]), abs=1e-5)
    assert [s for s, _ in result.timings] == ["tokenize", "onnx", "gradient"]
    assert available_methods() == [
        "integrated_gradients", "saliency", "input_x_gradient", "gradient_shap", "smoothgrad", "occlusion",
        "feature_ablation", "shapley_sampling"]


def test_targets_resolve_per_task(family: Family) -> None:
    tagger = family("gru_tokens_bi_tag")
    values = sample_values(tagger, length=6)
    r = explain(tagger, _request(tagger, values, target=TargetSpec(label="pos", timestep=2,
                                                                   output_space="probability")), SETTINGS)
    assert (r.target.class_index, r.target.timestep, r.target.output_space) == (2, 2, "probability")
    probs = r.prediction.probabilities
    assert probs is not None
    assert r.attributions[0].target_at_input == pytest.approx(float(probs[2, 2]), abs=1e-5)
    r = explain(tagger, _request(tagger, values), SETTINGS)
    assert r.target.timestep == 5 and r.target.class_index == r.prediction.step_label_indices[5]
    forecaster = family("rnn_features_fc")
    r = explain(forecaster, _request(forecaster, sample_values(forecaster),
                                     target=TargetSpec(horizon_step=2)), SETTINGS)
    assert (r.target.horizon_step, r.target.class_index) == (2, -1)
    assert r.attributions[0].target_at_input == pytest.approx(float(r.prediction.scores[2]), abs=1e-4)


@pytest.mark.parametrize(("name", "target", "message"), [
    ("lstm_tokens_cls", TargetSpec(class_index=3), "target.class_index 3 is outside"),
    ("lstm_tokens_cls", TargetSpec(label="maybe"), "target.label 'maybe' is not one of"),
    ("lstm_tokens_cls", TargetSpec(timestep=1), "target.timestep applies to tagging"),
    ("lstm_tokens_cls", TargetSpec(horizon_step=0), "target.horizon_step applies to forecasting"),
    ("gru_tokens_bi_tag", TargetSpec(timestep=9), r"target.timestep 9 is outside \[0, 9\)"),
    ("rnn_features_fc", TargetSpec(horizon_step=3), r"target.horizon_step 3 is outside \[0, 3\)"),
    ("rnn_features_fc", TargetSpec(class_index=0), "has no classes"),
    ("rnn_features_fc", TargetSpec(output_space="probability"), "PROBABILITY needs classes"),
])
def test_bad_targets_are_invalid(family: Family, name: str, target: TargetSpec, message: str) -> None:
    loaded = family(name)
    with pytest.raises(InvalidInput, match=message):
        explain(loaded, _request(loaded, sample_values(loaded), target=target), SETTINGS)


@pytest.mark.parametrize(("name", "method", "kw", "message"), [
    ("lstm_tokens_cls", MethodOptions("lime"), {},
     "unknown attribution method 'lime'; available: integrated"),
    ("lstm_tokens_cls", MethodOptions("integrated_gradients", n_steps=65), {}, "n_steps is 65.*max_steps=64"),
    ("lstm_tokens_cls", MethodOptions("integrated_gradients", n_steps=1, quadrature="riemann_left"), {},
     "at least 2"),
    ("lstm_tokens_cls", MethodOptions("integrated_gradients", adaptive=True, tolerance=-0.1), {},
     r"tolerance is -0.1; it must be in \(0, 1\)"),
    ("lstm_tokens_cls", MethodOptions("integrated_gradients", adaptive=True, tolerance=float("nan")), {},
     "tolerance is nan"),
    ("lstm_tokens_cls", MethodOptions("integrated_gradients", adaptive=True, n_steps=8, max_steps=10), {},
     "max_steps is 10; adaptive refinement needs at least 2 x n_steps = 16"),
    ("lstm_tokens_cls", MethodOptions("gradient_shap", n_samples=100), {}, "n_samples is 100.*max_steps=64"),
    ("lstm_tokens_cls", MethodOptions("smoothgrad", noise_stdev=-1.0), {}, "noise_stdev is -1.0"),
    ("lstm_tokens_cls", MethodOptions("occlusion"), {}, "occlusion.window is 0"),
    ("lstm_tokens_cls", MethodOptions("occlusion", window=10), {}, "cannot exceed the sequence length 9"),
    ("lstm_tokens_cls", MethodOptions("occlusion", window=2, stride=3), {}, "stride is 3; it cannot exceed"),
    ("lstm_tokens_cls", MethodOptions("feature_ablation", ablation="per_feature"), {}, "applies to feature"),
    ("lstm_tokens_cls", MethodOptions("occlusion", window=1), {"baseline_kind": "zeros"},
     "occlusion replaces token ids, so baseline ZEROS"),
    ("lstm_tokens_cls", MethodOptions("shapley_sampling"), {"baseline_kind": "training_mean"},
     "baseline TRAINING_MEAN"),
    ("rnn_features_fc", MethodOptions("saliency"), {"baseline_kind": "pad"}, "baseline PAD applies to token"),
    ("rnn_features_fc", MethodOptions("saliency"), {"baseline_kind": "custom"},
     "baseline.custom must be set"),
    ("rnn_features_fc", MethodOptions("saliency"),
     {"baseline_kind": "custom", "baseline_custom": SequenceInput(features=np.zeros((4, 3), np.float32))},
     r"baseline.custom has shape \[4, 3\]; it must match the input's \[9, 3\]"),
    ("lstm_tokens_cls", MethodOptions("saliency"), {"state": StateOptions(summaries=("horoscope",))},
     "horoscope"),
])
def test_bad_options_are_invalid_before_any_work(family: Family, name: str, method: MethodOptions,
                                                 kw: dict[str, object], message: str) -> None:
    loaded = family(name)
    with pytest.raises(InvalidInput, match=message):
        explain(loaded, _request(loaded, sample_values(loaded), method, **kw), SETTINGS)


def test_work_over_the_limit_is_resource_exhausted_naming_it(family: Family) -> None:
    loaded = family("lstm_tokens_cls")
    values = sample_values(loaded, length=60)
    methods = (MethodOptions("integrated_gradients", n_steps=64), MethodOptions("occlusion", window=1),
               MethodOptions("shapley_sampling", n_samples=4))
    with pytest.raises(ResourceExhausted, match=r"needs 21840 units of work .*integrated_gradients 3840.*"
                                                r"the limit is max_explain_work=20000"):
        explain(loaded, _request(loaded, values, *methods), SETTINGS)
    with pytest.raises(ResourceExhausted, match="faithfulness"):
        explain(loaded, _request(loaded, values, MethodOptions("integrated_gradients", n_steps=64),
                                 faithfulness=True), Settings(max_explain_work=6500))
    explain(loaded, _request(loaded, values, MethodOptions("integrated_gradients", n_steps=64)),
            Settings(max_explain_work=6500))


def test_adaptive_ig_without_a_cap_fits_the_limit(family: Family) -> None:
    loaded = family("lstm_tokens_cls")
    values = sample_values(loaded, length=60)
    result = explain(loaded, _request(loaded, values, MethodOptions("occlusion", window=1),
                                      MethodOptions("integrated_gradients", adaptive=True, tolerance=1e-9)),
                     SETTINGS)
    ig = result.attributions[1]
    assert not ig.converged and 8 <= ig.n_steps <= 64  # stopped by the budget, said so


def test_every_method_on_every_input_kind_with_faithfulness_and_state(family: Family) -> None:
    for name in ("gru_features_tag", "relu_tokens_bi_fc"):
        loaded = family(name)
        methods = tuple(MethodOptions(m, window=2 if m == "occlusion" else 0) for m in available_methods())
        result = explain(loaded, _request(loaded, sample_values(loaded), *methods, faithfulness=True,
                                          state=StateOptions()), Settings())
        assert [a.method for a in result.attributions] == list(available_methods())
        for att in result.attributions:
            assert att.scores.shape == (9,) and np.isfinite(att.scores).all()
            assert att.faithfulness is not None and len(att.faithfulness.comprehensiveness) == 5
        assert result.state and [s for s, _ in result.timings] == [
            "tokenize", "onnx", "gradient", "summary", "faithfulness"]


def test_default_step_counts_follow_a_lower_server_cap(family: Family) -> None:
    """A server capped below IG's default of 50 steps still serves default requests."""
    loaded = family("lstm_tokens_cls")
    request = ExplainRequest(loaded.name, SequenceInput(text="the film was witty"))
    (att,) = explain(loaded, request, Settings(max_steps=20)).attributions
    # Adaptive within the cap: one 15-node panel fits in 20 rows, a refinement would not.
    assert att.n_steps == 15 and att.convergence_delta is not None
    gap = abs(att.target_at_input - att.target_at_baseline)
    assert att.converged is (abs(att.convergence_delta) <= 0.01 * gap + 1e-6) or not att.converged
