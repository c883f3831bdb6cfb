"""The demo's API takes its port without a race (issue 10: `make demo` passes every time it is run).

Two demos started at once on a shared machine both saw port 8000 free, and the second died
with uvicorn's EADDRINUSE traceback when it bound it seconds later. The demo now binds and
listens before it serves: the port if free, another one if not.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from starter.api.server import listening_socket, serve_asgi
from starter.devserver import free_port, port_open

RECLAIM = str(Path(sys.executable).parent / "reclaim")
#: s; the refusal comes before anything starts (about 2 s here, Python's imports): far above a loaded machine's pace
CLI_TIMEOUT = 120

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


def _connection_holding_a_port() -> tuple[socket.socket, socket.socket, int]:
    """A port nothing listens on but an outgoing connection holds as its local port: how CI's
    `reclaim dev` lost its API port to one of the stack's own connections."""
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    return server, client, client.getsockname()[1]


def test_a_taken_api_port_stops_reclaim_dev_and_reclaim_api_at_once_in_one_line(tmp_path: Path) -> None:
    """Before, `reclaim dev` logged uvicorn's bind error and ran on without its API, deaf to Ctrl-C;
    `reclaim api` printed uvicorn's traceback and exited 3. Now both exit 1 with one sentence, and
    `reclaim dev` starts no Temporal server."""
    server, client, held = _connection_holding_a_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECLAIM_", "TEMPORAL_"))}
    env["RECLAIM_HOME"] = str(tmp_path / ".reclaim")
    temporal_port = free_port()
    try:
        for args in (["dev", "--port", str(temporal_port), "--ui-port", str(free_port()), "--api-port", str(held)],
                     ["api", "--port", str(held)]):
            got = subprocess.run([RECLAIM, *args], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=CLI_TIMEOUT)
            assert got.returncode == 1, got.stdout + got.stderr
            assert f"port {held} on 127.0.0.1 is taken; choose another with" in got.stderr
            assert "Traceback" not in got.stderr and got.stderr.count("\n") <= 2, got.stderr
        assert not (tmp_path / ".reclaim" / "temporal.db").exists()  # no dev server was started
        assert not port_open("127.0.0.1", temporal_port)
    finally:
        client.close()
        server.close()


def test_free_ports_are_never_ones_the_kernel_hands_out_and_never_repeat() -> None:
    """The kernel gives ports of its ephemeral range to outgoing connections: a port picked from it
    and released can be taken so before its server listens (CI's `reclaim dev` failure)."""
    low, _ = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(p < low for p in ports), [p for p in ports if p >= low]
    for port in ports[:20]:  # and each is free to listen on
        socket.create_server(("127.0.0.1", port)).close()
