from seqlens_client._proto.seqlens.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StateOptions(_message.Message):
    __slots__ = ("enabled", "summaries", "top_k", "include_hidden", "include_cell")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CELL_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    summaries: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    include_hidden: bool
    include_cell: bool
    def __init__(self, enabled: _Optional[bool] = ..., summaries: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., include_hidden: _Optional[bool] = ..., include_cell: _Optional[bool] = ...) -> None: ...

class GateSaturation(_message.Message):
    __slots__ = ("gate", "left_fraction", "right_fraction")
    GATE_FIELD_NUMBER: _ClassVar[int]
    LEFT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    gate: str
    left_fraction: float
    right_fraction: float
    def __init__(self, gate: _Optional[str] = ..., left_fraction: _Optional[float] = ..., right_fraction: _Optional[float] = ...) -> None: ...

class LayerState(_message.Message):
    __slots__ = ("layer", "direction", "cell", "gate_names", "hidden", "cell_state", "state_norm", "delta_norm", "gate_mean", "saturation", "saturation_summary", "timescale", "top_units", "prefix_prediction", "unit_contribution", "active_count", "projection", "gates", "source")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    GATE_NAMES_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    CELL_STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_NORM_FIELD_NUMBER: _ClassVar[int]
    DELTA_NORM_FIELD_NUMBER: _ClassVar[int]
    GATE_MEAN_FIELD_NUMBER: _ClassVar[int]
    SATURATION_FIELD_NUMBER: _ClassVar[int]
    SATURATION_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    TIMESCALE_FIELD_NUMBER: _ClassVar[int]
    TOP_UNITS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_PREDICTION_FIELD_NUMBER: _ClassVar[int]
    UNIT_CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    layer: int
    direction: str
    cell: str
    gate_names: _containers.RepeatedScalarFieldContainer[str]
    hidden: _types_pb2.Tensor
    cell_state: _types_pb2.Tensor
    state_norm: _types_pb2.Tensor
    delta_norm: _types_pb2.Tensor
    gate_mean: _types_pb2.Tensor
    saturation: _types_pb2.Tensor
    saturation_summary: _containers.RepeatedCompositeFieldContainer[GateSaturation]
    timescale: _types_pb2.Tensor
    top_units: _types_pb2.Tensor
    prefix_prediction: _types_pb2.Tensor
    unit_contribution: _types_pb2.Tensor
    active_count: _types_pb2.Tensor
    projection: _types_pb2.Tensor
    gates: _types_pb2.Tensor
    source: str
    def __init__(self, layer: _Optional[int] = ..., direction: _Optional[str] = ..., cell: _Optional[str] = ..., gate_names: _Optional[_Iterable[str]] = ..., hidden: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., cell_state: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., state_norm: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., delta_norm: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., gate_mean: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., saturation: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., saturation_summary: _Optional[_Iterable[_Union[GateSaturation, _Mapping]]] = ..., timescale: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., top_units: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., prefix_prediction: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., unit_contribution: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., active_count: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., projection: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., gates: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...
