"""Clean exits: 50 runs of the CLI, the worker and the demo, each ending with its own exit code.

No run may crash at interpreter shutdown (sdk-python#300: a Temporal bridge torn
down mid-exit aborts with 134 or segfaults with 139), nor print "Fatal Python
error" or "Exception ignored" on its way out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from starter.devserver import free_port

RECLAIM = str(Path(sys.executable).parent / "reclaim")
CRASHES = (134, 139, -signal.SIGABRT, -signal.SIGSEGV)
SHUTDOWN_NOISE = ("Fatal Python error", "Exception ignored", "Traceback")


@dataclass
class Run:
    name: str
    argv: list[str]
    expected: int
    stop_after: float | None = None
    """Long-running: SIGTERM this many seconds after it polls its task queue."""


def runs(tmp_path: Path) -> Iterator[Run]:
    """50 runs, interleaved: 18 help, 14 catalogue, 10 errors, 6 workers stopped by SIGTERM, 2 demos."""
    missing = str(tmp_path / "missing.json")
    for n in range(50):
        if n in (10, 35):
            yield Run("demo", [RECLAIM, "demo", "--exit", "--port", "0", "--ui-port", str(free_port())], 0)
        elif n % 8 == 3:
            yield Run("worker+SIGTERM", [RECLAIM, "worker"], 0, stop_after=0.5 + n % 3)
        elif n % 5 == 1:
            yield (Run("status, Temporal unreachable", [RECLAIM, "status", "exec-nope"], 1) if n % 2
                   else Run("execute, missing file", [RECLAIM, "execute", missing], 1))
        elif n % 2:
            yield Run("actions", [RECLAIM, "actions"] + (["--json"] if n % 4 == 1 else []), 0)
        else:
            yield Run("help", [RECLAIM, "--help"], 0)


async def polling(client: Client, task_queue: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Wait until the worker process polls its task queue: up and running, its signal handlers set."""
    request = DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=task_queue))
    deadline = time.monotonic() + timeout
    while not (await client.workflow_service.describe_task_queue(request)).pollers:
        assert proc.poll() is None, f"the worker ended before polling: {proc.communicate()}"
        assert time.monotonic() < deadline, "the worker never polled its task queue"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(900)
async def test_fifty_runs_exit_with_their_codes_and_never_crash_at_shutdown(
    client: Client, moto_endpoint: str, tmp_path: Path,
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RECLAIM_", "TEMPORAL_", "AWS_ENDPOINT"))}
    base.pop("DATABASE_URL", None)
    unreachable = f"127.0.0.1:{free_port()}"
    seen: Counter[str] = Counter()
    problems: list[str] = []
    started = time.monotonic()
    for n, run in enumerate(runs(tmp_path)):
        home = tmp_path / f"run-{n}"
        home.mkdir()
        env = {**base, "RECLAIM_HOME": str(home / ".reclaim"), "RECLAIM_API_PORT": str(free_port()),
               "TEMPORAL_ADDRESS": unreachable}
        if run.name.startswith("worker"):
            env.update(TEMPORAL_ADDRESS=client.service_client.config.target_host, AWS_ENDPOINT_URL=moto_endpoint,
                       RECLAIM_TASK_QUEUE=f"exits-{n}-{uuid.uuid4().hex[:8]}")
        proc = subprocess.Popen(run.argv, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            if run.stop_after is not None:
                await polling(client, env["RECLAIM_TASK_QUEUE"], proc)
                await asyncio.sleep(run.stop_after)
                assert proc.poll() is None, f"{run.name} ended early: {proc.communicate()}"
                proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.to_thread(proc.communicate, timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        seen[run.name] += 1
        noise = [word for word in SHUTDOWN_NOISE if word in stderr]
        if proc.returncode != run.expected or proc.returncode in CRASHES or noise:
            problems.append(f"run {n} ({run.name}): exit {proc.returncode}, expected {run.expected}; "
                            f"{noise or ''}\n{stderr[-2000:]}")
    print(f"\n{sum(seen.values())} runs in {time.monotonic() - started:.0f} s: {dict(seen)}")

    assert sum(seen.values()) == 50
    assert not problems, "\n".join(problems)
