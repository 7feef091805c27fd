from seqlens_client._proto.seqlens.v1 import types_pb2 as _types_pb2
from seqlens_client._proto.seqlens.v1 import predict_pb2 as _predict_pb2
from seqlens_client._proto.seqlens.v1 import recurrent_pb2 as _recurrent_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamSequenceRequest(_message.Message):
    __slots__ = ("request_id", "model_name", "model_version", "sequence", "input")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_name: str
    model_version: str
    sequence: _recurrent_pb2.SequenceControl
    input: _types_pb2.SequenceInput
    def __init__(self, request_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., sequence: _Optional[_Union[_recurrent_pb2.SequenceControl, _Mapping]] = ..., input: _Optional[_Union[_types_pb2.SequenceInput, _Mapping]] = ...) -> None: ...

class StreamSequenceResponse(_message.Message):
    __slots__ = ("request_id", "model_name", "model_version", "prediction", "sequence", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_name: str
    model_version: str
    prediction: _predict_pb2.Prediction
    sequence: _recurrent_pb2.SequenceStatus
    error: _types_pb2.ItemError
    def __init__(self, request_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., prediction: _Optional[_Union[_predict_pb2.Prediction, _Mapping]] = ..., sequence: _Optional[_Union[_recurrent_pb2.SequenceStatus, _Mapping]] = ..., error: _Optional[_Union[_types_pb2.ItemError, _Mapping]] = ...) -> None: ...
