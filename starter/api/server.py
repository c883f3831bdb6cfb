"""Serving the API with uvicorn inside our own event loop (so `reclaim dev` can run it beside a worker)."""

from __future__ import annotations

import asyncio

import uvicorn

from starter.api.app import create_app
from starter.api.deps import Services
from starter.settings import Settings


async def serve(settings: Settings, host: str, port: int, services: Services | None = None,
                stop: asyncio.Event | None = None) -> None:
    config = uvicorn.Config(create_app(services, settings), host=host, port=port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    if stop is None:
        await server.serve()
        return
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task
