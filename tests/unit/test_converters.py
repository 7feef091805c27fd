"""The gRPC converters on their own (issue #15, item 8): decoding checks name the field and what to
fix, presence is kept (optional fields stay absent, never 0.0 / false), and what the server writes
the SDK reads back unchanged. Enum round trips: test_wire_vocabulary.py."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from seqlens.carry import CarriedState
from seqlens.errors import InvalidInput
from seqlens.explainers.result import Attribution, MethodOutput, attribution
from seqlens.grpc import converters as conv
from seqlens.grpc.interceptors import status_for
from seqlens.summaries import DEFAULT_TOP_K
from seqlens_client import results as sdk_results
from seqlens_client.carry import RecurrentState
from seqlens_client.report import data as report_data
from seqlens_client.report import text as report_text
from seqlens_client.stubs import explain_pb2, oip_pb2, recurrent_pb2, state_pb2, types_pb2


def _invalid(call: object, *args: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match) as err:
        call(*args)  # type: ignore[operator]
    assert status_for(err.value) == grpc.StatusCode.INVALID_ARGUMENT


# --- tensors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "nbytes", "match"), [
    ([], 4, r"x\.shape \[\] is invalid: give 1-4"),
    ([1, 1, 1, 1, 1], 4, r"x\.shape \[1, 1, 1, 1, 1\] is invalid"),
    ([2, -1], 0, r"x\.shape \[2, -1\] is invalid"),
    ([2, 3], 20, r"x\.data has 20 bytes; shape \[2, 3\] of float32 needs 24"),
    ([2**40, 2**40], 8, r"needs 4835703278458516698824704"),  # Python ints: no overflow
])
def test_bad_tensors_name_the_field(shape: list[int], nbytes: int, match: str) -> None:
    msg = types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_FLOAT32, shape=shape, data=b"\0" * nbytes)
    _invalid(conv.tensor_to_numpy, msg, "x", match=match)


def test_tensor_bytes_are_little_endian_whatever_the_host() -> None:
    data = np.array([1.0, -2.5], dtype=">f4").astype("<f4").tobytes()
    arr = conv.tensor_to_numpy(types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_FLOAT32, shape=[2], data=data), "x")
    assert arr.tolist() == [1.0, -2.5] and arr.dtype.isnative
    assert conv.numpy_to_tensor(np.array([1.0, -2.5], dtype=">f8")).data == data  # any float -> <f4


# --- inputs --------------------------------------------------------------------------------------
def test_sequence_input_kinds() -> None:
    assert conv.sequence_input(types_pb2.SequenceInput(text="a b"), "input").text == "a b"
    ids = conv.sequence_input(types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=[3, 4])), "input").token_ids
    assert ids is not None and ids.dtype == np.int64 and ids.tolist() == [3, 4]
    feats = np.arange(6, dtype=np.float32).reshape(3, 2)
    got = conv.sequence_input(types_pb2.SequenceInput(features=conv.numpy_to_tensor(feats)), "input").features
    assert got is not None and np.array_equal(got, feats)


def test_bad_sequence_inputs() -> None:
    _invalid(conv.sequence_input, types_pb2.SequenceInput(), "input", match="input: set one of text, token_ids")
    ints = conv.numpy_to_tensor(np.zeros((2, 2), dtype=np.int64))
    _invalid(conv.sequence_input, types_pb2.SequenceInput(features=ints), "baseline.custom",
             match=r"baseline\.custom\.features must be FLOAT32")
    flat = conv.numpy_to_tensor(np.zeros(3, dtype=np.float32))
    _invalid(conv.sequence_input, types_pb2.SequenceInput(features=flat), "input",
             match=r"input\.features must be \[T, F\], got shape \[3\]")


# --- explain options -----------------------------------------------------------------------------
def test_optional_fields_keep_their_presence() -> None:
    assert conv.method_options(explain_pb2.AttributionMethod(name="saliency"), "m").abs_saliency is None
    assert conv.method_options(explain_pb2.AttributionMethod(name="saliency", abs_saliency=False), "m"
                               ).abs_saliency is False
    t = conv.target_spec(explain_pb2.Target(timestep=0))
    assert (t.class_index, t.label, t.timestep, t.horizon_step) == (None, None, 0, None)  # 0 is set, not unset
    t = conv.target_spec(explain_pb2.Target(label="neg"))
    assert (t.class_index, t.label) == (None, "neg")
    t = conv.target_spec(explain_pb2.Target(class_index=0, horizon_step=2))
    assert (t.class_index, t.label, t.horizon_step) == (0, None, 2)


def test_state_options() -> None:
    assert conv.state_options(state_pb2.StateOptions(enabled=True)).top_k == DEFAULT_TOP_K  # 0 = the default
    opts = conv.state_options(state_pb2.StateOptions(enabled=True, summaries=["gate_mean"], top_k=3,
                                                     include_hidden=True))
    assert (opts.summaries, opts.top_k, opts.include_hidden, opts.include_cell) == (("gate_mean",), 3, True, False)
    req = conv.explain_request(explain_pb2.ExplainRequest(input=types_pb2.SequenceInput(text="a")))
    assert req.state is None and req.methods == () and req.initial_state is None


# --- attributions: the convergence facts travel as they are ---------------------------------------
def _attr(method: str, delta: float | None = None, endpoints: tuple[float, float] = (0.0, 0.0)) -> Attribution:
    scores = np.array([0.5, -0.25], dtype=np.float32)
    out = MethodOutput(method=method, full=scores, scores=scores, n_steps=8)
    if delta is not None:
        out = out.with_delta(delta, tolerance=0.01)
    return attribution(out, endpoints, seconds=0.0)


def test_a_method_without_a_delta_sends_no_convergence_facts() -> None:
    msg = conv.attribution_to_proto(_attr("saliency"))
    for field in ("convergence_delta", "converged", "tolerance", "relative_delta"):
        assert not msg.HasField(field), field
    sdk = sdk_results.Attribution.from_proto(msg)
    assert not sdk.has_delta and sdk.converged is None and sdk.relative_delta is None and sdk.warning is None


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_shap", "shapley_sampling"])
def test_a_delta_reaches_the_sdk_with_the_servers_relative_delta(method: str) -> None:
    a = _attr(method, 0.05, endpoints=(2.0, 1.0))
    sdk = sdk_results.Attribution.from_proto(conv.attribution_to_proto(a))
    assert sdk.has_delta and sdk.convergence_delta == pytest.approx(0.05)
    assert sdk.converged is False and sdk.tolerance == pytest.approx(0.01)
    assert a.relative_delta is not None and sdk.relative_delta == pytest.approx(a.relative_delta)  # 0.05 / 1.0
    assert sdk.warning is not None and "5.0% of" in sdk.warning
    # both reports show it, whatever the method (they read presence, not the method's name)
    assert "NOT converged, delta +5.00e-02 (5.00%)" in report_text._quality(sdk)
    html = report_data._method(method, sdk)
    assert html["integral"] and html["relative_delta"] == pytest.approx(0.05)


def test_a_zero_gap_has_a_delta_but_no_relative_delta() -> None:
    a = _attr("integrated_gradients", 0.0, endpoints=(1.0, 1.0))
    msg = conv.attribution_to_proto(a)
    assert msg.HasField("convergence_delta") and msg.converged and not msg.HasField("relative_delta")
    sdk = sdk_results.Attribution.from_proto(msg)
    assert sdk.has_delta and sdk.relative_delta is None and sdk.warning is None


# --- carried state and server-held sequences ------------------------------------------------------
def test_recurrent_state_round_trips_through_the_sdk() -> None:
    state = CarriedState("m", "2", 7, {"layer0.forward.h": np.array([0.5, -1.0], dtype=np.float32)})
    sdk = RecurrentState.from_proto(conv.recurrent_state_to_proto(state))
    assert (sdk.model_name, sdk.model_version, sdk.steps) == ("m", "2", 7)
    back = conv.recurrent_state(sdk.to_proto(), "initial_state")
    assert back.steps == 7 and list(back.tensors) == ["layer0.forward.h"]
    assert np.array_equal(back.tensors["layer0.forward.h"], state.tensors["layer0.forward.h"])


def test_bad_recurrent_states() -> None:
    t = conv.numpy_to_tensor(np.zeros(2, dtype=np.float32))
    _invalid(conv.recurrent_state, recurrent_pb2.RecurrentState(tensors=[recurrent_pb2.StateTensor(tensor=t)]),
             "states[1]", match=r"states\[1\]\.tensors\[0\]\.name is empty")
    twice = [recurrent_pb2.StateTensor(name="h", tensor=t)] * 2
    _invalid(conv.recurrent_state, recurrent_pb2.RecurrentState(tensors=twice), "s",
             match=r"s\.tensors\[1\]\.name 'h' appears twice")
    ints = conv.numpy_to_tensor(np.zeros(2, dtype=np.int64))
    _invalid(conv.recurrent_state, recurrent_pb2.RecurrentState(
        tensors=[recurrent_pb2.StateTensor(name="h", tensor=ints)]), "s",
        match=r"s\.tensors\[0\]\.tensor\.dtype must be DATA_TYPE_FLOAT32")


@pytest.mark.parametrize("control", [recurrent_pb2.SequenceControl(), recurrent_pb2.SequenceControl(string_id=""),
                                     recurrent_pb2.SequenceControl(uint_id=0)])
def test_a_sequence_needs_an_id(control: recurrent_pb2.SequenceControl) -> None:
    _invalid(conv.sequence_ref, control, "sequence", match="sequence: set string_id .non-empty. or uint_id")


def test_sequence_ids_and_flags() -> None:
    ref = conv.sequence_ref(recurrent_pb2.SequenceControl(uint_id=9, start=True), "sequence")
    assert (ref.seq_id, ref.start, ref.end) == (9, True, False)
    ref = conv.sequence_ref(recurrent_pb2.SequenceControl(string_id="a", end=True), "sequence")
    assert (ref.seq_id, ref.start, ref.end) == ("a", False, True)


def _oip(**params: oip_pb2.InferParameter) -> oip_pb2.ModelInferRequest:
    req = oip_pb2.ModelInferRequest(model_name="m")
    for k, v in params.items():
        req.parameters[k].CopyFrom(v)
    return req


def test_oip_sequence_parameters() -> None:
    assert conv.oip_sequence(_oip()) is None
    ref = conv.oip_sequence(_oip(sequence_id=oip_pb2.InferParameter(string_param="s"),
                                 sequence_end=oip_pb2.InferParameter(bool_param=True)))
    assert ref is not None and (ref.seq_id, ref.start, ref.end) == ("s", False, True)
    _invalid(conv.oip_sequence, _oip(sequence_start=oip_pb2.InferParameter(bool_param=True)),
             match="sequence_start/sequence_end need parameter sequence_id")
    _invalid(conv.oip_sequence, _oip(sequence_id=oip_pb2.InferParameter(int64_param=0)),
             match="sequence_id must be a positive integer or a non-empty string")
    _invalid(conv.oip_sequence, _oip(sequence_id=oip_pb2.InferParameter(int64_param=3),
                                     sequence_start=oip_pb2.InferParameter(int64_param=1)),
             match="parameter sequence_start must be a bool")


# --- stream item errors ---------------------------------------------------------------------------
def test_stream_item_errors_carry_the_code_number_and_message() -> None:
    msg = conv.explain_error("r7", grpc.StatusCode.NOT_FOUND.value[0], "no model 'x'")
    assert (msg.request_id, msg.error.code, msg.error.message) == ("r7", 5, "no model 'x'")
    chunk = conv.chunk_error("c1", grpc.StatusCode.INVALID_ARGUMENT.value[0], "bad chunk")
    assert (chunk.request_id, chunk.error.code, chunk.error.message) == ("c1", 3, "bad chunk")
