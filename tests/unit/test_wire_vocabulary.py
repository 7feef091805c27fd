"""One wire vocabulary (issue #15, item 3): every enum value and every method name is spelled the
same by the SDK and the server, and round-trips SDK -> wire -> server domain -> wire -> SDK.

The oracle is the proto descriptor itself (the enum's values and their numbers), not the tables
under test. UNSPECIFIED reads as each enum's documented default; an unknown number is refused
with InvalidInput, which the server's one table maps to INVALID_ARGUMENT.
"""

from __future__ import annotations

import typing

import grpc
import numpy as np
import pytest
import seqlens_client.options as sdk_options
from seqlens import state_maths
from seqlens.errors import InvalidInput
from seqlens.explainers import PLANNERS
from seqlens.explainers.baselines import BaselineKind
from seqlens.explainers.options import AblationMode, Quadrature
from seqlens.explainers.targets import OutputSpace, ResolvedTarget
from seqlens.grpc import converters as conv
from seqlens.grpc.interceptors import status_for
from seqlens.registry import VersionState
from seqlens.results import ModelDescription, ModelSummary, VersionInfo
from seqlens.schema import Task
from seqlens_client import results as sdk_results
from seqlens_client import vocabulary
from seqlens_client.options import Baseline, Method, Target
from seqlens_client.stubs import explain_pb2, models_pb2, types_pb2
from seqlens_client.tensors import from_numpy, to_numpy

ENUMS = [explain_pb2.OutputSpace, explain_pb2.Quadrature, explain_pb2.AblationMode, explain_pb2.BaselineKind,
         models_pb2.Task, models_pb2.InputKind, models_pb2.VersionState, types_pb2.DataType]


def _values(enum: type[int]) -> list[tuple[str, int]]:
    """(proto name, number) of every value, straight from the descriptor."""
    return [(v.name, v.number) for v in enum.DESCRIPTOR.values]  # type: ignore[attr-defined]


def _short(enum: type[int], proto_name: str) -> str:
    return proto_name.removeprefix(vocabulary.prefix(enum)).lower()


# --- the vocabulary itself ---------------------------------------------------------------------
@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.DESCRIPTOR.name)
def test_every_value_has_one_name_both_ways(enum: type[int]) -> None:
    values = _values(enum)
    assert values[0] == (vocabulary.prefix(enum) + "UNSPECIFIED", 0)
    assert vocabulary.name(enum, 0) == "default" and vocabulary.number(enum, "default") == 0
    for proto_name, n in values[1:]:
        short = _short(enum, proto_name)
        assert vocabulary.name(enum, n) == short
        # every spelling a caller may use: short, upper short, the proto's own
        for spelling in (short, short.upper(), proto_name):
            assert vocabulary.number(enum, spelling) == n
    assert vocabulary.names(enum) == {_short(enum, p): n for p, n in values[1:]}
    assert vocabulary.name(enum, 999) is None
    with pytest.raises(ValueError, match="must be one of"):
        vocabulary.number(enum, "no_such_value")


# --- server domain types use the same names ----------------------------------------------------
@pytest.mark.parametrize(("enum", "literal", "extra"), [
    (explain_pb2.Quadrature, Quadrature, set()),
    (explain_pb2.AblationMode, AblationMode, set()),
    (explain_pb2.OutputSpace, OutputSpace, set()),
    (explain_pb2.BaselineKind, BaselineKind, {"default"}),  # the domain resolves "default" per model
    (models_pb2.Task, Task, set()),
], ids=lambda x: getattr(getattr(x, "DESCRIPTOR", None), "name", ""))
def test_server_domain_spells_enums_as_the_wire(enum: type[int], literal: object, extra: set[str]) -> None:
    assert set(typing.get_args(literal)) == set(vocabulary.names(enum)) | extra


def test_server_version_states_and_input_kinds_are_the_wire_names() -> None:
    assert {s.name.lower() for s in VersionState} == set(vocabulary.names(models_pb2.VersionState))
    assert set(conv._KINDS) == set(vocabulary.names(models_pb2.InputKind)) == {"tokens", "features"}


def test_sdk_types_spell_enums_as_the_wire() -> None:
    hints = {c: typing.get_type_hints(c) for c in (Method, Target, Baseline)}
    assert set(typing.get_args(hints[Method]["quadrature"])) == set(vocabulary.names(explain_pb2.Quadrature))
    assert set(typing.get_args(hints[Method]["ablation"])) == set(vocabulary.names(explain_pb2.AblationMode))
    assert set(typing.get_args(hints[Target]["output_space"])) == set(vocabulary.names(explain_pb2.OutputSpace))
    assert set(typing.get_args(hints[Baseline]["kind"])) == {"default", *vocabulary.names(explain_pb2.BaselineKind)}


def test_method_and_summary_names_are_the_same_on_both_sides() -> None:
    assert set(sdk_options.METHODS) == set(PLANNERS)
    assert tuple(sdk_options.STATE_SUMMARIES) == tuple(state_maths.SUMMARIES)
    for name in sdk_options.METHODS:  # the name travels as is
        assert conv.method_options(Method(name).to_proto(), "m").name == name


# --- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("q", sorted(vocabulary.names(explain_pb2.Quadrature)))
def test_quadrature_round_trips(q: str) -> None:
    msg = Method("integrated_gradients", quadrature=q).to_proto()  # type: ignore[arg-type]
    assert msg.quadrature == vocabulary.names(explain_pb2.Quadrature)[q]
    assert conv.method_options(msg, "methods[0]").quadrature == q


@pytest.mark.parametrize("mode", sorted(vocabulary.names(explain_pb2.AblationMode)))
def test_ablation_round_trips(mode: str) -> None:
    msg = Method("feature_ablation", ablation=mode).to_proto()  # type: ignore[arg-type]
    assert conv.method_options(msg, "methods[0]").ablation == mode


@pytest.mark.parametrize("kind", ["default", "pad", "zeros", "training_mean", "custom"])
def test_baseline_kind_round_trips(kind: str) -> None:
    custom = [1, 2, 3] if kind == "custom" else None
    base = Baseline(kind=kind, custom=custom).to_proto()  # type: ignore[arg-type]
    assert base.kind == vocabulary.number(explain_pb2.BaselineKind, kind)
    req = conv.explain_request(explain_pb2.ExplainRequest(
        model_name="m", input=types_pb2.SequenceInput(text="a b c"), baseline=base))
    assert req.baseline_kind == kind
    assert (req.baseline_custom is not None) == (kind == "custom")


@pytest.mark.parametrize("space", sorted(vocabulary.names(explain_pb2.OutputSpace)))
def test_output_space_round_trips_both_ways(space: str) -> None:
    spec = conv.target_spec(Target(output_space=space).to_proto())  # type: ignore[arg-type]
    assert spec.output_space == space
    back = conv.resolved_target_to_proto(ResolvedTarget(class_index=1, label="x", output_space=space))
    assert back.output_space == vocabulary.names(explain_pb2.OutputSpace)[space]  # explicit, never UNSPECIFIED
    assert sdk_results.ResolvedTarget.from_proto(back).output_space == space


@pytest.mark.parametrize("task", sorted(vocabulary.names(models_pb2.Task)))
@pytest.mark.parametrize("kind", sorted(vocabulary.names(models_pb2.InputKind)))
def test_task_and_input_kind_round_trip(task: str, kind: str) -> None:
    msg = conv.list_models_response([ModelSummary("m", task, kind, "1", ["1"], True)]).models[0]
    assert (msg.task, msg.input_kind) == (vocabulary.names(models_pb2.Task)[task],
                                         vocabulary.names(models_pb2.InputKind)[kind])
    got = sdk_results.ModelSummary.from_proto(msg)
    assert (got.task, got.input_kind) == (task, kind)


def test_unknown_task_is_unspecified_on_the_wire_and_in_the_sdk() -> None:
    msg = conv.list_models_response([ModelSummary("m", "", "", "", [], False)]).models[0]
    assert (msg.task, msg.input_kind) == (models_pb2.TASK_UNSPECIFIED, models_pb2.INPUT_KIND_UNSPECIFIED)
    got = sdk_results.ModelSummary.from_proto(msg)
    assert (got.task, got.input_kind) == ("unspecified", "unspecified")
    # a value newer than the SDK reads the same way, not as an error
    assert sdk_results.ModelSummary.from_proto(models_pb2.ModelSummary(name="m", task=99)).task == "unspecified"  # type: ignore[arg-type]


@pytest.mark.parametrize("state", list(VersionState), ids=lambda s: s.name)
def test_version_state_round_trips(state: VersionState) -> None:
    desc = ModelDescription(name="m", default_version="1", versions=[VersionInfo("1", state, "why")],
                            attribution_methods=[], state_summaries=[], max_length=1, min_length=1, max_batch=1,
                            max_explain_work=1, max_steps=1)
    msg = conv.model_info(desc).versions[0]
    assert models_pb2.VersionState.Name(msg.state) == "VERSION_STATE_" + state.name
    assert sdk_results.VersionStatus.from_proto(msg).state == state.name.lower()


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_data_types_round_trip_both_ways(dtype: type) -> None:
    arr: np.ndarray = np.arange(6, dtype=dtype).reshape(2, 3)
    wire = conv.numpy_to_tensor(arr)  # server -> SDK
    assert wire.dtype == (types_pb2.DATA_TYPE_FLOAT32 if dtype is np.float32 else types_pb2.DATA_TYPE_INT64)
    np.testing.assert_array_equal(to_numpy(wire), arr)
    assert to_numpy(wire).dtype == dtype
    back = conv.tensor_to_numpy(from_numpy(arr), "t")  # SDK -> server
    np.testing.assert_array_equal(back, arr)
    assert back.dtype == dtype


# --- UNSPECIFIED is the documented default -------------------------------------------------------
def test_unspecified_reads_as_the_documented_default() -> None:
    opts = conv.method_options(explain_pb2.AttributionMethod(name="integrated_gradients"), "methods[0]")
    assert (opts.quadrature, opts.ablation) == ("gauss_legendre", "per_timestep")
    assert conv.target_spec(explain_pb2.Target()).output_space == "logit"
    req = conv.explain_request(explain_pb2.ExplainRequest(model_name="m", input=types_pb2.SequenceInput(text="a")))
    assert req.baseline_kind == "default"
    unset = types_pb2.Tensor(shape=[2], data=np.array([1.5, 2.5], "<f4").tobytes())  # dtype left out
    assert conv.tensor_to_numpy(unset, "t").dtype == np.float32
    assert to_numpy(unset).dtype == np.float32
    # the SDK reads a server's UNSPECIFIED output space as the default too
    assert sdk_results.ResolvedTarget.from_proto(explain_pb2.ResolvedTarget()).output_space == "logit"
    # and sends its documented defaults so that the server reads them as unset
    m = Method("saliency").to_proto()
    assert conv.method_options(m, "methods[0]").quadrature == "gauss_legendre"


def test_the_sdk_sends_default_as_unspecified() -> None:
    assert Method("integrated_gradients", quadrature="default").to_proto().quadrature == 0  # type: ignore[arg-type]
    assert Baseline().to_proto().kind == explain_pb2.BASELINE_KIND_UNSPECIFIED
    assert Method("saliency", quadrature="default").options_set() == []  # type: ignore[arg-type]
    assert Method("saliency", quadrature="QUADRATURE_GAUSS_LEGENDRE").options_set() == []  # type: ignore[arg-type]
    assert Method("saliency", quadrature="riemann_left").options_set() == ["quadrature"]


# --- unknown values ------------------------------------------------------------------------------
def _refused(call: typing.Callable[[], object], field: str, names: str) -> None:
    with pytest.raises(InvalidInput) as err:
        call()
    assert status_for(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    message = str(err.value)
    assert f"{field} has unknown value 42" in message and names in message and "unset" in message


def test_unknown_enum_values_are_invalid_argument_naming_the_field_and_the_values() -> None:
    _refused(lambda: conv.method_options(explain_pb2.AttributionMethod(name="x", quadrature=42), "methods[1]"),  # type: ignore[arg-type]
             "methods[1].quadrature", "QUADRATURE_GAUSS_LEGENDRE")
    _refused(lambda: conv.method_options(explain_pb2.AttributionMethod(name="x", ablation=42), "methods[0]"),  # type: ignore[arg-type]
             "methods[0].ablation", "ABLATION_MODE_PER_FEATURE")
    _refused(lambda: conv.target_spec(explain_pb2.Target(output_space=42)),  # type: ignore[arg-type]
             "target.output_space", "OUTPUT_SPACE_PROBABILITY")
    _refused(lambda: conv.explain_request(explain_pb2.ExplainRequest(
        input=types_pb2.SequenceInput(text="a"), baseline=explain_pb2.Baseline(kind=42))),  # type: ignore[arg-type]
        "baseline.kind", "BASELINE_KIND_TRAINING_MEAN")
    with pytest.raises(InvalidInput, match="dtype 42 is not supported; use DATA_TYPE_FLOAT32 or DATA_TYPE_INT64"):
        conv.tensor_to_numpy(types_pb2.Tensor(dtype=42, shape=[1], data=b"\0" * 4), "t")  # type: ignore[arg-type]


def test_the_sdk_refuses_unknown_names_before_any_call() -> None:
    with pytest.raises(ValueError, match=r"quadrature must be one of .*gauss_legendre"):
        Method("integrated_gradients", quadrature="simpson").to_proto()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="baseline must be one of"):
        Baseline(kind="mean").to_proto()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_space must be one of"):
        Target(output_space=1).to_proto()  # type: ignore[arg-type]
