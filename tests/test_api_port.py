"""The demo's API takes its port without a race (issue 10: `make demo` passes every time it is run).

Two demos started at once on a shared machine both saw port 8000 free, and the second died
with uvicorn's EADDRINUSE traceback when it bound it seconds later. The demo now binds and
listens before it serves: the port if free, another one if not.
"""

from __future__ import annotations

import asyncio
import socket

import httpx

from starter.api.server import listening_socket, serve_asgi

SERVE_TIMEOUT = 30.0  # s; uvicorn starts in well under a second: bounded far above a loaded machine's pace


async def hello(scope: dict[str, object], receive: object, send: object) -> None:
    if scope["type"] != "http":
        return
    assert callable(send)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def test_a_free_port_is_taken_and_a_taken_one_gives_way_to_a_free_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:  # another process's listening API
        taken = other.getsockname()[1]
        sock = listening_socket("127.0.0.1", taken)
        try:
            assert sock.getsockname()[1] != taken
        finally:
            sock.close()
    freed = listening_socket("127.0.0.1", taken)  # the port is free again: it is the one used
    try:
        assert freed.getsockname()[1] == taken
        with socket.socket() as late:  # and it is ours from now on, before anything serves on it
            assert late.connect_ex(("127.0.0.1", taken)) == 0
    finally:
        freed.close()


async def test_the_api_serves_on_the_socket_it_was_given() -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:
        sock = listening_socket("127.0.0.1", other.getsockname()[1])
        port = sock.getsockname()[1]
        stop = asyncio.Event()
        serving = asyncio.create_task(serve_asgi(hello, "127.0.0.1", other.getsockname()[1], stop, sock))
        try:
            async with httpx.AsyncClient() as http, asyncio.timeout(SERVE_TIMEOUT):
                while True:
                    try:
                        response = await http.get(f"http://127.0.0.1:{port}/")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.05)
            assert (response.status_code, response.text) == (200, "hello")
        finally:
            stop.set()
            await serving
            sock.close()
