"""One interceptor maps domain errors to status codes, times every RPC and tags it with a
request id; another checks bearer tokens. INTERNAL never carries details to the caller."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .. import errors
from ..logs import request_id
from ..metrics import Metrics
from .auth import TokenStore

log = logging.getLogger(__name__)

STATUS_FOR: list[tuple[type[errors.SeqlensError], grpc.StatusCode]] = [
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.ModelUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ModelConfigError, grpc.StatusCode.UNAVAILABLE),
]
HEALTH_PREFIX = "/grpc.health.v1.Health/"


def status_for(exc: errors.SeqlensError) -> grpc.StatusCode:
    for cls, code in STATUS_FOR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _rewrap(handler: grpc.RpcMethodHandler, unary: Callable[[Any], Any], streaming: Callable[[Any], Any]
            ) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour wrapped (unary-response or streaming-response)."""
    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kw)
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kw)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics, known_model: Callable[[str], bool]) -> None:
        self._metrics = metrics
        self._known_model = known_model

    def _model_label(self, request: Any) -> str:
        name = getattr(request, "model_name", None) or getattr(request, "name", None) or ""
        if not isinstance(name, str) or not name:
            return ""
        return name if self._known_model(name) else "unknown"  # bounded label values

    async def _handle_error(self, exc: BaseException, context: grpc.aio.ServicerContext, rpc: str
                            ) -> grpc.StatusCode:
        if isinstance(exc, errors.SeqlensError):
            code = status_for(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.error("unmapped domain error", extra={"rpc": rpc, "error": exc.message})
                await context.abort(code, "internal error; the server log has the details")
            await context.abort(code, exc.message)
        log.exception("internal error", extra={"rpc": rpc}, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL,
                            f"internal error (request id {request_id.get()}); the server log has the details")
        raise AssertionError("unreachable")

    def _begin(self, context: grpc.aio.ServicerContext) -> str:
        md = dict(context.invocation_metadata() or ())
        rid = str(md.get("x-request-id") or uuid.uuid4().hex)[:128]
        request_id.set(rid)
        context.set_trailing_metadata((("x-request-id", rid),))
        return rid

    def _finish(self, rpc: str, model: str, context: grpc.aio.ServicerContext, start: float,
                aborted: grpc.StatusCode | None) -> None:
        code = aborted or context.code() or grpc.StatusCode.OK
        code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        self._metrics.requests.labels(rpc, model, code_name).inc()
        self._metrics.request_duration.labels(rpc, model, code_name).observe(time.perf_counter() - start)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX) or "ServerReflection" in details.method:
            return handler
        rpc = details.method.rsplit("/", 1)[-1]
        metrics = self._metrics

        def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                self._begin(context)
                start = time.perf_counter()
                model = self._model_label(request)
                metrics.inflight.labels(rpc).inc()
                failed: grpc.StatusCode | None = None
                try:
                    return await behavior(request, context)
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    failed = status_for(exc) if isinstance(exc, errors.SeqlensError) else grpc.StatusCode.INTERNAL
                    await self._handle_error(exc, context, rpc)
                finally:
                    metrics.inflight.labels(rpc).dec()
                    self._finish(rpc, model, context, start, failed)
            return wrapper

        def streaming(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                self._begin(context)
                start = time.perf_counter()
                metrics.inflight.labels(rpc).inc()
                failed: grpc.StatusCode | None = None
                try:
                    async for item in behavior(request, context):
                        yield item
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    failed = status_for(exc) if isinstance(exc, errors.SeqlensError) else grpc.StatusCode.INTERNAL
                    await self._handle_error(exc, context, rpc)
                finally:
                    metrics.inflight.labels(rpc).dec()
                    self._finish(rpc, "", context, start, failed)
            return wrapper

        return _rewrap(handler, unary, streaming)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Bearer tokens from ``authorization`` metadata; health stays open for probes."""

    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        md = dict(details.invocation_metadata or ())
        header = md.get("authorization", "")
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        problem = self._tokens.check(header)
        if problem is None:
            return handler

        def unary(_behavior: Any) -> Callable[..., Awaitable[Any]]:
            async def deny(_request: Any, context: grpc.aio.ServicerContext) -> Any:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)
            return deny

        def streaming(_behavior: Any) -> Callable[..., AsyncIterator[Any]]:
            async def deny(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)
                yield None  # pragma: no cover - makes this an async generator
            return deny

        return _rewrap(handler, unary, streaming)
