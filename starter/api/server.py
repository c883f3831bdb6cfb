"""Serving the API with uvicorn inside our own event loop (so `reclaim dev` can run it beside a worker)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn

from runtime.settings import Settings
from starter.api.app import create_app
from starter.api.deps import Services


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller owns Ctrl-C (and exits 0 on it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_until_interrupted(settings: Settings, host: str, port: int, app: Any = None) -> None:
    """`reclaim api` (or another `app`): serve until Ctrl-C or SIGTERM, then shut down cleanly (exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await serve_asgi(app if app is not None else create_app(None, settings), host, port, stop)


async def serve(settings: Settings, host: str, port: int, services: Services | None = None,
                stop: asyncio.Event | None = None) -> None:
    await serve_asgi(create_app(services, settings), host, port, stop)


async def serve_asgi(app: Any, host: str, port: int, stop: asyncio.Event | None = None) -> None:
    """Serve an ASGI app until `stop` is set (None: until uvicorn's own Ctrl-C handling)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = _Server(config) if stop is not None else uvicorn.Server(config)
    if stop is None:
        await server.serve()
        return
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task
