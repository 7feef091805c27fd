"""The asyncio client: the same calls as :class:`seqlens_client.Client`, awaitable.

>>> import asyncio
>>> from seqlens_client import AsyncClient
>>> async def main() -> None:
...     async with AsyncClient("localhost:50051") as client:
...         exps = await client.explain_many("sentiment", ["great", "awful"], "saliency")
...         print([e.prediction.label for e in exps])
>>> asyncio.run(main())  # doctest: +SKIP
['positive', 'negative']
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Literal, overload

import grpc
import grpc.aio
import numpy as np

from ._proto.seqlens.v1 import models_pb2, service_pb2_grpc, types_pb2
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
from .client import _ClientBase
from .errors import SeqlensError, Unavailable, error_from_rpc
from .inputs import Inputs, SequenceLike
from .options import BaselineLike, MethodsLike, StateLike, TargetLike
from .results import Explanation, ModelInfo, ModelSummary, PredictResult
from .sequences import AsyncSequenceStream, SequenceId

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AsyncClient"]


class AsyncClient(_ClientBase):
    """An asyncio client; takes the same arguments as :class:`seqlens_client.Client`.

    Create it inside a running event loop (gRPC binds the channel to it) and close it with
    ``await client.close()`` or ``async with``.
    """

    def _connect(self) -> None:
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        else:
            self._channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
        self._stub = service_pb2_grpc.SequenceExplainerServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the channel connects (raises :class:`Unavailable` after ``timeout`` s)."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError as e:
            raise Unavailable(grpc.StatusCode.UNAVAILABLE, f"{self.target} not reachable within {timeout}s") from e

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None

    async def list_models(self, *, timeout: float | None = None) -> list[ModelSummary]:
        """See :meth:`Client.list_models`."""
        resp = await self._unary(self._stub.ListModels, models_pb2.ListModelsRequest(), timeout)
        return [ModelSummary.from_proto(m) for m in resp.models]

    async def get_model(self, name: str, *, timeout: float | None = None) -> ModelInfo:
        """See :meth:`Client.get_model`."""
        msg = await self._unary(self._stub.GetModel, models_pb2.GetModelRequest(name=name), timeout)
        info = self._model_info[name] = ModelInfo.from_proto(msg)
        return info

    async def _cached_info(self, name: str) -> ModelInfo | None:
        if name in self._model_info:
            return self._model_info[name]
        try:
            return await self.get_model(name)
        except SeqlensError:
            return None

    async def predict(self, model: str, inputs: Inputs, *, version: str | None = None, state: StateArg = None,
                      return_state: bool = False, timeout: float | None = None) -> PredictResult:
        """See :meth:`Client.predict`."""
        req = predict_request(model, inputs, version, state, return_state)
        return PredictResult.from_proto(await self._unary(self._stub.Predict, req, timeout))

    def sequence(self, model: str, *, version: str | None = None, sequence_id: SequenceId | None = None,
                 stream: bool = True, timeout: float | None = None) -> AsyncSequenceStream:
        """See :meth:`Client.sequence`: ``async with client.sequence(model) as seq: await seq.feed(x)``."""
        deadline = timeout if stream else self._deadline(timeout)
        return AsyncSequenceStream(self._stub, model, version, sequence_id, self._metadata, deadline, stream)

    async def explain(self, model: str, input: SequenceLike, methods: MethodsLike = None, *,
                      target: TargetLike = None, baseline: BaselineLike = None, state: StateLike = None,
                      faithfulness: bool = False, version: str | None = None,
                      initial_state: RecurrentState | None = None, return_state: bool = False,
                      timeout: float | None = None) -> Explanation:
        """See :meth:`Client.explain`."""
        spec = ExplainSpec.build(model, methods, target, baseline, state, faithfulness, version)
        req = spec.request(input)
        with_state(req, initial_state, return_state)
        resp = await self._unary(self._stub.Explain, req, timeout)
        return finish_explanation(resp, req.input, await self._cached_info(model))

    async def explain_iter(self, model: str, inputs: Iterable[SequenceLike] | AsyncIterable[SequenceLike] | np.ndarray,
                           methods: MethodsLike = None, *, target: TargetLike = None, baseline: BaselineLike = None,
                           state: StateLike = None, faithfulness: bool = False, version: str | None = None,
                           concurrency: int = 8, progress: ProgressCallback | None = None,
                           timeout: float | None = None) -> AsyncIterator[Outcome]:
        """See :meth:`Client.explain_iter`; ``inputs`` may also be an async iterable."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        spec = ExplainSpec.build(model, methods, target, baseline, state, faithfulness, version)
        info = await self._cached_info(model)
        total: int | None = None
        if not isinstance(inputs, AsyncIterable):
            inputs, total = bulk_items(inputs)
        slots = asyncio.Semaphore(concurrency)
        sent: dict[str, types_pb2.SequenceInput] = {}
        local: collections.deque[Outcome] = collections.deque()  # items that failed before sending
        call = self._stub.StreamExplain(timeout=timeout, metadata=self._metadata)

        async def items() -> AsyncIterator[SequenceLike]:
            if isinstance(inputs, AsyncIterable):
                async for x in inputs:
                    yield x
            else:
                for x in inputs:
                    yield x

        async def write() -> None:
            i = 0
            try:
                async for item in items():
                    try:
                        req = spec.request(item, str(i))
                    except SeqlensError as e:
                        local.append((i, e))
                        i += 1
                        continue
                    await slots.acquire()
                    sent[req.request_id] = req.input
                    await call.write(req)
                    i += 1
            finally:
                # Half-close even when the caller's iterator raised, so that reading ends;
                # the error then surfaces from `await writer`.
                if not call.done():
                    await call.done_writing()

        writer = asyncio.create_task(write())
        report = ProgressCounter(progress, total)

        try:
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    break
                slots.release()
                yield report(stream_outcome(resp, sent, info))
                while local:
                    yield report(local.popleft())
            await writer  # surfaces errors raised while reading the inputs
            while local:
                yield report(local.popleft())
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        finally:
            writer.cancel()
            call.cancel()

    @overload
    async def explain_many(self, model: str, inputs: Iterable[SequenceLike] | AsyncIterable[SequenceLike] | np.ndarray,
                           methods: MethodsLike = ..., *, target: TargetLike = ..., baseline: BaselineLike = ...,
                           state: StateLike = ..., faithfulness: bool = ..., version: str | None = ...,
                           concurrency: int = ..., progress: ProgressCallback | None = ...,
                           timeout: float | None = ..., return_errors: Literal[False] = ...) -> list[Explanation]: ...
    @overload
    async def explain_many(self, model: str, inputs: Iterable[SequenceLike] | AsyncIterable[SequenceLike] | np.ndarray,
                           methods: MethodsLike = ..., *, target: TargetLike = ..., baseline: BaselineLike = ...,
                           state: StateLike = ..., faithfulness: bool = ..., version: str | None = ...,
                           concurrency: int = ..., progress: ProgressCallback | None = ...,
                           timeout: float | None = ...,
                           return_errors: Literal[True]) -> list[Explanation | SeqlensError]: ...
    async def explain_many(self, model: str, inputs: Iterable[SequenceLike] | AsyncIterable[SequenceLike] | np.ndarray,
                           methods: MethodsLike = None, *, target: TargetLike = None, baseline: BaselineLike = None,
                           state: StateLike = None, faithfulness: bool = False, version: str | None = None,
                           concurrency: int = 8, progress: ProgressCallback | None = None,
                           timeout: float | None = None,
                           return_errors: bool = False) -> list[Explanation] | list[Explanation | SeqlensError]:
        """See :meth:`Client.explain_many`."""
        outcomes = [o async for o in self.explain_iter(
            model, inputs, methods, target=target, baseline=baseline, state=state, faithfulness=faithfulness,
            version=version, concurrency=concurrency, progress=progress, timeout=timeout)]
        return in_input_order(outcomes, return_errors)
