"""SDK exceptions: every failed call raises a :class:`SeqlensError` carrying the gRPC status.

>>> from seqlens_client import Client, NotFound
>>> try:                                                  # doctest: +SKIP
...     Client("localhost:50051").get_model("nope")
... except NotFound as e:
...     print(e.code.name, e.message)
NOT_FOUND model 'nope' not found
"""

from __future__ import annotations

import grpc

__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SeqlensError",
    "Unauthenticated",
    "Unavailable",
    "error_from_code",
    "error_from_rpc",
]


class SeqlensError(Exception):
    """A call failed. ``code`` is the :class:`grpc.StatusCode`, ``message`` the server's text."""

    code: grpc.StatusCode

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[SeqlensError], tuple[grpc.StatusCode, str]]:
        # Keeps (code, message) through pickling (multiprocessing, concurrent.futures).
        return (type(self), (self.code, self.message))


class InvalidArgument(SeqlensError):
    """The request is malformed or over a limit (``INVALID_ARGUMENT``); the message names the field."""


class NotFound(SeqlensError):
    """No such model or version (``NOT_FOUND``)."""


class FailedPrecondition(SeqlensError):
    """The server's state refuses the call (``FAILED_PRECONDITION``): an ended or evicted
    sequence, a state from another model version, a model that cannot stream."""


class Unavailable(SeqlensError):
    """No server reachable, no READY version, or the server is draining (``UNAVAILABLE``).

    The client already retried these with backoff before raising."""


class ResourceExhausted(SeqlensError):
    """A work limit or queue is full (``RESOURCE_EXHAUSTED``); back off and retry later."""


class DeadlineExceeded(SeqlensError):
    """The call's deadline (``timeout=``) passed (``DEADLINE_EXCEEDED``)."""


class Unauthenticated(SeqlensError):
    """Missing or wrong bearer token (``UNAUTHENTICATED``)."""


class PermissionDenied(SeqlensError):
    """The credentials are valid but not allowed (``PERMISSION_DENIED``)."""


class Cancelled(SeqlensError):
    """The call was cancelled (``CANCELLED``)."""


class Internal(SeqlensError):
    """The server failed (``INTERNAL``, ``UNKNOWN``, ``UNIMPLEMENTED`` and other codes)."""


_BY_CODE: dict[grpc.StatusCode, type[SeqlensError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.CANCELLED: Cancelled,
}
_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def error_from_code(code: grpc.StatusCode | int, message: str) -> SeqlensError:
    """The SDK exception for a status code (enum or its number, as in a stream item error)."""
    if isinstance(code, int):
        code = _CODE_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    return _BY_CODE.get(code, Internal)(code, message)


def error_from_rpc(err: grpc.RpcError) -> SeqlensError:
    """Convert a raised :class:`grpc.RpcError` (a ``grpc.Call``) into an SDK exception."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return error_from_code(code or grpc.StatusCode.UNKNOWN, details or "")
