"""Issue #19 (item 4): an option a method does not take is refused while planning, naming the
method, before any model work; the SDK refuses it too and accepts the API's upper-case names."""

from __future__ import annotations

import dataclasses

import pytest
from seqlens.errors import InvalidInput
from seqlens.explainers import PLANNERS, plan_method
from seqlens.explainers.options import MethodOptions, PlanContext
from seqlens_client import Method
from seqlens_client._proto.seqlens.v1 import explain_pb2
from seqlens_client.options import METHOD_OPTIONS, Baseline, Target

CTX = PlanContext(length=6, num_features=3, is_tokens=False, max_steps=64, baseline_kind="zeros",
                  baseline_replaces_ids=True)
# A value other than "unset" for every option, each valid where it applies.
SET = {"n_steps": 4, "quadrature": "riemann_left", "adaptive": True, "tolerance": 0.05, "max_steps": 32,
       "n_samples": 3, "noise_stdev": 0.1, "seed": 7, "window": 2, "stride": 1, "ablation": "per_feature",
       "abs_saliency": False}
SDK_SET = {**SET, "quadrature": "riemann_left"}


def test_sdk_and_server_agree_on_what_each_method_takes() -> None:
    assert set(METHOD_OPTIONS) == set(PLANNERS)
    for name in PLANNERS:
        module = PLANNERS[name].__module__
        own = __import__(module, fromlist=["OPTIONS"]).OPTIONS
        assert tuple(METHOD_OPTIONS[name]) == tuple(own), name


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_every_option_a_method_does_not_take_is_refused(name: str) -> None:
    takes = METHOD_OPTIONS[name]
    own = {o: SET[o] for o in takes}
    if name == "occlusion":
        own["window"] = 2
    plan_method(MethodOptions(name, **own), CTX)  # its own options plan fine
    for option, value in SET.items():
        if option in takes:
            continue
        opts = dataclasses.replace(MethodOptions(name, **own), **{option: value})
        with pytest.raises(InvalidInput) as err:
            plan_method(opts, CTX)
        assert f"{name}.{option}" in err.value.message and f"does not take {option}" in err.value.message
        with pytest.raises(ValueError, match=f"method {name} does not take {option}"):
            Method(name, **{**own, option: SDK_SET[option]}).to_proto()


def test_saliency_with_a_window_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"saliency.window is 3, but saliency does not take window"):
        plan_method(MethodOptions("saliency", window=3), CTX)


def test_documented_upper_case_spellings() -> None:
    assert Method("feature_ablation", ablation="PER_FEATURE").to_proto().ablation == explain_pb2.ABLATION_MODE_PER_FEATURE  # type: ignore[arg-type]
    assert Method("shapley_sampling", ablation="PER_TIMESTEP").to_proto().ablation == explain_pb2.ABLATION_MODE_PER_TIMESTEP  # type: ignore[arg-type]
    assert Method("integrated_gradients", quadrature="RIEMANN_TRAPEZOID",  # type: ignore[arg-type]
                  n_steps=4).to_proto().quadrature == explain_pb2.QUADRATURE_RIEMANN_TRAPEZOID
    assert Target(output_space="PROBABILITY").to_proto().output_space == explain_pb2.OUTPUT_SPACE_PROBABILITY  # type: ignore[arg-type]
    assert Baseline("PAD").to_proto().kind == explain_pb2.BASELINE_KIND_PAD  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ablation must be one of"):
        Method("feature_ablation", ablation="PER_STEP").to_proto()  # type: ignore[arg-type]
