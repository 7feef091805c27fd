"""Thin servicers: decode with converters, call the dataplane, encode the answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from seqlens_client.stubs import (
    explain_pb2,
    models_pb2,
    predict_pb2,
    sequence_pb2,
    service_pb2_grpc,
)
from seqlens_client.stubs import oip_pb2 as oip
from seqlens_client.stubs import oip_pb2_grpc as oip_grpc

from .. import __version__
from ..dataplane import DataPlane
from ..errors import ModelUnavailable, SeqlensError
from ..explain import ExplainResult
from . import converters
from .interceptors import bounded_details, status_for

log = logging.getLogger(__name__)


class SequenceExplainerServicer(service_pb2_grpc.SequenceExplainerServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    async def ListModels(self, request: models_pb2.ListModelsRequest, context: Any) -> models_pb2.ListModelsResponse:
        return converters.list_models_response(self._dp.list_models())

    async def GetModel(self, request: models_pb2.GetModelRequest, context: Any) -> models_pb2.ModelInfo:
        return converters.model_info(self._dp.get_model(request.name))

    async def Predict(self, request: predict_pb2.PredictRequest, context: Any) -> predict_pb2.PredictResponse:
        if request.states or request.return_state or request.HasField("sequence"):
            return await self._stateful_predict(request)
        inputs = [converters.sequence_input(s, f"inputs[{i}]") for i, s in enumerate(request.inputs)]
        result = await self._dp.predict(request.model_name, request.model_version, inputs)
        return converters.predict_response(result)

    async def _stateful_predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        inputs = [converters.sequence_input(s, f"inputs[{i}]") for i, s in enumerate(request.inputs)]
        streaming = self._dp.streaming
        if request.HasField("sequence"):
            ref = converters.sequence_ref(request.sequence, "sequence")
            outcome = await streaming.unary_chunk(request.model_name, request.model_version, ref, inputs,
                                                  with_state=bool(request.states) or request.return_state)
            return converters.chunk_predict_response(outcome)
        states = converters.predict_states(request)
        result = await streaming.predict(request.model_name, request.model_version, inputs, states)
        return converters.stateful_predict_response(result)

    async def StreamSequence(self, request_iterator: AsyncIterator[sequence_pb2.StreamSequenceRequest], context: Any
                             ) -> AsyncIterator[sequence_pb2.StreamSequenceResponse]:
        """Chunks answered one at a time, in order; a failed chunk is answered with ``error`` set
        (its sequence keeps its state). A draining server ends the stream between chunks."""
        streaming = self._dp.streaming
        incoming = request_iterator.__aiter__()
        closing = asyncio.ensure_future(streaming.closing.wait())
        nxt: asyncio.Future[sequence_pb2.StreamSequenceRequest] | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(incoming.__anext__())
                await asyncio.wait((nxt, closing), return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    raise ModelUnavailable("server is shutting down: this stream's sequences are dropped; "
                                           "start them again on another replica")
                try:
                    msg = nxt.result()
                except StopAsyncIteration:
                    return
                try:
                    ref = converters.sequence_ref(msg.sequence, "sequence")
                    outcome = await streaming.chunk(msg.model_name, msg.model_version, ref,
                                                    converters.chunk_input(msg))
                    answer = converters.chunk_response(msg.request_id, outcome)
                except SeqlensError as exc:
                    answer = converters.chunk_error(msg.request_id, status_for(exc).value[0], exc.message)
                yield answer
        finally:
            closing.cancel()
            if nxt is not None:
                if nxt.done() and not nxt.cancelled():
                    nxt.exception()  # retrieved: the end of the request stream is not an error
                nxt.cancel()

    # --- explanations ----------------------------------------------------------------
    async def Explain(self, request: explain_pb2.ExplainRequest, context: Any) -> explain_pb2.ExplainResponse:
        deadline = _deadline(context)
        if request.HasField("sequence"):  # the next chunk of a server-held sequence
            ref = converters.sequence_ref(request.sequence, "sequence")
            result, ended = await self._dp.streaming.explain_chunk(
                converters.explain_request(request), ref, lambda r: self._dp.explain(r, deadline))
            return converters.sequence_explain_response(self._encode(result), result, ended)
        result = await self._dp.explain(converters.explain_request(request), deadline)
        return self._encode(result)

    async def StreamExplain(self, request_iterator: AsyncIterator[explain_pb2.ExplainRequest], context: Any
                            ) -> AsyncIterator[explain_pb2.ExplainResponse]:
        """Items run concurrently (at most explain_workers of one stream at a time) and are
        answered as each finishes; a failed item is answered with ``error`` set."""
        deadline = _deadline(context)
        workers = self._dp.settings.explain_workers
        slots = asyncio.Semaphore(workers)
        # Bounded: a client that stops reading stops the stream from taking new items
        # (an item holds its slot until its answer is queued), so memory stays bounded.
        answers: asyncio.Queue[explain_pb2.ExplainResponse | None] = asyncio.Queue(maxsize=workers)
        running: set[asyncio.Task[None]] = set()

        async def one(msg: explain_pb2.ExplainRequest) -> None:
            try:
                try:
                    answer = self._encode(await self._dp.explain(converters.explain_request(msg), deadline))
                except SeqlensError as exc:
                    answer = converters.explain_error(msg.request_id, status_for(exc).value[0],
                                                      bounded_details(exc.message))  # as unary details
                except Exception:  # one item fails, the stream goes on
                    log.exception("StreamExplain item failed", extra={"item_request_id": msg.request_id})
                    answer = converters.explain_error(msg.request_id, grpc.StatusCode.INTERNAL.value[0],
                                                      "internal error; the server log has the details")
                await answers.put(answer)
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for msg in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(one(msg))
                    running.add(task)
                    task.add_done_callback(running.discard)
                await asyncio.gather(*running)
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await reader  # a broken request stream fails the call
        finally:
            for task in (reader, *running):
                task.cancel()

    def _encode(self, result: ExplainResult) -> explain_pb2.ExplainResponse:
        start = time.perf_counter()
        msg = converters.explain_response(result)
        seconds = time.perf_counter() - start
        msg.timings.add(stage="serialize", seconds=seconds)
        self._dp.metrics.stage_duration.labels(result.model_name, "serialize").observe(seconds)
        return msg


def _deadline(context: Any) -> float | None:
    """The call's deadline as a time.monotonic() instant (None: no deadline)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol v2 over the same dataplane.

    Tensors: input ``inputs`` (INT64 [B,T] token ids or FP32 [B,T,F] features), optional
    ``lengths`` (INT64 [B]); output ``outputs`` (FP32: logits [B,C], [B,T,C] or [B,H]).
    """

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    async def ServerLive(self, request: oip.ServerLiveRequest, context: Any) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request: oip.ServerReadyRequest, context: Any) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self._dp.ready())

    async def ModelReady(self, request: oip.ModelReadyRequest, context: Any) -> oip.ModelReadyResponse:
        return oip.ModelReadyResponse(ready=self._dp.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: oip.ServerMetadataRequest, context: Any) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name="seqlens", version=__version__, extensions=["model_repository"])

    async def ModelMetadata(self, request: oip.ModelMetadataRequest, context: Any) -> oip.ModelMetadataResponse:
        return converters.oip_metadata_response(self._dp.model_tensors(request.name, request.version))

    async def ModelInfer(self, request: oip.ModelInferRequest, context: Any) -> oip.ModelInferResponse:
        x = converters.oip_infer_inputs(request)
        ref = converters.oip_sequence(request)
        if ref is not None:  # Triton sequence parameters: a server-held sequence
            version, out = await self._dp.streaming.infer(request.model_name, request.model_version, ref, x.inputs,
                                                          x.lengths, inputs_where=x.inputs_where,
                                                          lengths_where=x.lengths_where)
            return converters.oip_infer_response(request, version, out)
        loaded, out = await self._dp.infer_tensor(request.model_name, request.model_version, x.inputs, x.lengths,
                                                  inputs_where=x.inputs_where, lengths_where=x.lengths_where)
        return converters.oip_infer_response(request, loaded.version, out)
