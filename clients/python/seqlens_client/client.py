"""The blocking client.

>>> from seqlens_client import Client
>>> with Client("localhost:50051", timeout=10) as client:                   # doctest: +SKIP
...     for m in client.list_models():
...         print(m.name, m.task, m.default_version)
...     print(client.predict("sentiment", "a gorgeous, witty film")[0].label)
...     exp = client.explain("sentiment", "a gorgeous, witty film", methods=["integrated_gradients"],
...                          state=True, faithfulness=True)
...     print(exp.to_text())
"""

from __future__ import annotations

import abc
import collections
import itertools
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import grpc
import numpy as np

from ._proto.seqlens.v1 import explain_pb2, models_pb2, service_pb2_grpc, types_pb2
from .calls import (
    ExplainSpec,
    Outcome,
    ProgressCallback,
    ProgressCounter,
    bulk_items,
    finish_explanation,
    in_input_order,
    predict_request,
    stream_outcome,
)
from .carry import RecurrentState, StateArg, with_state
from .channel import TLS, Keepalive, RetryPolicy, channel_credentials, channel_options, token_metadata
from .errors import SeqlensError, error_from_rpc
from .inputs import Inputs, SequenceLike
from .options import BaselineLike, MethodsLike, StateLike, TargetLike
from .results import Explanation, ModelInfo, ModelSummary, PredictResult
from .sequences import SequenceId, SequenceStream

if TYPE_CHECKING:
    from typing import Self

__all__ = ["DEFAULT_TARGET", "Client"]

DEFAULT_TARGET = "localhost:50051"
_DEFAULT_RETRY = RetryPolicy()


class _ClientBase(abc.ABC):
    """Settings shared by the blocking and the asyncio client; subclasses open the channel."""

    def __init__(self, target: str = DEFAULT_TARGET, *, token: str | None = None, tls: TLS | bool | None = None,
                 timeout: float | None = 60.0, retry: RetryPolicy | None = _DEFAULT_RETRY,
                 keepalive: Keepalive | None = None, load_balancing: str | None = "round_robin",
                 max_message_bytes: int = 64 * 1024 * 1024, metadata: Sequence[tuple[str, str]] = (),
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target = target
        self.timeout = timeout
        self._tls = TLS() if tls is True else (tls or None)
        self._credentials = channel_credentials(self._tls, token)
        self._options = [*channel_options(retry, keepalive, load_balancing, max_message_bytes, self._tls),
                         *options]
        self._metadata = (*token_metadata(self._tls, token), *metadata)
        self._model_info: dict[str, ModelInfo] = {}
        self._connect()

    @abc.abstractmethod
    def _connect(self) -> None:
        """Open ``self._channel`` (blocking or asyncio) and its stub from the settings above."""

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout


class Client(_ClientBase):
    """A blocking client of the ``seqlens.v1.SequenceExplainerService`` service. Thread-safe.

    Args:
        target: ``host:port``, or ``dns:///name:port`` to resolve every replica and spread calls
            over them (client-side round-robin), or any other gRPC target URI.
        token: bearer token, sent as ``authorization: Bearer <token>`` (call credentials over TLS,
            metadata on plaintext channels).
        tls: :class:`TLS` settings, ``True`` for TLS with the system roots, or None for plaintext.
        timeout: default deadline of each call in seconds (None: no deadline); every method takes
            ``timeout=`` to override it. Bulk streams have no deadline unless given one.
        retry: retry policy for ``UNAVAILABLE`` (the only status retried), None to disable.
        keepalive: :class:`Keepalive` pings, None to leave gRPC's defaults.
        load_balancing: gRPC load-balancing policy (``round_robin``; None: gRPC's ``pick_first``).
        max_message_bytes: largest message sent or received (explanations with hidden states
            can be large).
        metadata: extra metadata sent with every call.
        options: extra raw gRPC channel options.

    Errors are raised as :class:`seqlens_client.SeqlensError` subclasses (``NotFound``,
    ``InvalidArgument``, ...), carrying ``code`` and ``message``.

    >>> with Client("dns:///seqlens.ml.svc.cluster.local:50051", token="s3cret",       # doctest: +SKIP
    ...             tls=TLS(root_ca="ca.pem")) as client:
    ...     client.predict("sunspots", np.random.rand(64, 1).astype("float32"))[0].forecast
    """

    def _connect(self) -> None:
        if self._credentials is None:
            self._channel = grpc.insecure_channel(self.target, options=self._options)
        else:
            self._channel = grpc.secure_channel(self.target, self._credentials, options=self._options)
        self._stub = service_pb2_grpc.SequenceExplainerServiceStub(self._channel)
        self._lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------
    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects (raises :class:`Unavailable` after ``timeout`` s)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as e:
            from .errors import Unavailable

            raise Unavailable(grpc.StatusCode.UNAVAILABLE, f"{self.target} not reachable within {timeout}s") from e

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None

    # --- models ---------------------------------------------------------------------
    def list_models(self, *, timeout: float | None = None) -> list[ModelSummary]:
        """Every model in the repository with its task, input kind and versions.

        >>> [m.name for m in client.list_models()]  # doctest: +SKIP
        ['ner', 'sentiment', 'sunspots', 'vowels']
        """
        resp = self._unary(self._stub.ListModels, models_pb2.ListModelsRequest(), timeout)
        return [ModelSummary.from_proto(m) for m in resp.models]

    def get_model(self, name: str, *, timeout: float | None = None) -> ModelInfo:
        """A model's versions and readiness, input schema, labels, architecture, methods and limits."""
        info = ModelInfo.from_proto(self._unary(self._stub.GetModel, models_pb2.GetModelRequest(name=name), timeout))
        with self._lock:
            self._model_info[name] = info
        return info

    def _cached_info(self, name: str) -> ModelInfo | None:
        """Labels and feature names for reports; one GetModel per model per client, best effort."""
        with self._lock:
            if name in self._model_info:
                return self._model_info[name]
        try:
            return self.get_model(name)
        except SeqlensError:
            return None

    # --- predictions ----------------------------------------------------------------
    def predict(self, model: str, inputs: Inputs, *, version: str | None = None, state: StateArg = None,
                return_state: bool = False, timeout: float | None = None) -> PredictResult:
        """Predict a batch of sequences (or one): texts, token-id sequences or ``[T,F]`` float
        feature arrays (see :mod:`seqlens_client.inputs` for the rules). Returns one
        :class:`Prediction` per input, in order.

        Client-held streaming: ``state`` (a :class:`RecurrentState` from a previous call, or one
        per input) continues those sequences; with it, or with ``return_state=True``, each
        prediction carries its final ``.state`` (``result.state`` for a single input).

        >>> result = client.predict("sentiment", ["a gorgeous, witty film", "dull"])  # doctest: +SKIP
        >>> [(p.label, round(float(p.probabilities.max()), 2)) for p in result]     # doctest: +SKIP
        [('positive', 0.93), ('negative', 0.81)]
        """
        req = predict_request(model, inputs, version, state, return_state)
        return PredictResult.from_proto(self._unary(self._stub.Predict, req, timeout))

    def sequence(self, model: str, *, version: str | None = None, sequence_id: SequenceId | None = None,
                 stream: bool = True, timeout: float | None = None) -> SequenceStream:
        """A server-held sequence: ``with client.sequence(model) as seq: seq.feed(chunk)``.

        The server carries the state between chunks under ``sequence_id`` (default: a random
        string). ``stream=True`` sends the chunks over one ``StreamSequence`` stream (one replica
        for the whole sequence); ``stream=False`` over unary ``Predict`` calls. ``timeout``
        bounds the stream (default: none) or each unary call. Leaving the block ends it.
        """
        deadline = timeout if stream else self._deadline(timeout)
        return SequenceStream(self._stub, model, version, sequence_id, self._metadata, deadline, stream)

    # --- explanations ---------------------------------------------------------------
    def explain(self, model: str, input: SequenceLike, methods: MethodsLike = None, *, target: TargetLike = None,
                baseline: BaselineLike = None, state: StateLike = None, faithfulness: bool = False,
                version: str | None = None, initial_state: RecurrentState | None = None, return_state: bool = False,
                timeout: float | None = None) -> Explanation:
        """Explain one prediction.

        Args:
            model: model name.
            input: one text, token-id sequence or ``[T,F]`` feature array.
            methods: a method name, :class:`Method` (with options), or a list of them;
                default integrated gradients.
            target: class index, label or :class:`Target` (timestep for tagging, horizon step
                for forecasts, logit or probability space); default: the predicted class.
            baseline: ``"pad"``, ``"zeros"``, ``"training_mean"``, a :class:`Baseline`, or
                custom token ids / features of the input's shape.
            state: True for all state summaries, a list of names, or :class:`StateOptions`.
            faithfulness: also compute comprehensiveness/sufficiency curves.
            initial_state: explain a chunk of a longer sequence: the state a previous call
                returned, held fixed (the past is context); attributions cover the chunk's steps.
            return_state: return the final state in ``.final_state`` (implied by ``initial_state``).

        >>> exp = client.explain("sentiment", "not bad at all",                    # doctest: +SKIP
        ...                      methods=[Method("integrated_gradients", adaptive=True), "occlusion"],
        ...                      target="positive", state=["state_norm", "gate_mean"])
        >>> exp.attributions["integrated_gradients"].convergence_delta               # doctest: +SKIP
        3.1e-07
        """
        spec = ExplainSpec.build(model, methods, target, baseline, state, faithfulness, version)
        req = spec.request(input)
        with_state(req, initial_state, return_state)
        resp = self._unary(self._stub.Explain, req, timeout)
        return finish_explanation(resp, req.input, self._cached_info(model))

    def explain_iter(self, model: str, inputs: Iterable[SequenceLike] | np.ndarray, methods: MethodsLike = None, *,
                     target: TargetLike = None, baseline: BaselineLike = None, state: StateLike = None,
                     faithfulness: bool = False, version: str | None = None, concurrency: int = 8,
                     progress: ProgressCallback | None = None, timeout: float | None = None) -> Iterator[Outcome]:
        """Explain many inputs over one ``StreamExplain`` stream, yielding ``(index, result)`` as
        each finishes, where ``result`` is an :class:`Explanation` or the :class:`SeqlensError`
        of that item (a bad item does not end the stream).

        At most ``concurrency`` requests are in flight; ``inputs`` may be a lazy iterator (read
        as slots free up). ``progress(done, total)`` is called after each item. ``timeout``
        bounds the whole stream (default: none). Closing the generator early cancels the stream.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        spec = ExplainSpec.build(model, methods, target, baseline, state, faithfulness, version)
        info = self._cached_info(model)
        items, total = bulk_items(inputs)
        slots = threading.Semaphore(concurrency)
        stop = threading.Event()
        sent: dict[str, types_pb2.SequenceInput] = {}
        local: collections.deque[Outcome] = collections.deque()  # items that failed before sending
        failure: list[Exception] = []  # the caller's iterator raised: end the stream, re-raise below

        def requests() -> Iterator[explain_pb2.ExplainRequest]:
            # Runs in gRPC's request-consuming thread; waits for a free slot before each send.
            source = iter(items)
            for i in itertools.count():
                try:
                    item = next(source)
                except StopIteration:
                    return
                except Exception as e:  # noqa: BLE001 - re-raised in the caller's thread below
                    failure.append(e)
                    return
                try:
                    req = spec.request(item, str(i))
                except SeqlensError as e:
                    local.append((i, e))
                    continue
                while not slots.acquire(timeout=0.05):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                sent[req.request_id] = req.input
                yield req

        call = self._stub.StreamExplain(requests(), timeout=timeout, metadata=self._metadata)
        report = ProgressCounter(progress, total)

        try:
            for resp in call:
                slots.release()
                yield report(stream_outcome(resp, sent, info))
                while local:
                    yield report(local.popleft())
            while local:
                yield report(local.popleft())
            if failure:
                raise failure[0]
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        finally:
            stop.set()
            call.cancel()

    @overload
    def explain_many(self, model: str, inputs: Iterable[SequenceLike] | np.ndarray, methods: MethodsLike = ..., *,
                     target: TargetLike = ..., baseline: BaselineLike = ..., state: StateLike = ...,
                     faithfulness: bool = ..., version: str | None = ..., concurrency: int = ...,
                     progress: ProgressCallback | None = ..., timeout: float | None = ...,
                     return_errors: Literal[False] = ...) -> list[Explanation]: ...
    @overload
    def explain_many(self, model: str, inputs: Iterable[SequenceLike] | np.ndarray, methods: MethodsLike = ..., *,
                     target: TargetLike = ..., baseline: BaselineLike = ..., state: StateLike = ...,
                     faithfulness: bool = ..., version: str | None = ..., concurrency: int = ...,
                     progress: ProgressCallback | None = ..., timeout: float | None = ...,
                     return_errors: Literal[True]) -> list[Explanation | SeqlensError]: ...
    def explain_many(self, model: str, inputs: Iterable[SequenceLike] | np.ndarray, methods: MethodsLike = None, *,
                     target: TargetLike = None, baseline: BaselineLike = None, state: StateLike = None,
                     faithfulness: bool = False, version: str | None = None, concurrency: int = 8,
                     progress: ProgressCallback | None = None, timeout: float | None = None,
                     return_errors: bool = False) -> list[Explanation] | list[Explanation | SeqlensError]:
        """Explain many inputs (streamed, see :meth:`explain_iter`) and return the results in
        input order. An item's error is raised once the stream is done, or, with
        ``return_errors=True``, put in its place in the list.

        >>> texts = ["great", "awful", "fine"]
        >>> exps = client.explain_many("sentiment", texts, "saliency", concurrency=4,   # doctest: +SKIP
        ...                            progress=lambda done, total: print(f"{done}/{total}"))
        """
        return in_input_order(self.explain_iter(
            model, inputs, methods, target=target, baseline=baseline, state=state, faithfulness=faithfulness,
            version=version, concurrency=concurrency, progress=progress, timeout=timeout), return_errors)
