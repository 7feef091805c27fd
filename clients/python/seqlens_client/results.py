"""Typed results with numpy arrays: models, predictions, attributions, explanations.

Every result has ``to_dict()`` (JSON-ready: lists instead of arrays, None for non-finite
numbers) and the tabular ones ``to_pandas()`` (needs pandas, which is not a dependency).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from . import vocabulary
from ._proto.seqlens.v1 import explain_pb2, models_pb2, predict_pb2, types_pb2
from .carry import RecurrentState
from .jsonable import as_dict as _dict
from .jsonable import jsonable
from .state import StateSummary
from .tensors import optional_numpy, to_numpy

if TYPE_CHECKING:
    import pandas

__all__ = [
    "Architecture",
    "Attribution",
    "Explanation",
    "Faithfulness",
    "InputSchema",
    "Limits",
    "ModelInfo",
    "ModelSummary",
    "PredictResult",
    "Prediction",
    "ResolvedTarget",
    "Token",
    "VersionStatus",
    "jsonable",
]


def _reported(enum: vocabulary.EnumType, value: int) -> str:
    """A server-reported enum's name; "unspecified" for 0 (not known) or a value newer than this SDK."""
    known = vocabulary.name(enum, value)
    return "unspecified" if known is None or known == vocabulary.DEFAULT else known


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as e:
        raise ImportError("to_pandas() needs pandas: pip install pandas") from e
    return pandas


# --- predictions --------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    """A token and its character span ``[start, end)`` in the request text.

    ``text`` is the token as the model knows it: the piece of the text for ``word`` and
    ``char`` tokenizers, the vocabulary entry for ``huggingface`` ones (``##ing``, ``Ġthe``).
    ``special`` tokens (``[CLS]``) were added by the tokenizer and cover no text.
    """

    text: str
    id: int
    start: int
    end: int
    special: bool = False

    @classmethod
    def from_proto(cls, msg: types_pb2.Token) -> Token:
        return cls(text=msg.text, id=msg.id, start=msg.start, end=msg.end, special=msg.special)

    def surface(self, text: str) -> str:
        """The characters of ``text`` (the request text) this token covers."""
        return text[self.start:self.end]

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass
class Prediction:
    """The model's answer for one sequence.

    - classification: ``label``, ``label_index``, ``scores`` (logits ``[C]``), ``probabilities [C]``;
    - tagging: ``step_labels``/``step_label_indices`` per timestep, ``scores``/``probabilities [T,C]``;
    - forecasting and regression: ``forecast`` (``[H]`` values, the same as ``scores``).
    """

    length: int
    tokens: list[Token]
    scores: np.ndarray
    probabilities: np.ndarray | None = None
    label: str | None = None
    label_index: int | None = None
    step_labels: list[str] = field(default_factory=list)
    step_label_indices: list[int] = field(default_factory=list)
    state: RecurrentState | None = None  # final state, when asked for (client-held streaming)

    @property
    def forecast(self) -> np.ndarray | None:
        """Forecast/regression values ``[H]``; None for classification and tagging."""
        return self.scores if self.probabilities is None else None

    @classmethod
    def from_proto(cls, msg: predict_pb2.Prediction) -> Prediction:
        return cls(length=msg.length, tokens=[Token.from_proto(t) for t in msg.tokens],
                   scores=to_numpy(msg.scores), probabilities=optional_numpy(msg, "probabilities"),
                   label=msg.label or None, label_index=msg.label_index if msg.label else None,
                   step_labels=list(msg.step_labels), step_label_indices=list(msg.step_label_indices),
                   state=RecurrentState.from_proto(msg.state) if msg.HasField("state") else None)

    def to_dict(self) -> dict[str, Any]:
        d = {**_dict(self), "forecast": jsonable(self.forecast)}
        d.pop("state", None)  # opaque: feed it back, do not serialize it into reports
        return d


class PredictResult(Sequence[Prediction]):
    """The predictions of one ``predict`` call, in input order, and the version that answered.

    >>> result = client.predict("sentiment", ["great", "awful"])  # doctest: +SKIP
    >>> [p.label for p in result], result.model_version           # doctest: +SKIP
    (['positive', 'negative'], '1')
    """

    def __init__(self, model_name: str, model_version: str, predictions: list[Prediction]) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.predictions = predictions

    @classmethod
    def from_proto(cls, msg: predict_pb2.PredictResponse) -> PredictResult:
        return cls(msg.model_name, msg.model_version, [Prediction.from_proto(p) for p in msg.predictions])

    @overload
    def __getitem__(self, i: int) -> Prediction: ...
    @overload
    def __getitem__(self, i: slice) -> list[Prediction]: ...
    def __getitem__(self, i: int | slice) -> Prediction | list[Prediction]:
        return self.predictions[i]

    def __len__(self) -> int:
        return len(self.predictions)

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.predictions)

    @property
    def state(self) -> RecurrentState | None:
        """The final state of the only (or first) input, when states were asked for."""
        return self.predictions[0].state if self.predictions else None

    def __repr__(self) -> str:
        return f"PredictResult(model={self.model_name!r}, version={self.model_version!r}, n={len(self)})"

    def to_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_version": self.model_version,
                "predictions": [p.to_dict() for p in self.predictions]}

    def to_pandas(self) -> pandas.DataFrame:
        """One row per input: length, label, label_index, confidence, scores, probabilities, forecast."""
        pd = _pandas()
        rows = [{"length": p.length, "label": p.label, "label_index": p.label_index,
                 "confidence": float(np.max(p.probabilities)) if p.probabilities is not None and p.label else None,
                 "step_labels": p.step_labels or None, "scores": p.scores, "probabilities": p.probabilities,
                 "forecast": p.forecast} for p in self.predictions]
        return pd.DataFrame(rows)


# --- models -------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSummary:
    """One model in ``list_models``: task, input kind, versions, and the default version."""

    name: str
    task: str
    input_kind: str
    default_version: str
    versions: list[str]
    ready: bool

    @classmethod
    def from_proto(cls, msg: models_pb2.ModelSummary) -> ModelSummary:
        return cls(name=msg.name, task=_reported(models_pb2.Task, msg.task),
                   input_kind=_reported(models_pb2.InputKind, msg.input_kind), default_version=msg.default_version,
                   versions=list(msg.versions), ready=msg.ready)

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class VersionStatus:
    """A version's state (``ready``, ``loading``, ``failed``, ``unloaded``) and why it is not ready."""

    version: str
    state: str
    reason: str
    parity_max_abs_diff: float
    load_seconds: float

    @classmethod
    def from_proto(cls, msg: models_pb2.VersionStatus) -> VersionStatus:
        return cls(version=msg.version, state=_reported(models_pb2.VersionState, msg.state), reason=msg.reason,
                   parity_max_abs_diff=msg.parity_max_abs_diff, load_seconds=msg.load_seconds)

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class Architecture:
    input_layer: str
    cell: str
    num_layers: int
    hidden_size: int
    bidirectional: bool
    head: str
    embedding_dim: int
    num_parameters: int
    kind: str = "family"  # or "onnx": a custom graph (see the README's custom-graph section)
    recurrent_ops: tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, msg: models_pb2.Architecture) -> Architecture:
        values = {f.name: getattr(msg, f.name) for f in fields(cls)}
        values["kind"] = values["kind"] or "family"
        values["recurrent_ops"] = tuple(values["recurrent_ops"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class InputSchema:
    """``kind`` is ``tokens`` (with tokenizer and vocabulary facts) or ``features`` (with names).

    ``tokenizer`` is ``word``, ``char`` or ``huggingface`` (a tokenizer.json); ``vocabulary``
    names its file and ``special_tokens`` the tokens that are no text (pad/unk, [CLS], ...).
    """

    kind: str
    tokenizer: str
    vocab_size: int
    pad_id: int
    unk_id: int
    lowercase: bool
    feature_names: list[str]
    vocabulary: str = ""
    special_tokens: list[str] = field(default_factory=list)
    add_special_tokens: bool = False

    @classmethod
    def from_proto(cls, msg: models_pb2.InputSchema) -> InputSchema:
        return cls(kind=_reported(models_pb2.InputKind, msg.kind), tokenizer=msg.tokenizer, vocab_size=msg.vocab_size,
                   pad_id=msg.pad_id, unk_id=msg.unk_id, lowercase=msg.lowercase,
                   feature_names=list(msg.feature_names), vocabulary=msg.vocabulary,
                   special_tokens=list(msg.special_tokens), add_special_tokens=msg.add_special_tokens)

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class Limits:
    max_length: int
    max_batch: int
    max_explain_work: int
    max_steps: int
    min_length: int = 1  # shortest sequence the model accepts (model.yaml min_length)

    @classmethod
    def from_proto(cls, msg: models_pb2.Limits) -> Limits:
        return cls(max_length=msg.max_length, max_batch=msg.max_batch, max_explain_work=msg.max_explain_work,
                   max_steps=msg.max_steps, min_length=msg.min_length or 1)

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class ModelInfo:
    """Everything ``get_model`` tells about a model.

    >>> info = client.get_model("sentiment")           # doctest: +SKIP
    >>> info.task, info.labels, info.attribution_methods[:2]  # doctest: +SKIP
    ('classification', ['negative', 'positive'], ['integrated_gradients', 'saliency'])
    """

    name: str
    task: str
    default_version: str
    versions: list[VersionStatus]
    input: InputSchema
    labels: list[str]
    horizon: int
    architecture: Architecture
    attribution_methods: list[str]
    state_summaries: list[str]
    limits: Limits
    description: str

    @property
    def ready(self) -> bool:
        return any(v.state == "ready" for v in self.versions)

    @property
    def tokenizer(self) -> str | None:
        """``word``, ``char`` or ``huggingface`` for text models; None for feature models."""
        return self.input.tokenizer or None if self.input.kind == "tokens" else None

    @classmethod
    def from_proto(cls, msg: models_pb2.ModelInfo) -> ModelInfo:
        return cls(name=msg.name, task=_reported(models_pb2.Task, msg.task), default_version=msg.default_version,
                   versions=[VersionStatus.from_proto(v) for v in msg.versions],
                   input=InputSchema.from_proto(msg.input), labels=list(msg.labels), horizon=msg.horizon,
                   architecture=Architecture.from_proto(msg.architecture),
                   attribution_methods=list(msg.attribution_methods), state_summaries=list(msg.state_summaries),
                   limits=Limits.from_proto(msg.limits), description=msg.description)

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


# --- explanations -------------------------------------------------------------------
@dataclass
class Faithfulness:
    """Comprehensiveness (drop when the top-k% timesteps are removed) and sufficiency (drop when
    only they are kept) at each ``top_k_percent``, their AOPC, and the same for a random ranking."""

    top_k_percent: np.ndarray
    comprehensiveness: np.ndarray
    sufficiency: np.ndarray
    aopc_comprehensiveness: float
    aopc_sufficiency: float
    random_comprehensiveness: np.ndarray
    random_sufficiency: np.ndarray
    random_aopc_comprehensiveness: float
    random_aopc_sufficiency: float

    @classmethod
    def from_proto(cls, msg: explain_pb2.Faithfulness) -> Faithfulness:
        arr = {f: np.asarray(getattr(msg, f), dtype=np.float64) for f in (
            "top_k_percent", "comprehensiveness", "sufficiency", "random_comprehensiveness", "random_sufficiency")}
        return cls(**arr, aopc_comprehensiveness=msg.aopc_comprehensiveness, aopc_sufficiency=msg.aopc_sufficiency,
                   random_aopc_comprehensiveness=msg.random_aopc_comprehensiveness,
                   random_aopc_sufficiency=msg.random_aopc_sufficiency)

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass
class Attribution:
    """One method's attributions.

    ``scores [T]`` are signed (summed over embedding dims or features); ``feature_scores [T,F]``
    for feature models; ``l2_norm [T]`` for token models. Methods with a completeness delta
    (integrated_gradients, gradient_shap, shapley_sampling) report ``convergence_delta`` =
    sum(attributions) - (target_at_input - target_at_baseline), ``converged`` (|delta| <=
    ``tolerance`` x |f(x) - f(baseline)|, plus a 1e-6 float32 floor) and ``relative_delta``;
    for other methods these are None (absent on the wire), never 0.0 / True.
    """

    method: str
    scores: np.ndarray
    feature_scores: np.ndarray | None = None
    l2_norm: np.ndarray | None = None
    convergence_delta: float | None = None
    n_steps: int = 0
    converged: bool | None = None
    target_at_input: float = 0.0
    target_at_baseline: float = 0.0
    faithfulness: Faithfulness | None = None
    seconds: float = 0.0
    tolerance: float | None = None
    relative_delta: float | None = None  # |delta| / |f(x) - f(baseline)|, as the server computed it

    @property
    def has_delta(self) -> bool:
        return self.convergence_delta is not None

    @property
    def warning(self) -> str | None:
        """One line saying the attributions do not add up (reports show it first), or None."""
        if self.converged is not False:
            return None
        rel = self.relative_delta
        by = f"{100 * rel:.1f}% of" if rel is not None else "more than the tolerance of"
        tol = f" (tolerance {100 * self.tolerance:g}%)" if self.tolerance else ""
        return (f"NOT CONVERGED: {self.method} attributions miss f(x) - f(baseline) by {by} the change{tol}; "
                "ask for more steps or samples, or adaptive integrated gradients")

    @classmethod
    def from_proto(cls, msg: explain_pb2.Attribution) -> Attribution:
        return cls(method=msg.method, scores=to_numpy(msg.scores),
                   feature_scores=optional_numpy(msg, "feature_scores"), l2_norm=optional_numpy(msg, "l2_norm"),
                   convergence_delta=msg.convergence_delta if msg.HasField("convergence_delta") else None,
                   n_steps=msg.n_steps, converged=msg.converged if msg.HasField("converged") else None,
                   tolerance=msg.tolerance if msg.HasField("tolerance") else None,
                   relative_delta=msg.relative_delta if msg.HasField("relative_delta") else None,
                   target_at_input=msg.target_at_input, target_at_baseline=msg.target_at_baseline,
                   faithfulness=Faithfulness.from_proto(msg.faithfulness) if msg.HasField("faithfulness") else None,
                   seconds=msg.seconds)

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass(frozen=True)
class ResolvedTarget:
    """The output that was explained, with defaults filled in by the server.

    Fields that do not apply to the model's task are None (the server sends -1): e.g.
    ``timestep`` of a classifier or ``class_index`` of a forecaster.
    """

    class_index: int | None
    label: str
    timestep: int | None
    horizon_step: int | None
    output_space: str

    @classmethod
    def from_proto(cls, msg: explain_pb2.ResolvedTarget) -> ResolvedTarget:
        def applies(v: int) -> int | None:
            return None if v < 0 else v

        return cls(class_index=applies(msg.class_index), label=msg.label, timestep=applies(msg.timestep),
                   horizon_step=applies(msg.horizon_step),
                   output_space=_reported(explain_pb2.OutputSpace, msg.output_space or explain_pb2.OUTPUT_SPACE_LOGIT))

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass
class Explanation:
    """One explained prediction.

    ``attributions`` maps method name -> :class:`Attribution`; ``state`` holds the hidden-state
    summaries when they were asked for; ``timings`` maps stage -> seconds. ``text`` or
    ``features`` echo the input (set by the client) so that reports can draw it, and
    ``labels``/``feature_names`` name classes and features when the client knows them.

    >>> exp = client.explain("sentiment", "a gorgeous, witty film",             # doctest: +SKIP
    ...                      methods=["integrated_gradients", "occlusion"], state=True)
    >>> exp.prediction.label, exp.attributions["integrated_gradients"].scores.shape  # doctest: +SKIP
    ('positive', (4,))
    >>> exp.to_html("report.html")                                               # doctest: +SKIP
    """

    model_name: str
    model_version: str
    request_id: str
    prediction: Prediction
    tokens: list[Token]
    target: ResolvedTarget
    attributions: dict[str, Attribution]
    state: StateSummary | None
    timings: dict[str, float]
    text: str | None = None
    features: np.ndarray | None = None
    labels: list[str] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    final_state: RecurrentState | None = None  # explain(initial_state=..., return_state=True)
    step_offset: int = 0  # absolute step of the input's first timestep within its sequence

    @classmethod
    def from_proto(cls, msg: explain_pb2.ExplainResponse) -> Explanation:
        return cls(model_name=msg.model_name, model_version=msg.model_version, request_id=msg.request_id,
                   prediction=Prediction.from_proto(msg.prediction), tokens=[Token.from_proto(t) for t in msg.tokens],
                   target=ResolvedTarget.from_proto(msg.target),
                   attributions={a.method: Attribution.from_proto(a) for a in msg.attributions},
                   state=StateSummary.from_proto(msg.state) if len(msg.state) else None,
                   timings={t.stage: t.seconds for t in msg.timings},
                   final_state=RecurrentState.from_proto(msg.final_state) if msg.HasField("final_state") else None,
                   step_offset=msg.step_offset)

    @property
    def length(self) -> int:
        """Timesteps T."""
        if self.tokens:
            return len(self.tokens)
        if self.features is not None:
            return int(self.features.shape[0])
        first = next(iter(self.attributions.values()), None)
        return int(first.scores.shape[0]) if first is not None else self.prediction.length

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per timestep: token text and span (token models) and one column per method."""
        pd = _pandas()
        cols: dict[str, Any] = {"t": np.arange(self.length)}
        if self.tokens:
            cols.update(token=[t.text for t in self.tokens], start=[t.start for t in self.tokens],
                        end=[t.end for t in self.tokens])
        for name, a in self.attributions.items():
            cols[name] = a.scores
        return pd.DataFrame(cols)

    def to_html(self, path: str | Path | None = None, *, title: str | None = None) -> str:
        """Write one self-contained HTML report to ``path`` (when given) and return its text.

        The page needs no network: tokens or the time series coloured by attribution (with a
        method switcher), the prediction and prefix-prediction curve, state norms and gate means
        over time, a unit heatmap, gate saturation and faithfulness curves; panels whose data is
        absent say so.
        """
        from .report.html import render_html

        page = render_html(self, title=title)
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def to_text(self, method: str | None = None, *, color: bool = True, width: int = 100) -> str:
        """Tokens (or timesteps) coloured by attribution for a terminal (ANSI), plus a summary."""
        from .report.text import render_text

        return render_text(self, method=method, color=color, width=width)

    def to_png(self, path: str | Path, *, dpi: int = 120) -> Path:
        """Save a matplotlib figure of the report panels (needs ``pip install seqlens-client[plot]``)."""
        from .report.png import render_png

        return render_png(self, Path(path), dpi=dpi)
