"""Connecting to Temporal the same way from the CLI, the worker, the API and tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from temporalio.client import Client, TLSConfig
from temporalio.common import HeaderCodecBehavior
from temporalio.contrib.pydantic import pydantic_data_converter

from runtime.codec import data_converter
from runtime.settings import Settings


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """`lazy`: connect at the first call, and again at every call until Temporal answers (the API
    starts before Temporal in a compose stack and must serve /healthz meanwhile). With
    RECLAIM_ENCRYPT on, every payload is sealed (runtime/codec.py); a missing key stops here."""
    tls: bool | TLSConfig = settings.temporal_tls or bool(settings.temporal_api_key)
    if settings.temporal_tls_client_cert_path and settings.temporal_tls_client_key_path:
        tls = TLSConfig(
            client_cert=settings.temporal_tls_client_cert_path.read_bytes(),
            client_private_key=settings.temporal_tls_client_key_path.read_bytes(),
        )
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key,
        tls=tls,
        data_converter=data_converter(settings, pydantic_data_converter),
        # headers too: an interceptor's context (tracing, say) is no business of the history store's
        header_codec_behavior=HeaderCodecBehavior.CODEC if settings.encrypt else HeaderCodecBehavior.NO_CODEC,
        lazy=lazy,
    )


async def connect_when_ready(settings: Settings, timeout: float = 60.0) -> Client:
    """Connect to a server we have just started: its port opens before its frontend is healthy
    ("Frontend is not healthy yet"), so a refused first connection is retried until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect(settings)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def connect_patiently(settings: Settings, stop: asyncio.Event, log: logging.Logger) -> Client | None:
    """Connect, waiting for a Temporal that is not up yet: one line per try, never a traceback.
    None if `stop` is set first."""
    delay = 1.0
    while not stop.is_set():
        try:
            return await connect(settings)
        except RuntimeError as exc:
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            log.warning("Temporal at %s is not reachable (%s); trying again in %.0f s",
                        settings.temporal_address, first_line, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        delay = min(delay * 2, 30.0)
    return None


async def ensure_search_attributes(client: Client, namespace: str = "default") -> None:
    """Register Reclaim's search attributes on a server that lacks them (already there: no-op)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
    from temporalio.service import RPCError, RPCStatusCode

    from workflows import search_attributes as sa

    request = AddSearchAttributesRequest(
        namespace=namespace,
        search_attributes={key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in sa.ALL},
    )
    try:
        await client.operator_service.add_search_attributes(request)
    except RPCError as exc:
        if exc.status != RPCStatusCode.ALREADY_EXISTS:
            raise
