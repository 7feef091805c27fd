from seqlens_client._proto.seqlens.v1 import types_pb2 as _types_pb2
from seqlens_client._proto.seqlens.v1 import recurrent_pb2 as _recurrent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "inputs", "states", "return_state", "sequence")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    RETURN_STATE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    inputs: _containers.RepeatedCompositeFieldContainer[_types_pb2.SequenceInput]
    states: _containers.RepeatedCompositeFieldContainer[_recurrent_pb2.RecurrentState]
    return_state: bool
    sequence: _recurrent_pb2.SequenceControl
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_types_pb2.SequenceInput, _Mapping]]] = ..., states: _Optional[_Iterable[_Union[_recurrent_pb2.RecurrentState, _Mapping]]] = ..., return_state: _Optional[bool] = ..., sequence: _Optional[_Union[_recurrent_pb2.SequenceControl, _Mapping]] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("length", "tokens", "scores", "probabilities", "label_index", "label", "step_label_indices", "step_labels", "state")
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    LABEL_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    STEP_LABEL_INDICES_FIELD_NUMBER: _ClassVar[int]
    STEP_LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    length: int
    tokens: _containers.RepeatedCompositeFieldContainer[_types_pb2.Token]
    scores: _types_pb2.Tensor
    probabilities: _types_pb2.Tensor
    label_index: int
    label: str
    step_label_indices: _containers.RepeatedScalarFieldContainer[int]
    step_labels: _containers.RepeatedScalarFieldContainer[str]
    state: _recurrent_pb2.RecurrentState
    def __init__(self, length: _Optional[int] = ..., tokens: _Optional[_Iterable[_Union[_types_pb2.Token, _Mapping]]] = ..., scores: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., probabilities: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., label_index: _Optional[int] = ..., label: _Optional[str] = ..., step_label_indices: _Optional[_Iterable[int]] = ..., step_labels: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[_recurrent_pb2.RecurrentState, _Mapping]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "predictions", "sequence")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    sequence: _recurrent_pb2.SequenceStatus
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., sequence: _Optional[_Union[_recurrent_pb2.SequenceStatus, _Mapping]] = ...) -> None: ...
