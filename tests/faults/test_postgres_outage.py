"""PostgreSQL stopped for 20 s mid-run: executions go on, the read model catches up, nothing is lost.

The worker's store is a fresh database on the real PostgreSQL (TEST_DATABASE_URL,
as in the store tests). PostgreSQL is required: the test fails, never skips,
when it cannot be reached, and it is started again in a `finally` whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url
from temporalio.client import Client

from activities.aws import SessionFactory
from store.repository import Store
from tests.fault_support import CountingMotoServer, Fleet, Planned, describe, drive, wrong_outcomes
from tests.test_store import ADMIN_URL, _admin, _asyncpg_dsn
from worker import build_worker
from workflows.execution import ExecutionWorkflow

OUTAGE_SECONDS = 20
EXECUTIONS = 24


def cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql"))
    assert versions, "no PostgreSQL cluster under /etc/postgresql"
    return [versions[0], "main"]


def pg_ctl(action: str) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster(), action],
                   check=True, capture_output=True, timeout=60)


def pg_ready() -> bool:
    url = make_url(ADMIN_URL)
    return subprocess.run(["pg_isready", "-q", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)],
                          timeout=15).returncode == 0


def ensure_started() -> None:
    """However the test ended: PostgreSQL is running again before anything else happens."""
    for _ in range(3):
        if not pg_ready():
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster(), "start"],
                           capture_output=True, timeout=60)
        for _ in range(60):
            if pg_ready():
                return
            time.sleep(0.5)
    raise AssertionError("PostgreSQL did not come back; start it by hand: pg_ctlcluster ... main start")


@pytest_asyncio.fixture
async def pg_store() -> AsyncIterator[Store]:
    name = f"reclaim_fault_{uuid.uuid4().hex}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    store = await Store.open(_asyncpg_dsn(ADMIN_URL, name))
    try:
        yield store
    finally:
        await store.close()
        ensure_started()
        admin = await _admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()



@pytest.mark.timeout(600)
async def test_postgresql_outage_stalls_nothing_and_loses_nothing(
    client: Client, pg_store: Store, counting_moto: CountingMotoServer, activity_executor: ThreadPoolExecutor,
    tmp_path: Path,
) -> None:
    fleet = Fleet(counting_moto.endpoint)
    planned: list[Planned] = []
    for _ in range(EXECUTIONS // 4):
        planned += [fleet.stop(), fleet.delete(), fleet.rightsize(), fleet.gp3()]
    counting_moto.forget()
    task_queue, run = f"pg-{uuid.uuid4()}", f"pg-{uuid.uuid4().hex[:8]}"
    worker = build_worker(client, task_queue=task_queue, store=pg_store, executor=activity_executor,
                          sessions=SessionFactory(endpoint_url=counting_moto.endpoint), max_concurrent_activities=16)

    async def staggered(n: int, p: Planned) -> str:
        await asyncio.sleep(n * 1.2)  # executions keep arriving before, during and after the outage
        return await drive(client, task_queue, p, run, n)

    async with worker:
        drives = [asyncio.create_task(staggered(n, p)) for n, p in enumerate(planned)]
        try:
            while sum(d.done() for d in drives) < 2:
                await asyncio.sleep(0.1)
            pg_ctl("stop")
            stopped = time.monotonic()
            assert not pg_ready()
            await asyncio.sleep(OUTAGE_SECONDS)
        finally:
            ensure_started()
        restarted = time.monotonic()
        outcomes = await asyncio.wait_for(asyncio.gather(*drives), timeout=420)

    received = counting_moto.calls()
    during = [c for c in received if stopped <= c.at <= restarted]
    mutated_during = [c for c in during if c.mutating]
    print(f"\nPostgreSQL down {restarted - stopped:.1f} s; AWS served {len(during)} calls meanwhile, "
          f"{len(mutated_during)} of them mutations: {describe(mutated_during)}")

    assert not wrong_outcomes(planned, outcomes), wrong_outcomes(planned, outcomes)
    assert mutated_during, "no AWS change happened while PostgreSQL was down: the executions stalled"

    async def caught_up() -> list[str]:
        behind = []
        for p in planned:
            view = await client.get_workflow_handle_for(ExecutionWorkflow.run, p.execution_id).result()
            stored = await pg_store.get_execution(p.execution_id)
            if stored is None or (stored.status, stored.sequence) != (view.status, view.sequence) or [a.id for a in await pg_store.list_approvals(p.execution_id)] != [a.id for a in view.approvals]:
                behind.append(p.execution_id)
        return behind

    deadline = time.monotonic() + 90
    while (behind := await caught_up()) and time.monotonic() < deadline:
        await asyncio.sleep(1)
    assert not behind, f"the read model lost or never caught up with: {behind}"
