"""The processes a benchmark runs (moto server, worker, API) and what /proc says about them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from starter.devserver import free_port, port_open

BIN = Path(sys.executable).parent
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of stat(5)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def _wait(proc: Proc, ready: str | int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if isinstance(ready, int) and port_open("127.0.0.1", ready):
            return
        if isinstance(ready, str) and proc.log.exists() and ready in proc.log.read_text(errors="replace"):
            return
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}; see {proc.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} not ready within {timeout:.0f} s; see {proc.log}")
        time.sleep(0.1)


@contextlib.contextmanager
def running(name: str, args: list[str], logdir: Path, ready: str | int, env: dict[str, str] | None = None,
            ) -> Iterator[Proc]:
    """A child process until the block ends; `ready` is a port to open or a line to see in its log."""
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
    proc = Proc(name, process, log)
    try:
        _wait(proc, ready)
        yield proc
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def moto_server(logdir: Path) -> Iterator[tuple[str, int]]:
    """moto as its own process (its own GIL), on a free port; yields the endpoint URL and the pid."""
    port = free_port()
    with running("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], logdir, port) as proc:
        yield f"http://127.0.0.1:{port}", proc.pid


WORKER_READY = "worker polling task queue"


@contextlib.contextmanager
def worker(logdir: Path, env: dict[str, str], *, moto_port: int | None = None, name: str = "worker",
           ) -> Iterator[Proc]:
    """`python -m bench.worker`: the project's worker (worker.run_worker) in its own process.

    With `moto_port`, that process also serves moto on a thread (the in-process comparison).
    """
    args = [sys.executable, "-m", "bench.worker", *([f"--moto-port={moto_port}"] if moto_port else [])]
    # moto never throttles: the engine is measured, not the worker's AWS budget (unless the caller sets one).
    env = {"RECLAIM_AWS_BUDGET_SHARE": "0", **env}
    with running(name, args, logdir, WORKER_READY, env=env) as proc:
        yield proc
