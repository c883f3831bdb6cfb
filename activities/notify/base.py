"""What every channel shares: the registry, the error that says whether to retry, secrets, HTTP.

A channel is one module of this package with one function:

    @register("webhook")
    async def send(notification: Notification, config: WebhookChannel, secrets: Secrets) -> DeliveryResult

`config` is the channel's entry of the notify file (no secret in it, only references);
`secrets` holds the values those references resolved to, at send time, masked in any repr.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from pydantic import SecretStr

from domain.notifications import DeliveryResult, DeliveryStatus, Notification


class ChannelError(Exception):
    """A send that failed. `retryable`: worth another attempt (5xx, 429, connection); else not (4xx).

    `retry_after`: seconds the receiver asked us to wait (a 429's Retry-After), for the next attempt.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Secrets:
    """The resolved secrets of one channel. Never printed: repr and str show only the names."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = {name: SecretStr(value) for name, value in (values or {}).items()}

    def get(self, name: str) -> str:
        return self._values[name].get_secret_value()

    def values(self) -> list[str]:
        return [v.get_secret_value() for v in self._values.values()]

    def __repr__(self) -> str:
        return f"Secrets({', '.join(f'{name}=***' for name in self._values)})"

    __str__ = __repr__


Sender = Callable[[Notification, Any, Secrets], Awaitable[DeliveryResult]]

_REGISTRY: dict[str, Sender] = {}
_SUPPORT = frozenset({"base", "config", "delivery", "links", "metrics", "ratelimit", "render", "signature",
                      "slackapi"})


def register(channel_type: str) -> Callable[[Sender], Sender]:
    def add(send: Sender) -> Sender:
        if channel_type in _REGISTRY and _REGISTRY[channel_type] is not send:
            raise TypeError(f"channel type {channel_type} registered twice")
        _REGISTRY[channel_type] = send
        return send

    return add


def registry() -> dict[str, Sender]:
    """Every channel type -> its send function (each channel module imported once)."""
    package = importlib.import_module("activities.notify")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _SUPPORT and not info.name.startswith("_"):
            importlib.import_module(f"activities.notify.{info.name}")
    return dict(sorted(_REGISTRY.items()))


def result(notification: Notification, config: Any, started: float, detail: str,
           status: DeliveryStatus = DeliveryStatus.SENT, receipt: Mapping[str, str] | None = None) -> DeliveryResult:
    """The outcome of one send; `channel` is filled in by the delivery activity."""
    return DeliveryResult(channel="", channel_type=config.type, dedup_key=notification.dedup_key, status=status,
                          detail=detail, latency_ms=round((time.monotonic() - started) * 1000, 1),
                          receipt=dict(receipt or {}))


def _retryable_status(status: int) -> bool:
    return status >= 500 or status in (408, 425, 429)


def retry_after(response: httpx.Response) -> float | None:
    """A Retry-After in seconds (Slack and most APIs send seconds; an HTTP date is not honoured)."""
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if 0 <= seconds < 3600 else None


def refused(host: str, response: httpx.Response) -> ChannelError:
    """The error for a non-2xx answer: retryable for 5xx, 408, 425 and 429 (after its Retry-After)."""
    return ChannelError(f"{host} answered HTTP {response.status_code}",
                        retryable=_retryable_status(response.status_code),
                        retry_after=retry_after(response) if response.status_code == 429 else None)


async def post_json(url: str, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None) -> str:
    """POST a JSON body; a 2xx returns "HTTP <status>", anything else raises `ChannelError`."""
    response = await post(url, body, timeout=timeout, headers=headers)
    if response.is_success:
        return f"HTTP {response.status_code}"
    raise refused(httpx.URL(url).host, response)


async def post(url: str, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None) -> httpx.Response:
    """POST a JSON body and read the whole answer, whatever its status; unreachable raises `ChannelError`.

    Through the transport, not an `httpx.AsyncClient`: the client logs every request's full URL
    at INFO, and a Slack or Teams webhook URL's path is its secret. Errors name the host only.
    """
    host = httpx.URL(url).host
    request = httpx.Request("POST", url, content=body,
                            headers={"Content-Type": "application/json", **(headers or {})},
                            extensions={"timeout": httpx.Timeout(timeout).as_dict()})
    try:
        async with httpx.AsyncHTTPTransport() as transport:
            response = await transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
    except httpx.HTTPError as exc:
        raise ChannelError(f"{host}: {type(exc).__name__}", retryable=True) from None
    return response
