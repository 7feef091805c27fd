from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_CLASSIFICATION: _ClassVar[Task]
    TASK_TAGGING: _ClassVar[Task]
    TASK_FORECASTING: _ClassVar[Task]
    TASK_REGRESSION: _ClassVar[Task]

class InputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INPUT_KIND_UNSPECIFIED: _ClassVar[InputKind]
    INPUT_KIND_TOKENS: _ClassVar[InputKind]
    INPUT_KIND_FEATURES: _ClassVar[InputKind]

class VersionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERSION_STATE_UNSPECIFIED: _ClassVar[VersionState]
    VERSION_STATE_LOADING: _ClassVar[VersionState]
    VERSION_STATE_READY: _ClassVar[VersionState]
    VERSION_STATE_FAILED: _ClassVar[VersionState]
    VERSION_STATE_UNLOADED: _ClassVar[VersionState]
TASK_UNSPECIFIED: Task
TASK_CLASSIFICATION: Task
TASK_TAGGING: Task
TASK_FORECASTING: Task
TASK_REGRESSION: Task
INPUT_KIND_UNSPECIFIED: InputKind
INPUT_KIND_TOKENS: InputKind
INPUT_KIND_FEATURES: InputKind
VERSION_STATE_UNSPECIFIED: VersionState
VERSION_STATE_LOADING: VersionState
VERSION_STATE_READY: VersionState
VERSION_STATE_FAILED: VersionState
VERSION_STATE_UNLOADED: VersionState

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "task", "input_kind", "default_version", "versions", "ready")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    INPUT_KIND_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: Task
    input_kind: InputKind
    default_version: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    ready: bool
    def __init__(self, name: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., input_kind: _Optional[_Union[InputKind, str]] = ..., default_version: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., ready: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("version", "state", "reason", "parity_max_abs_diff", "load_seconds")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PARITY_MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    version: str
    state: VersionState
    reason: str
    parity_max_abs_diff: float
    load_seconds: float
    def __init__(self, version: _Optional[str] = ..., state: _Optional[_Union[VersionState, str]] = ..., reason: _Optional[str] = ..., parity_max_abs_diff: _Optional[float] = ..., load_seconds: _Optional[float] = ...) -> None: ...

class Architecture(_message.Message):
    __slots__ = ("input_layer", "cell", "num_layers", "hidden_size", "bidirectional", "head", "embedding_dim", "num_parameters", "kind", "recurrent_ops")
    INPUT_LAYER_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    BIDIRECTIONAL_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RECURRENT_OPS_FIELD_NUMBER: _ClassVar[int]
    input_layer: str
    cell: str
    num_layers: int
    hidden_size: int
    bidirectional: bool
    head: str
    embedding_dim: int
    num_parameters: int
    kind: str
    recurrent_ops: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, input_layer: _Optional[str] = ..., cell: _Optional[str] = ..., num_layers: _Optional[int] = ..., hidden_size: _Optional[int] = ..., bidirectional: _Optional[bool] = ..., head: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., num_parameters: _Optional[int] = ..., kind: _Optional[str] = ..., recurrent_ops: _Optional[_Iterable[str]] = ...) -> None: ...

class InputSchema(_message.Message):
    __slots__ = ("kind", "tokenizer", "vocab_size", "pad_id", "unk_id", "lowercase", "feature_names", "vocabulary", "special_tokens", "add_special_tokens")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAD_ID_FIELD_NUMBER: _ClassVar[int]
    UNK_ID_FIELD_NUMBER: _ClassVar[int]
    LOWERCASE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ADD_SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    kind: InputKind
    tokenizer: str
    vocab_size: int
    pad_id: int
    unk_id: int
    lowercase: bool
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    vocabulary: str
    special_tokens: _containers.RepeatedScalarFieldContainer[str]
    add_special_tokens: bool
    def __init__(self, kind: _Optional[_Union[InputKind, str]] = ..., tokenizer: _Optional[str] = ..., vocab_size: _Optional[int] = ..., pad_id: _Optional[int] = ..., unk_id: _Optional[int] = ..., lowercase: _Optional[bool] = ..., feature_names: _Optional[_Iterable[str]] = ..., vocabulary: _Optional[str] = ..., special_tokens: _Optional[_Iterable[str]] = ..., add_special_tokens: _Optional[bool] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_length", "max_batch", "max_explain_work", "max_steps", "min_length")
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_EXPLAIN_WORK_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MIN_LENGTH_FIELD_NUMBER: _ClassVar[int]
    max_length: int
    max_batch: int
    max_explain_work: int
    max_steps: int
    min_length: int
    def __init__(self, max_length: _Optional[int] = ..., max_batch: _Optional[int] = ..., max_explain_work: _Optional[int] = ..., max_steps: _Optional[int] = ..., min_length: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "task", "default_version", "versions", "input", "labels", "horizon", "architecture", "attribution_methods", "state_summaries", "limits", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HORIZON_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_METHODS_FIELD_NUMBER: _ClassVar[int]
    STATE_SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: Task
    default_version: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    input: InputSchema
    labels: _containers.RepeatedScalarFieldContainer[str]
    horizon: int
    architecture: Architecture
    attribution_methods: _containers.RepeatedScalarFieldContainer[str]
    state_summaries: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    description: str
    def __init__(self, name: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., default_version: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., input: _Optional[_Union[InputSchema, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., horizon: _Optional[int] = ..., architecture: _Optional[_Union[Architecture, _Mapping]] = ..., attribution_methods: _Optional[_Iterable[str]] = ..., state_summaries: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., description: _Optional[str] = ...) -> None: ...
