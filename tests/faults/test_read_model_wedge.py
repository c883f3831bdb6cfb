"""The read model's database held locked mid-run: AWS work goes on, and the read model catches up.

What a 1,525-item plan showed on the embedded stack: read-model writes waited on
SQLite's one write lock, activities were cancelled mid-write (leaving the lock
taken), and, sharing the activity slots with backups and mutations, the waiting
writes starved the AWS work. Here another process holds SQLite's write lock for
LOCK_SECONDS while a fleet of auto-approved stops runs on a worker with few
slots: every local write times out, every fallback write waits for the lock.
AWS work must finish while the lock is still held, and once it is let go the
read model must reach every final status.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio.client import Client

from activities.aws import SessionFactory
from domain.status import ExecutionStatus as S
from starter.executions import Executions
from store.repository import Store
from tests.fault_support import CountingMotoServer, Fleet, request_for
from worker import build_worker

FLEET = 120
SLOTS = 8
"""Activity slots of the worker: few, so that any slot held by a waiting write is felt."""
LOCK_SECONDS = 90.0
"""Longer than the fleet needs for its AWS work with the database free (measured ~20 s on a loaded
2-core machine), so the AWS work can only finish inside the window if no write holds it up."""


class HeldLock:
    """Another process's write transaction on the SQLite file, as a stuck writer would hold it."""

    def __init__(self, path: Path) -> None:
        self._path, self._release, self._held = path, threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        self._held.set()
        self._release.wait()
        conn.execute("ROLLBACK")
        conn.close()

    def __enter__(self) -> HeldLock:
        self._thread.start()
        assert self._held.wait(30), "could not take the database's write lock"
        return self

    def __exit__(self, *_: object) -> None:
        self._release.set()
        self._thread.join(30)


async def test_a_locked_read_model_never_holds_up_aws_work(
    client: Client, counting_moto: CountingMotoServer, tmp_path: Path
) -> None:
    path = tmp_path / "reclaim.db"
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    fleet = Fleet(counting_moto.endpoint)
    planned = [fleet.stop() for _ in range(FLEET)]
    ids = [p.resource_id for p in planned]
    run = uuid.uuid4().hex[:8]
    task_queue = f"tq-wedge-{run}"
    executions = Executions(client, task_queue)

    def stopped() -> int:
        pages = fleet.ec2.get_paginator("describe_instances").paginate(InstanceIds=ids)
        return sum(1 for page in pages for r in page["Reservations"] for i in r["Instances"]
                   if i["State"]["Name"] == "stopped")

    with ThreadPoolExecutor(max_workers=SLOTS) as executor:
        worker = build_worker(client, task_queue=task_queue, store=store, executor=executor,
                              sessions=SessionFactory(endpoint_url=counting_moto.endpoint),
                              max_concurrent_activities=SLOTS)
        try:
            async with worker:
                with HeldLock(path):
                    locked_at = time.monotonic()
                    started = [await executions.start(request_for(p, run, n)) for n, p in enumerate(planned)]
                    deadline = locked_at + LOCK_SECONDS - 5
                    while (done := await asyncio.to_thread(stopped)) < FLEET:
                        assert time.monotonic() < deadline, (
                            f"AWS work held up by the locked read model: {done}/{FLEET} stopped")
                        await asyncio.sleep(0.5)
                    aws_done = time.monotonic() - locked_at
                    for s in started:
                        await executions.wait(s.execution_id, until=frozenset({S.COMPLETED}),
                                              timeout=max(1.0, deadline - time.monotonic()))
                    assert time.monotonic() - locked_at < LOCK_SECONDS  # all of it inside the window
                # The lock is let go: every final status reaches the read model (no write left wedged).
                deadline = time.monotonic() + 180
                while True:
                    rows = [await store.get_execution(s.execution_id) for s in started]
                    completed = sum(1 for r in rows if r is not None and r.status is S.COMPLETED)
                    if completed == FLEET:
                        break
                    assert time.monotonic() < deadline, f"read model stuck at {completed}/{FLEET} COMPLETED"
                    await asyncio.sleep(1)
        finally:
            await store.close()
    print(f"AWS work of {FLEET} executions done {aws_done:.1f} s into a {LOCK_SECONDS:.0f} s database lock")
