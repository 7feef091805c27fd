from seqlens_client._proto.seqlens.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StateTensor(_message.Message):
    __slots__ = ("name", "tensor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    tensor: _types_pb2.Tensor
    def __init__(self, name: _Optional[str] = ..., tensor: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ...) -> None: ...

class RecurrentState(_message.Message):
    __slots__ = ("model_name", "model_version", "steps", "tensors")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    steps: int
    tensors: _containers.RepeatedCompositeFieldContainer[StateTensor]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., steps: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[StateTensor, _Mapping]]] = ...) -> None: ...

class SequenceControl(_message.Message):
    __slots__ = ("string_id", "uint_id", "start", "end")
    STRING_ID_FIELD_NUMBER: _ClassVar[int]
    UINT_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    string_id: str
    uint_id: int
    start: bool
    end: bool
    def __init__(self, string_id: _Optional[str] = ..., uint_id: _Optional[int] = ..., start: _Optional[bool] = ..., end: _Optional[bool] = ...) -> None: ...

class SequenceStatus(_message.Message):
    __slots__ = ("offset", "steps", "ended")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    offset: int
    steps: int
    ended: bool
    def __init__(self, offset: _Optional[int] = ..., steps: _Optional[int] = ..., ended: _Optional[bool] = ...) -> None: ...
