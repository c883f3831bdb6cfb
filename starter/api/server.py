"""Serving the API with uvicorn inside our own event loop (so `reclaim dev` can run it beside a worker)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
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
    # Bound here, not by uvicorn: a taken port is one sentence and exit 1, not its traceback and exit 3.
    with contextlib.closing(listening_socket(host, port, any_port_if_taken=False, choose="--port")) as sock:
        await serve_asgi(app if app is not None else create_app(None, settings), host, port, stop, sock)


async def serve(settings: Settings, host: str, port: int, services: Services | None = None,
                stop: asyncio.Event | None = None, sock: socket.socket | None = None) -> None:
    await serve_asgi(create_app(services, settings), host, port, stop, sock)


def listening_socket(host: str, port: int, *, any_port_if_taken: bool = True,
                     choose: str = "--api-port or RECLAIM_API_PORT") -> socket.socket:
    """A socket already listening on `port`, or on a free port when another process has `port`
    (`any_port_if_taken=False`: a RuntimeError naming the port and how to `choose` another).

    Bound and listening before it is handed to uvicorn: a check that the port is free, followed by
    uvicorn's own bind, lets two demos started at once both see the port free and the second die
    with a traceback on EADDRINUSE (seen on a shared machine). Inside `reclaim dev`, uvicorn's own
    failed bind only logged: the process went on without its API and ignored Ctrl-C.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            if not any_port_if_taken:
                raise RuntimeError(f"port {port} on {host} is taken; choose another with {choose}") from None
            sock.bind((host, 0))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_asgi(app: Any, host: str, port: int, stop: asyncio.Event | None = None,
                     sock: socket.socket | None = None) -> None:
    """Serve an ASGI app until `stop` is set (None: until uvicorn's own Ctrl-C handling), on `sock`
    when given (already listening), else on `host`:`port`."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = _Server(config) if stop is not None else uvicorn.Server(config)
    sockets = [sock] if sock is not None else None
    if stop is None:
        await server.serve(sockets)
        return
    task = asyncio.create_task(server.serve(sockets))
    await stop.wait()
    server.should_exit = True
    await task
