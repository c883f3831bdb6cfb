"""Serving the API with uvicorn inside our own event loop (so `reclaim dev` can run it beside a worker)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import uvicorn

from runtime.settings import Settings
from starter.api.app import create_app
from starter.api.deps import Services


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller owns Ctrl-C (and exits 0 on it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_until_interrupted(settings: Settings, host: str, port: int) -> None:
    """`reclaim api`: serve until Ctrl-C or SIGTERM, then shut down cleanly (exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await serve(settings, host, port, stop=stop)


async def serve(settings: Settings, host: str, port: int, services: Services | None = None,
                stop: asyncio.Event | None = None) -> None:
    config = uvicorn.Config(create_app(services, settings), host=host, port=port, log_level="warning",
                            lifespan="on")
    server = _Server(config) if stop is not None else uvicorn.Server(config)
    if stop is None:
        await server.serve()
        return
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task
