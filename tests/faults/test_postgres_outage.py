"""PostgreSQL stopped for 20 s mid-run: executions go on, the read model catches up, nothing is lost.

The read model is written by activities the workflow does not wait for, so no
change waits for the database. One read does: the cooldown check asks the store
when Reclaim last changed the resource (it outlives Temporal's retention, so
Temporal cannot answer it), and a safety check must not pass blind; executions
submitted during the outage wait there, with their validation done, until the
database is back.

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
from domain.execution import ApprovalInput
from domain.policy import Role
from domain.status import ExecutionStatus as S
from starter.executions import Executions
from store.repository import Store
from tests.fault_support import (
    CountingMotoServer,
    Fleet,
    Planned,
    describe,
    drive,
    request_for,
    wrong_outcomes,
)
from tests.test_store import ADMIN_URL, _admin, _asyncpg_dsn
from worker import build_worker
from workflows.execution import ExecutionWorkflow

OUTAGE_SECONDS = 20
HELD = 6
"""Executions awaiting approval when PostgreSQL stops, approved while it is down."""
ARRIVING = 8
"""Executions submitted while it is down."""


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
    """Executions waiting for a person when PostgreSQL stops are approved during the outage: every one
    of them backs up, applies and verifies while it is down. Executions submitted during the outage
    wait at the cooldown check (the store remembers past changes; see below) and complete once it is
    back. Afterwards the read model holds exactly what Temporal holds, approvals included."""
    fleet = Fleet(counting_moto.endpoint)
    held = [fleet.delete() if n % 2 else fleet.rightsize() for n in range(HELD)]
    arriving: list[Planned] = []
    for _ in range(ARRIVING // 2):
        arriving += [fleet.stop(), fleet.gp3()]
    counting_moto.forget()
    task_queue, run = f"pg-{uuid.uuid4()}", f"pg-{uuid.uuid4().hex[:8]}"
    worker = build_worker(client, task_queue=task_queue, store=pg_store, executor=activity_executor,
                          sessions=SessionFactory(endpoint_url=counting_moto.endpoint), max_concurrent_activities=16)
    executions = Executions(client, task_queue)

    async with worker:
        for n, p in enumerate(held):
            p.execution_id = (await executions.start(request_for(p, run, n))).execution_id
        for p in held:
            await executions.wait(p.execution_id, until=frozenset({S.AWAITING_APPROVAL}), timeout=120)
        pg_ctl("stop")
        stopped = time.monotonic()
        try:
            assert not pg_ready()
            approver = ApprovalInput(actor="bob", role=Role.APPROVER, comment="during the outage")
            for p in held:
                await executions.handle(p.execution_id).signal(ExecutionWorkflow.approve_signal, approver)
            late = [asyncio.create_task(drive(client, task_queue, p, run, HELD + n))
                    for n, p in enumerate(arriving)]
            # COMPLETED by its status query: the workflow itself closes only once its read-model
            # writes have landed, after the outage.
            held_done = await asyncio.gather(*(executions.wait(
                p.execution_id, until=frozenset({S.COMPLETED, S.FAILED, S.ROLLED_BACK}), timeout=OUTAGE_SECONDS * 3)
                for p in held))
            remaining = OUTAGE_SECONDS - (time.monotonic() - stopped)
            if remaining > 0:
                await asyncio.sleep(remaining)
        finally:
            ensure_started()
        restarted = time.monotonic()
        late_outcomes = await asyncio.wait_for(asyncio.gather(*late), timeout=420)
        # The held executions close once their read-model writes have landed.
        closed = await asyncio.wait_for(asyncio.gather(
            *(executions.handle(p.execution_id).result() for p in held)), timeout=180)

    received = counting_moto.calls()
    during = [c for c in received if stopped <= c.at <= restarted]
    print(f"\nPostgreSQL down {restarted - stopped:.1f} s; AWS served {len(during)} calls meanwhile, "
          f"{sum(c.mutating for c in during)} of them mutations: {describe(c for c in during if c.mutating)}")

    assert [v.status.value for v in held_done] == ["COMPLETED"] * HELD
    for p in held:  # the whole change happened while the database was down
        changed = [c for c in received if c.mutating and c.mentions(p.resource_id)]
        assert sorted(c.operation for c in changed) == sorted(p.mutations), p
        assert all(stopped <= c.at <= restarted for c in changed), (p.kind, p.resource_id)
    assert not wrong_outcomes(arriving, late_outcomes), wrong_outcomes(arriving, late_outcomes)

    assert [v.status.value for v in closed] == ["COMPLETED"] * HELD

    async def behind() -> list[str]:
        lagging = []
        for p in held + arriving:
            view = await executions.handle(p.execution_id).result()  # closed: the worker has stopped
            stored = await pg_store.get_execution(p.execution_id)
            approvals = [a.id for a in await pg_store.list_approvals(p.execution_id)]
            if stored is None or (stored.status, stored.sequence) != (view.status, view.sequence) \
                    or approvals != [a.id for a in view.approvals]:
                lagging.append(p.execution_id)
        return lagging

    deadline = time.monotonic() + 90
    while (lagging := await behind()) and time.monotonic() < deadline:
        await asyncio.sleep(1)
    assert not lagging, f"the read model lost or never caught up with: {lagging}"
