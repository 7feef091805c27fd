"""One interceptor maps domain errors to status codes, times every RPC and tags it with a
request id; another checks bearer tokens. INTERNAL never carries details to the caller."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

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
    (errors.ModelConfigError, grpc.StatusCode.UNAVAILABLE),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.SequenceNotFound, grpc.StatusCode.NOT_FOUND),
]
HEALTH_PREFIX = "/grpc.health.v1.Health/"
# OIP liveness/readiness answer (live, not ready) during a drain instead of being refused.
ANSWER_WHILE_DRAINING = frozenset(
    f"/inference.GRPCInferenceService/{m}" for m in ("ServerLive", "ServerReady", "ModelReady"))
# Generated request ids: a random per-process prefix and a counter (32 hex digits, unique across
# replicas); uuid4 per call would cost a getrandom syscall on every request.
_ID_PREFIX = uuid.uuid4().hex[:20]
_ID_COUNTER = itertools.count()


def status_for(exc: errors.SeqlensError) -> grpc.StatusCode:
    for cls, code in STATUS_FOR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


# --- undecodable requests and bounded details (security work: notes/security.md) ----------
# grpc answers UNKNOWN when a request's bytes do not parse (the deserializer raises before any
# handler runs). A lenient deserializer turns that into INVALID_ARGUMENT: for unary requests
# it returns a marker that ``_decoded`` (in the wrappers) raises on; in request streams it
# raises InvalidInput from the iterator, which fails the call.
class _Undecodable:
    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _lenient(deserializer: Callable[[bytes], Any] | None, streaming: bool) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except (DecodeError, RecursionError, ValueError) as exc:
            message = f"undecodable request: {str(exc)[:300]}"
            if streaming:
                raise errors.InvalidInput(message) from None
            return _Undecodable(message)
    return decode


def _decoded(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise errors.InvalidInput(request.message)
    return request


# Status details travel percent-encoded in an HTTP/2 trailer, and clients drop trailers over
# 8 KiB (the call then fails with RESOURCE_EXHAUSTED "metadata size exceeds soft limit").
# Messages may quote request values (names, options), so they are capped: 2,000 UTF-8 bytes
# stay under 6 KiB even when every byte is percent-encoded.
MAX_DETAILS_BYTES = 2000


def bounded_details(message: str) -> str:
    raw = message.encode()
    if len(raw) <= MAX_DETAILS_BYTES:
        return message
    return raw[:MAX_DETAILS_BYTES].decode(errors="ignore") + f"... ({len(raw)} bytes, cut)"
# --- end of undecodable requests and bounded details ----------------------------------------


def _rewrap(handler: grpc.RpcMethodHandler, unary: Callable[[Any], Any], streaming: Callable[[Any], Any]
            ) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour wrapped (unary-response or streaming-response)."""
    kw = {"request_deserializer": _lenient(handler.request_deserializer, handler.request_streaming),
          "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kw)
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kw)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics, known_model: Callable[[str], bool],
                 draining: Callable[[], bool] = lambda: False) -> None:
        self._metrics = metrics
        self._known_model = known_model
        self._draining = draining
        self.active = 0  # calls between arrival and status (the drain waits for 0)
        self.last_arrival = 0.0  # time.monotonic() of the latest call (the drain waits for quiet)
        self._wrapped: dict[tuple[str, int], tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._series: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # (rpc, model, code) -> counter, histogram

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
            await context.abort(code, bounded_details(exc.message))
        log.exception("internal error", extra={"rpc": rpc}, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL,
                            f"internal error (request id {request_id.get()}); the server log has the details")
        raise AssertionError("unreachable")

    def _begin(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's ``x-request-id`` (or a new one), set for logs and echoed in trailing metadata."""
        rid = ""
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id" and isinstance(value, str):
                rid = value[:128]
                break
        rid = rid or f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"
        request_id.set(rid)
        context.set_trailing_metadata((("x-request-id", rid),))
        return rid

    def _refuse_if_draining(self) -> None:
        """While draining, new calls are refused before they start; clients retry elsewhere."""
        if self._draining():
            raise errors.shutting_down()

    @staticmethod
    def _cancelled_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
        """grpc cancels the handler when the deadline passes or the caller goes away."""
        remaining = context.time_remaining()
        return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 \
            else grpc.StatusCode.CANCELLED

    def _finish(self, rpc: str, model: str, context: grpc.aio.ServicerContext, start: float,
                failed: grpc.StatusCode | None) -> None:
        code = failed or context.code() or grpc.StatusCode.OK
        code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        seconds = time.perf_counter() - start
        key = (rpc, model, code_name)
        series = self._series.get(key)
        if series is None:  # label lookups take a lock and hash the values: once per combination
            series = self._series[key] = (self._metrics.requests.labels(*key),
                                          self._metrics.request_duration.labels(*key))
        series[0].inc()
        series[1].observe(seconds)
        if code_name != "OK":
            log.info("rpc failed", extra={"rpc": rpc, "model": model, "code": code_name,
                                          "duration_ms": round(seconds * 1000, 3)})
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("rpc", extra={"rpc": rpc, "model": model, "code": code_name,
                                    "duration_ms": round(seconds * 1000, 3)})

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX) or "ServerReflection" in details.method:
            return handler
        # Wrapping once per (method, handler) keeps per-call overhead low; handlers are the
        # registered ones or the auth interceptor's few cached denials, so this stays small.
        key = (details.method, id(handler))
        cached = self._wrapped.get(key)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, details.method.rsplit("/", 1)[-1],
                             refuse_while_draining=details.method not in ANSWER_WHILE_DRAINING)
        self._wrapped[key] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, rpc: str, *, refuse_while_draining: bool
              ) -> grpc.RpcMethodHandler:
        inflight = self._metrics.inflight.labels(rpc)
        refuse = self._refuse_if_draining if refuse_while_draining else (lambda: None)

        def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                call = _Accounting(self, rpc, self._model_label(request), inflight, context)
                try:
                    refuse()
                    result = await behavior(_decoded(request), context)
                except grpc.aio.AbortError:
                    call.finish(None)
                    raise
                except asyncio.CancelledError:
                    call.finish(self._cancelled_code(context))
                    raise
                except Exception as exc:  # noqa: BLE001 - the one place errors become status codes
                    call.finish(status_for(exc) if isinstance(exc, errors.SeqlensError) else grpc.StatusCode.INTERNAL)
                    await self._handle_error(exc, context, rpc)
                call.finish(None)
                return result
            return wrapper

        def streaming(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                call = _Accounting(self, rpc, "", inflight, context)
                try:
                    refuse()
                    async for item in behavior(_decoded(request), context):
                        yield item
                except grpc.aio.AbortError:
                    call.finish(None)
                    raise
                except (asyncio.CancelledError, GeneratorExit):
                    call.finish(self._cancelled_code(context))
                    raise
                except Exception as exc:  # noqa: BLE001 - the one place errors become status codes
                    call.finish(status_for(exc) if isinstance(exc, errors.SeqlensError) else grpc.StatusCode.INTERNAL)
                    await self._handle_error(exc, context, rpc)
                call.finish(None)
            return wrapper

        return _rewrap(handler, unary, streaming)


class _Accounting:
    """One RPC's request id, in-flight gauge, metrics and log line. ``finish`` runs before grpc
    sends the status (except after a servicer's own ``context.abort``), so a caller that has
    its answer sees it counted."""

    __slots__ = ("_context", "_done", "_inflight", "_model", "_owner", "_rpc", "_start")

    def __init__(self, owner: ErrorInterceptor, rpc: str, model: str, inflight: Any,
                 context: grpc.aio.ServicerContext) -> None:
        owner._begin(context)
        self._owner, self._rpc, self._model, self._inflight, self._context = owner, rpc, model, inflight, context
        self._start = time.perf_counter()
        self._done = False
        owner.active += 1
        owner.last_arrival = time.monotonic()
        inflight.inc()

    def finish(self, failed: grpc.StatusCode | None) -> None:
        if self._done:
            return
        self._done = True
        self._owner.active -= 1
        self._inflight.dec()
        self._owner._finish(self._rpc, self._model, self._context, self._start, failed)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Bearer tokens from ``authorization`` metadata; health stays open for probes."""

    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens
        self._denials: dict[tuple[str, str], grpc.RpcMethodHandler] = {}

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
        key = (details.method, problem)
        denial = self._denials.get(key)
        if denial is None:  # a handful of messages x methods: cached, so wrapping stays cheap
            denial = self._denials[key] = self._deny(handler, problem)
        return denial

    @staticmethod
    def _deny(handler: grpc.RpcMethodHandler, problem: str) -> grpc.RpcMethodHandler:
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
