"""Channel settings shared by the sync and asyncio clients: TLS, tokens, retries, load
balancing and keepalive, all expressed as gRPC channel options and credentials.

>>> opts = dict(channel_options(RetryPolicy(max_attempts=3), None, "round_robin", 64 << 20))
>>> json.loads(opts["grpc.service_config"])["loadBalancingConfig"]
[{'round_robin': {}}]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

__all__ = [
    "SERVICE",
    "TLS",
    "Keepalive",
    "RetryPolicy",
    "channel_credentials",
    "channel_options",
    "token_metadata",
]

SERVICE = "seqlens.v1.SequenceExplainerService"
_ChannelOption = tuple[str, Any]


def _read(value: str | Path | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


@dataclass(frozen=True)
class TLS:
    """TLS settings. Each PEM may be given as a path or as bytes.

    - ``root_ca``: CA bundle that signed the server certificate (None: the system roots);
    - ``cert`` and ``key``: the client certificate for mutual TLS;
    - ``server_name``: the name to verify in the server certificate when it differs from the
      target host (``grpc.ssl_target_name_override``), e.g. connecting to an IP address.

    >>> TLS(root_ca=b"...pem...", server_name="seqlens.internal").server_name
    'seqlens.internal'
    """

    root_ca: str | Path | bytes | None = None
    cert: str | Path | bytes | None = None
    key: str | Path | bytes | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("mutual TLS needs both cert and key")
        return grpc.ssl_channel_credentials(root_certificates=_read(self.root_ca),
                                            private_key=_read(self.key), certificate_chain=_read(self.cert))


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of calls that fail with ``UNAVAILABLE`` (and only those), with exponential backoff.

    gRPC retries transparently (service config ``retryPolicy``); a call that has received
    response data is never retried, so a stream is only retried before its first answer.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            raise ValueError(f"max_attempts must be 2..5 (gRPC caps it at 5), got {self.max_attempts}")
        if self.initial_backoff_s <= 0 or self.max_backoff_s <= 0 or self.backoff_multiplier <= 0:
            raise ValueError("backoff settings must be positive")

    def to_service_config(self) -> dict[str, Any]:
        return {"maxAttempts": self.max_attempts, "initialBackoff": f"{self.initial_backoff_s:.3f}s",
                "maxBackoff": f"{self.max_backoff_s:.3f}s", "backoffMultiplier": self.backoff_multiplier,
                "retryableStatusCodes": ["UNAVAILABLE"]}


@dataclass(frozen=True)
class Keepalive:
    """HTTP/2 keepalive pings, so that dead connections (a replica gone, a NAT timeout) are
    noticed within ``time_s + timeout_s``. Servers reject pings more frequent than they allow
    (gRPC's default minimum is 5 minutes without calls), so keep ``time_s`` at or above the
    server's ``grpc.http2.min_ping_interval_without_data_ms`` when ``permit_without_calls``."""

    time_s: float = 60.0
    timeout_s: float = 20.0
    permit_without_calls: bool = False

    def options(self) -> list[_ChannelOption]:
        return [("grpc.keepalive_time_ms", int(self.time_s * 1000)),
                ("grpc.keepalive_timeout_ms", int(self.timeout_s * 1000)),
                ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
                ("grpc.http2.max_pings_without_data", 0)]


def channel_options(retry: RetryPolicy | None, keepalive: Keepalive | None, load_balancing: str | None,
                    max_message_bytes: int, tls: TLS | None = None) -> list[_ChannelOption]:
    """Channel options: service config (retry policy, load balancing), sizes, keepalive, TLS name."""
    config: dict[str, Any] = {}
    if retry is not None:
        config["methodConfig"] = [{"name": [{"service": SERVICE}], "retryPolicy": retry.to_service_config()}]
    if load_balancing:
        # round_robin spreads calls over every address a `dns:///` target resolves to (one
        # connection per replica), instead of pinning all calls to the first (pick_first).
        config["loadBalancingConfig"] = [{load_balancing: {}}]
    opts: list[_ChannelOption] = [
        ("grpc.enable_retries", 1 if retry is not None else 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if config:
        opts.append(("grpc.service_config", json.dumps(config)))
    if keepalive is not None:
        opts.extend(keepalive.options())
    if tls is not None and tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return opts


def check_token(token: str | None) -> None:
    """Catch the common slip of passing the whole header value as the token."""
    if token and token.strip().lower().startswith("bearer "):
        raise ValueError("the token starts with 'Bearer ': pass the token alone; the 'Bearer ' prefix is "
                         "added for you")


def channel_credentials(tls: TLS | None, token: str | None) -> grpc.ChannelCredentials | None:
    """TLS credentials, with the bearer token attached as call credentials; None = plaintext."""
    check_token(token)
    if tls is None:
        return None
    creds = tls.credentials()
    if token:
        return grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return creds


def token_metadata(tls: TLS | None, token: str | None) -> tuple[tuple[str, str], ...]:
    """Per-call metadata for the token on plaintext channels (gRPC only sends call credentials
    over TLS): ``authorization: Bearer <token>``."""
    if token and tls is None:
        return (("authorization", f"Bearer {token}"),)
    return ()
