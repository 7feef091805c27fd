from seqlens_client._proto.seqlens.v1 import types_pb2 as _types_pb2
from seqlens_client._proto.seqlens.v1 import predict_pb2 as _predict_pb2
from seqlens_client._proto.seqlens.v1 import state_pb2 as _state_pb2
from seqlens_client._proto.seqlens.v1 import recurrent_pb2 as _recurrent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutputSpace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_SPACE_UNSPECIFIED: _ClassVar[OutputSpace]
    OUTPUT_SPACE_PROBABILITY: _ClassVar[OutputSpace]
    OUTPUT_SPACE_LOGIT: _ClassVar[OutputSpace]

class Quadrature(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUADRATURE_UNSPECIFIED: _ClassVar[Quadrature]
    QUADRATURE_RIEMANN_LEFT: _ClassVar[Quadrature]
    QUADRATURE_RIEMANN_RIGHT: _ClassVar[Quadrature]
    QUADRATURE_RIEMANN_MIDDLE: _ClassVar[Quadrature]
    QUADRATURE_RIEMANN_TRAPEZOID: _ClassVar[Quadrature]
    QUADRATURE_GAUSS_LEGENDRE: _ClassVar[Quadrature]

class AblationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ABLATION_MODE_UNSPECIFIED: _ClassVar[AblationMode]
    ABLATION_MODE_PER_FEATURE: _ClassVar[AblationMode]
    ABLATION_MODE_PER_TIMESTEP: _ClassVar[AblationMode]

class BaselineKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BASELINE_KIND_UNSPECIFIED: _ClassVar[BaselineKind]
    BASELINE_KIND_PAD: _ClassVar[BaselineKind]
    BASELINE_KIND_ZEROS: _ClassVar[BaselineKind]
    BASELINE_KIND_TRAINING_MEAN: _ClassVar[BaselineKind]
    BASELINE_KIND_CUSTOM: _ClassVar[BaselineKind]
OUTPUT_SPACE_UNSPECIFIED: OutputSpace
OUTPUT_SPACE_PROBABILITY: OutputSpace
OUTPUT_SPACE_LOGIT: OutputSpace
QUADRATURE_UNSPECIFIED: Quadrature
QUADRATURE_RIEMANN_LEFT: Quadrature
QUADRATURE_RIEMANN_RIGHT: Quadrature
QUADRATURE_RIEMANN_MIDDLE: Quadrature
QUADRATURE_RIEMANN_TRAPEZOID: Quadrature
QUADRATURE_GAUSS_LEGENDRE: Quadrature
ABLATION_MODE_UNSPECIFIED: AblationMode
ABLATION_MODE_PER_FEATURE: AblationMode
ABLATION_MODE_PER_TIMESTEP: AblationMode
BASELINE_KIND_UNSPECIFIED: BaselineKind
BASELINE_KIND_PAD: BaselineKind
BASELINE_KIND_ZEROS: BaselineKind
BASELINE_KIND_TRAINING_MEAN: BaselineKind
BASELINE_KIND_CUSTOM: BaselineKind

class Target(_message.Message):
    __slots__ = ("class_index", "label", "timestep", "horizon_step", "output_space")
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TIMESTEP_FIELD_NUMBER: _ClassVar[int]
    HORIZON_STEP_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SPACE_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    label: str
    timestep: int
    horizon_step: int
    output_space: OutputSpace
    def __init__(self, class_index: _Optional[int] = ..., label: _Optional[str] = ..., timestep: _Optional[int] = ..., horizon_step: _Optional[int] = ..., output_space: _Optional[_Union[OutputSpace, str]] = ...) -> None: ...

class AttributionMethod(_message.Message):
    __slots__ = ("name", "n_steps", "quadrature", "adaptive", "tolerance", "max_steps", "n_samples", "noise_stdev", "seed", "window", "stride", "ablation", "abs_saliency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    N_STEPS_FIELD_NUMBER: _ClassVar[int]
    QUADRATURE_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NOISE_STDEV_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    ABLATION_FIELD_NUMBER: _ClassVar[int]
    ABS_SALIENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    n_steps: int
    quadrature: Quadrature
    adaptive: bool
    tolerance: float
    max_steps: int
    n_samples: int
    noise_stdev: float
    seed: int
    window: int
    stride: int
    ablation: AblationMode
    abs_saliency: bool
    def __init__(self, name: _Optional[str] = ..., n_steps: _Optional[int] = ..., quadrature: _Optional[_Union[Quadrature, str]] = ..., adaptive: _Optional[bool] = ..., tolerance: _Optional[float] = ..., max_steps: _Optional[int] = ..., n_samples: _Optional[int] = ..., noise_stdev: _Optional[float] = ..., seed: _Optional[int] = ..., window: _Optional[int] = ..., stride: _Optional[int] = ..., ablation: _Optional[_Union[AblationMode, str]] = ..., abs_saliency: _Optional[bool] = ...) -> None: ...

class Baseline(_message.Message):
    __slots__ = ("kind", "custom")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    kind: BaselineKind
    custom: _types_pb2.SequenceInput
    def __init__(self, kind: _Optional[_Union[BaselineKind, str]] = ..., custom: _Optional[_Union[_types_pb2.SequenceInput, _Mapping]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("request_id", "model_name", "model_version", "input", "target", "methods", "baseline", "state", "faithfulness", "initial_state", "return_state", "sequence")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_STATE_FIELD_NUMBER: _ClassVar[int]
    RETURN_STATE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_name: str
    model_version: str
    input: _types_pb2.SequenceInput
    target: Target
    methods: _containers.RepeatedCompositeFieldContainer[AttributionMethod]
    baseline: Baseline
    state: _state_pb2.StateOptions
    faithfulness: bool
    initial_state: _recurrent_pb2.RecurrentState
    return_state: bool
    sequence: _recurrent_pb2.SequenceControl
    def __init__(self, request_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., input: _Optional[_Union[_types_pb2.SequenceInput, _Mapping]] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., methods: _Optional[_Iterable[_Union[AttributionMethod, _Mapping]]] = ..., baseline: _Optional[_Union[Baseline, _Mapping]] = ..., state: _Optional[_Union[_state_pb2.StateOptions, _Mapping]] = ..., faithfulness: _Optional[bool] = ..., initial_state: _Optional[_Union[_recurrent_pb2.RecurrentState, _Mapping]] = ..., return_state: _Optional[bool] = ..., sequence: _Optional[_Union[_recurrent_pb2.SequenceControl, _Mapping]] = ...) -> None: ...

class Faithfulness(_message.Message):
    __slots__ = ("top_k_percent", "comprehensiveness", "sufficiency", "aopc_comprehensiveness", "aopc_sufficiency", "random_comprehensiveness", "random_sufficiency", "random_aopc_comprehensiveness", "random_aopc_sufficiency")
    TOP_K_PERCENT_FIELD_NUMBER: _ClassVar[int]
    COMPREHENSIVENESS_FIELD_NUMBER: _ClassVar[int]
    SUFFICIENCY_FIELD_NUMBER: _ClassVar[int]
    AOPC_COMPREHENSIVENESS_FIELD_NUMBER: _ClassVar[int]
    AOPC_SUFFICIENCY_FIELD_NUMBER: _ClassVar[int]
    RANDOM_COMPREHENSIVENESS_FIELD_NUMBER: _ClassVar[int]
    RANDOM_SUFFICIENCY_FIELD_NUMBER: _ClassVar[int]
    RANDOM_AOPC_COMPREHENSIVENESS_FIELD_NUMBER: _ClassVar[int]
    RANDOM_AOPC_SUFFICIENCY_FIELD_NUMBER: _ClassVar[int]
    top_k_percent: _containers.RepeatedScalarFieldContainer[float]
    comprehensiveness: _containers.RepeatedScalarFieldContainer[float]
    sufficiency: _containers.RepeatedScalarFieldContainer[float]
    aopc_comprehensiveness: float
    aopc_sufficiency: float
    random_comprehensiveness: _containers.RepeatedScalarFieldContainer[float]
    random_sufficiency: _containers.RepeatedScalarFieldContainer[float]
    random_aopc_comprehensiveness: float
    random_aopc_sufficiency: float
    def __init__(self, top_k_percent: _Optional[_Iterable[float]] = ..., comprehensiveness: _Optional[_Iterable[float]] = ..., sufficiency: _Optional[_Iterable[float]] = ..., aopc_comprehensiveness: _Optional[float] = ..., aopc_sufficiency: _Optional[float] = ..., random_comprehensiveness: _Optional[_Iterable[float]] = ..., random_sufficiency: _Optional[_Iterable[float]] = ..., random_aopc_comprehensiveness: _Optional[float] = ..., random_aopc_sufficiency: _Optional[float] = ...) -> None: ...

class Attribution(_message.Message):
    __slots__ = ("method", "scores", "feature_scores", "l2_norm", "convergence_delta", "n_steps", "converged", "target_at_input", "target_at_baseline", "faithfulness", "seconds", "tolerance", "relative_delta")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SCORES_FIELD_NUMBER: _ClassVar[int]
    L2_NORM_FIELD_NUMBER: _ClassVar[int]
    CONVERGENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    N_STEPS_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    TARGET_AT_INPUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_AT_BASELINE_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_DELTA_FIELD_NUMBER: _ClassVar[int]
    method: str
    scores: _types_pb2.Tensor
    feature_scores: _types_pb2.Tensor
    l2_norm: _types_pb2.Tensor
    convergence_delta: float
    n_steps: int
    converged: bool
    target_at_input: float
    target_at_baseline: float
    faithfulness: Faithfulness
    seconds: float
    tolerance: float
    relative_delta: float
    def __init__(self, method: _Optional[str] = ..., scores: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., feature_scores: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., l2_norm: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., convergence_delta: _Optional[float] = ..., n_steps: _Optional[int] = ..., converged: _Optional[bool] = ..., target_at_input: _Optional[float] = ..., target_at_baseline: _Optional[float] = ..., faithfulness: _Optional[_Union[Faithfulness, _Mapping]] = ..., seconds: _Optional[float] = ..., tolerance: _Optional[float] = ..., relative_delta: _Optional[float] = ...) -> None: ...

class ResolvedTarget(_message.Message):
    __slots__ = ("class_index", "label", "timestep", "horizon_step", "output_space")
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TIMESTEP_FIELD_NUMBER: _ClassVar[int]
    HORIZON_STEP_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SPACE_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    label: str
    timestep: int
    horizon_step: int
    output_space: OutputSpace
    def __init__(self, class_index: _Optional[int] = ..., label: _Optional[str] = ..., timestep: _Optional[int] = ..., horizon_step: _Optional[int] = ..., output_space: _Optional[_Union[OutputSpace, str]] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    seconds: float
    def __init__(self, stage: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("request_id", "model_name", "model_version", "prediction", "tokens", "target", "attributions", "state", "timings", "error", "final_state", "step_offset", "sequence")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FINAL_STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_name: str
    model_version: str
    prediction: _predict_pb2.Prediction
    tokens: _containers.RepeatedCompositeFieldContainer[_types_pb2.Token]
    target: ResolvedTarget
    attributions: _containers.RepeatedCompositeFieldContainer[Attribution]
    state: _containers.RepeatedCompositeFieldContainer[_state_pb2.LayerState]
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    error: _types_pb2.ItemError
    final_state: _recurrent_pb2.RecurrentState
    step_offset: int
    sequence: _recurrent_pb2.SequenceStatus
    def __init__(self, request_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., prediction: _Optional[_Union[_predict_pb2.Prediction, _Mapping]] = ..., tokens: _Optional[_Iterable[_Union[_types_pb2.Token, _Mapping]]] = ..., target: _Optional[_Union[ResolvedTarget, _Mapping]] = ..., attributions: _Optional[_Iterable[_Union[Attribution, _Mapping]]] = ..., state: _Optional[_Iterable[_Union[_state_pb2.LayerState, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., error: _Optional[_Union[_types_pb2.ItemError, _Mapping]] = ..., final_state: _Optional[_Union[_recurrent_pb2.RecurrentState, _Mapping]] = ..., step_offset: _Optional[int] = ..., sequence: _Optional[_Union[_recurrent_pb2.SequenceStatus, _Mapping]] = ...) -> None: ...
