"""The read model against both real backends: SQLite (local use) and PostgreSQL (deployments).

PostgreSQL is a requirement, not an option: when it cannot be reached these tests
fail, so a green run always means both backends were exercised. Each PostgreSQL
test gets a fresh database (created from TEST_DATABASE_URL, dropped afterwards).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, insert, inspect, select
from sqlalchemy.engine import make_url

from domain.execution import ApprovalRecord, Decision, ExecutionView, StepLogEntry
from domain.policy import RiskLevel, Role
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus
from store import NEW, KindSavings, LastChange, LedgerStatus, SavingsSummary, Store
from store.db import alembic_config, create_engine, head_revision, normalize_url, render_url
from store.repository import _execution_values, decode_cursor
from store.tables import Base, ExecutionRow

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
S = ExecutionStatus


# -- fixtures -----------------------------------------------------------------


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(_asyncpg_dsn(ADMIN_URL), timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    pytest.fail(
        f"PostgreSQL is required by the store tests and {render_url(make_url(ADMIN_URL))} is unreachable "
        f"({error}). Start it, or point TEST_DATABASE_URL at one.",
        pytrace=False,
    )


@pytest_asyncio.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database per test: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reclaim.db'}"
        return
    name = f"reclaim_test_{uuid.uuid4().hex}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _asyncpg_dsn(ADMIN_URL, name)
    finally:
        admin = await _admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(db_url)
    yield opened
    await opened.close()


# -- builders -----------------------------------------------------------------


def approval(execution_id: str, n: int, *, accepted: bool = True, minutes: int = 0) -> ApprovalRecord:
    return ApprovalRecord(
        id=f"{execution_id}-approval-{n}",
        execution_id=execution_id,
        actor=f"user{n}",
        role=Role.APPROVER,
        decision=Decision.APPROVE,
        comment=f"comment {n}",
        at=T0 + timedelta(minutes=minutes or n),
        accepted=accepted,
        refusal=None if accepted else "not allowed",
        via="update",
    )


def view(
    n: int = 1,
    *,
    sequence: int = 1,
    status: ExecutionStatus = S.PENDING,
    customer_id: str = "acme",
    kind: str = "ec2.stop",
    started_at: datetime | None = None,
    approvals: list[ApprovalRecord] | None = None,
    account_id: str = "123456789012",
    region: str = "us-east-1",
    resource_id: str | None = None,
    **extra: Any,
) -> ExecutionView:
    started = started_at or T0 + timedelta(minutes=n)
    return ExecutionView(
        execution_id=f"exec-rec-{n}",
        recommendation_id=f"rec-{n}",
        customer_id=customer_id,
        account_id=account_id,
        region=region,
        kind=kind,
        resource_id=resource_id or f"i-{n:017x}",
        requested_by="alice",
        status=status,
        step=status.value.lower(),
        progress_percent=0,
        started_at=started,
        updated_at=started + timedelta(seconds=sequence),
        sequence=sequence,
        approvals=approvals or [],
        **extra,
    )


def recommendation(n: int, *, customer_id: str = "acme", **extra: Any) -> Recommendation:
    fields: dict[str, Any] = {
        "id": f"rec-{n}",
        "customer_id": customer_id,
        "account_id": "123456789012",
        "region": "us-east-1",
        "kind": "ec2.stop",
        "resource_id": f"i-{n:017x}",
        "params": {"expected_state": "running"},
        "estimated_monthly_savings": 10.0 * n,
    }
    return Recommendation.model_validate(fields | extra)


# -- reachability ---------------------------------------------------------------


async def test_postgresql_is_reachable() -> None:
    """Fails (never skips) without PostgreSQL, naming the URL it tried."""
    admin = await _admin()
    try:
        assert await admin.fetchval("SELECT 1") == 1
    finally:
        await admin.close()


# -- migrations -----------------------------------------------------------------


def _schema_state(connection: Connection) -> tuple[str | None, set[str], list[Any]]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    tables = set(inspect(connection).get_table_names())
    return context.get_current_revision(), tables, compare_metadata(context, Base.metadata)


async def _schema(url: str) -> tuple[str | None, set[str], list[Any]]:
    engine = create_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_schema_state)
    finally:
        await engine.dispose()


async def test_migrations_apply_and_reopen_is_a_noop(store: Store, db_url: str) -> None:
    await store.upsert_execution(view(1, sequence=2))
    revision, tables, _ = await _schema(db_url)
    assert revision == head_revision() == "0007"
    assert {"recommendations", "executions", "approvals", "savings_ledger", "plans", "plan_items",
            "alembic_version"} <= tables

    again = await Store.open(db_url)
    try:
        assert (await _schema(db_url))[0] == revision
        stored = await again.get_execution("exec-rec-1")
        assert stored is not None and stored.sequence == 2
    finally:
        await again.close()


async def test_migrated_schema_matches_the_models(store: Store, db_url: str) -> None:
    """Alembic autogenerate sees no difference: the models and the migrations agree."""
    _, _, diffs = await _schema(db_url)
    assert diffs == []


async def test_concurrent_first_opens_from_several_processes(db_url: str) -> None:
    """Every process races to migrate the same empty database; the lock makes all of them succeed."""
    code = (
        "import asyncio, sys\n"
        "from store import Store\n"
        "async def main():\n"
        "    s = await Store.open(sys.argv[1]); await s.ping(); await s.close()\n"
        "asyncio.run(main())\n"
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, db_url, stderr=subprocess.PIPE, cwd=Path(__file__).parent.parent
        )
        for _ in range(3)
    ]
    results = await asyncio.gather(*(p.communicate() for p in procs))
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
    revision, _, diffs = await _schema(db_url)
    assert revision == head_revision() and diffs == []


async def test_concurrent_opens_in_one_process(db_url: str) -> None:
    stores = await asyncio.gather(*(Store.open(db_url) for _ in range(5)))
    for s in stores:
        await s.ping()
        await s.close()


async def _run_sync(url: str, fn: Any) -> Any:
    """Run `fn(connection)` on a fresh engine in one committed transaction."""
    engine = create_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            result = await conn.run_sync(fn)
            await conn.commit()
            return result
    finally:
        await engine.dispose()


async def test_0002_upgrades_a_database_with_rows_and_downgrades(db_url: str) -> None:
    """A database left at 0001 with data in it moves to head on open; the rows survive both ways."""
    old = view(1, sequence=4, status=S.COMPLETED, estimated_monthly_savings=12.5, finished_at=T0 + timedelta(hours=1))
    at_0001 = {k: v for k, v in _execution_values(old).items() if k != "actual_monthly_savings"}
    del at_0001["view"]["actual_monthly_savings"]  # no view of the 0001 era carried it

    def seed(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(insert(ExecutionRow).values(**at_0001))

    await _run_sync(db_url, seed)
    revision, tables, _ = await _schema(db_url)
    assert revision == "0001" and "savings_ledger" not in tables

    store = await Store.open(db_url)
    try:
        revision, tables, diffs = await _schema(db_url)
        assert (revision, diffs) == (head_revision(), []) and "savings_ledger" in tables and "plans" in tables
        assert await store.get_execution("exec-rec-1") == old
        assert await _actual_column(db_url) == {"exec-rec-1": None}
        assert await store.savings_summary() == SavingsSummary()
        # The old row takes newer writes, and those feed the ledger.
        assert await store.upsert_execution(old.model_copy(update={"sequence": 5, "actual_monthly_savings": 11.0}))
        assert (await store.savings_summary()).actual_monthly == 11.0
    finally:
        await store.close()

    await _run_sync(db_url, lambda connection: command.downgrade(alembic_config(connection), "0001"))
    revision, tables, _ = await _schema(db_url)
    assert revision == "0001" and "savings_ledger" not in tables

    def executions_after_downgrade(connection: Connection) -> tuple[list[str], list[str]]:
        columns = [c["name"] for c in inspect(connection).get_columns("executions")]
        indexes = sorted(i["name"] or "" for i in inspect(connection).get_indexes("executions"))
        ids = list(connection.execute(select(ExecutionRow.execution_id)).scalars())
        assert "actual_monthly_savings" not in columns
        return ids, indexes

    ids, indexes = await _run_sync(db_url, executions_after_downgrade)
    assert ids == ["exec-rec-1"] and "ix_executions_resource_id" in indexes
    again = await Store.open(db_url)
    try:
        assert (await _schema(db_url))[::2] == (head_revision(), [])
        stored = await again.get_execution("exec-rec-1")
        assert stored is not None and stored.sequence == 5
    finally:
        await again.close()


async def _actual_column(url: str) -> dict[str, float | None]:
    """executions.actual_monthly_savings by execution id, read from the column itself."""
    stmt = select(ExecutionRow.execution_id, ExecutionRow.actual_monthly_savings)
    rows = await _run_sync(url, lambda connection: connection.execute(stmt).all())
    return {r.execution_id: r.actual_monthly_savings for r in rows}


# -- executions -----------------------------------------------------------------


async def test_upsert_newest_sequence_wins(store: Store) -> None:
    assert await store.upsert_execution(view(1, sequence=3, status=S.APPLYING)) is True
    assert await store.upsert_execution(view(1, sequence=2, status=S.BACKING_UP)) is False
    assert await store.upsert_execution(view(1, sequence=3, status=S.APPLYING)) is False  # a retry
    stored = await store.get_execution("exec-rec-1")
    assert stored is not None and (stored.sequence, stored.status) == (3, S.APPLYING)

    assert await store.upsert_execution(view(1, sequence=4, status=S.VERIFYING)) is True
    stored = await store.get_execution("exec-rec-1")
    assert stored is not None and (stored.sequence, stored.status) == (4, S.VERIFYING)
    page = await store.list_executions(status=S.VERIFYING)
    assert [v.execution_id for v in page.executions] == ["exec-rec-1"]  # the columns moved too


async def test_a_later_run_of_the_same_id_wins_whatever_its_sequence(store: Store) -> None:
    """A repeated dry run reuses its id: its views must replace the first run's, not lose to them."""
    first = view(1, sequence=2, status=S.REJECTED_BY_VALIDATION, resource_id="i-0000000000000dead")
    assert await store.upsert_execution(first) is True
    again = view(1, sequence=2, status=S.PLANNED, resource_id="i-00000000000000a11",
                 started_at=first.started_at + timedelta(minutes=5))
    assert await store.upsert_execution(again) is True
    assert await store.upsert_execution(first.model_copy(update={"sequence": 3})) is False  # the old run, late
    stored = await store.get_execution("exec-rec-1")
    assert stored is not None and (stored.status, stored.resource_id) == (S.PLANNED, "i-00000000000000a11")


async def test_get_execution_round_trips_the_view(store: Store) -> None:
    original = view(
        1,
        sequence=5,
        status=S.COMPLETED,
        risk=RiskLevel.MEDIUM,
        risk_reasons=["r"],
        dry_run=True,
        estimated_monthly_savings=12.5,
        finished_at=T0 + timedelta(hours=1),
        approvals=[approval("exec-rec-1", 1)],
    )
    await store.upsert_execution(original)
    assert await store.get_execution("exec-rec-1") == original
    assert await store.get_execution("exec-nope") is None


async def test_approvals_in_views_are_stored_once(store: Store) -> None:
    first = view(1, sequence=2, approvals=[approval("exec-rec-1", 1, accepted=False), approval("exec-rec-1", 2)])
    await store.upsert_execution(first)
    await store.upsert_execution(first)
    assert [a.id for a in await store.list_approvals("exec-rec-1")] == ["exec-rec-1-approval-1", "exec-rec-1-approval-2"]

    # A stale view still contributes approvals it carries; a newer one adds its own.
    later = view(1, sequence=3, approvals=[*first.approvals, approval("exec-rec-1", 3)])
    await store.upsert_execution(later)
    await store.upsert_execution(view(1, sequence=1, approvals=[approval("exec-rec-1", 4)]))
    records = await store.list_approvals("exec-rec-1")
    assert [a.id for a in records] == [f"exec-rec-1-approval-{n}" for n in (1, 2, 3, 4)]
    assert records[0] == first.approvals[0]
    assert await store.list_approvals("exec-other") == []


async def test_record_approval_is_idempotent_and_ordered_by_time(store: Store) -> None:
    late = approval("exec-rec-9", 1, minutes=30)
    early = approval("exec-rec-9", 2, accepted=False, minutes=5)
    for record in (late, early, late, early):
        await store.record_approval(record)
    assert await store.list_approvals("exec-rec-9") == [early, late]


async def test_datetimes_come_back_utc_aware(store: Store) -> None:
    """A +02:00 timestamp is the same instant in UTC, and sorts by instant, not by wall clock."""
    plus2 = timezone(timedelta(hours=2))
    await store.upsert_execution(view(1, started_at=datetime(2025, 3, 1, 13, 0, tzinfo=plus2)))  # 11:00Z
    await store.upsert_execution(view(2, started_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC)))
    page = await store.list_executions()
    assert [v.execution_id for v in page.executions] == ["exec-rec-2", "exec-rec-1"]

    record = approval("exec-rec-1", 1).model_copy(update={"at": datetime(2025, 3, 1, 14, 0, tzinfo=plus2)})
    await store.record_approval(record)
    (stored,) = await store.list_approvals("exec-rec-1")
    assert stored.at == record.at and stored.at.tzinfo == UTC


async def test_list_executions_filters(store: Store) -> None:
    await store.upsert_execution(view(1, status=S.COMPLETED, customer_id="acme", kind="ec2.stop"))
    await store.upsert_execution(view(2, status=S.COMPLETED, customer_id="globex", kind="ebs.delete"))
    await store.upsert_execution(view(3, status=S.AWAITING_APPROVAL, customer_id="acme", kind="ebs.delete"))
    await store.upsert_execution(view(4, status=S.FAILED, customer_id="acme", kind="ec2.stop"))

    async def ids(**filters: Any) -> list[str]:
        page = await store.list_executions(**filters)
        assert page.total == len(page.executions) and page.next_cursor is None
        return [v.execution_id for v in page.executions]

    assert await ids() == ["exec-rec-4", "exec-rec-3", "exec-rec-2", "exec-rec-1"]
    assert await ids(customer_id="acme") == ["exec-rec-4", "exec-rec-3", "exec-rec-1"]
    assert await ids(status=S.COMPLETED) == ["exec-rec-2", "exec-rec-1"]
    assert await ids(status="awaiting_approval") == ["exec-rec-3"]
    assert await ids(kind="ebs.delete") == ["exec-rec-3", "exec-rec-2"]
    assert await ids(customer_id="acme", kind="ec2.stop", status="FAILED") == ["exec-rec-4"]
    assert await ids(customer_id="nobody") == []
    with pytest.raises(ValueError):
        await store.list_executions(status="DONE")
    with pytest.raises(ValueError):
        await store.list_executions(limit=0)


async def test_pagination_walks_every_row_once_newest_first(store: Store) -> None:
    # Groups of three share a started_at, so the execution_id tie-break is exercised.
    views = [view(n, started_at=T0 + timedelta(minutes=n // 3), customer_id=("acme" if n % 2 else "globex"))
             for n in range(1, 24)]
    for v in random.Random(7).sample(views, len(views)):
        await store.upsert_execution(v)
    expected = [v.execution_id for v in sorted(views, key=lambda v: (v.started_at, v.execution_id), reverse=True)]

    for filters, want in (({}, expected), ({"customer_id": "acme"}, [e for e in expected if int(e[9:]) % 2])):
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await store.list_executions(limit=5, cursor=cursor, **filters)
            assert page.total == len(want)
            seen += [v.execution_id for v in page.executions]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == want
        assert pages == -(-len(want) // 5)


async def test_exact_last_page_has_no_cursor(store: Store) -> None:
    for n in range(1, 5):
        await store.upsert_execution(view(n))
    page = await store.list_executions(limit=2)
    assert page.next_cursor is not None
    page = await store.list_executions(limit=2, cursor=page.next_cursor)
    assert [v.execution_id for v in page.executions] == ["exec-rec-2", "exec-rec-1"] and page.next_cursor is None


async def test_a_foreign_cursor_is_refused(store: Store) -> None:
    for bad in ("not base64!", "bm9wZQ", "WzFd"):
        with pytest.raises(ValueError):
            await store.list_executions(cursor=bad)
    with pytest.raises(ValueError):
        decode_cursor("")


async def test_concurrent_upserts_end_at_the_max_sequence(store: Store) -> None:
    sequences = list(range(1, 21))
    random.Random(3).shuffle(sequences)
    statuses = list(S)
    views = [
        view(1, sequence=seq, status=statuses[seq % len(statuses)], approvals=[approval("exec-rec-1", seq)])
        for seq in sequences
    ]
    results = await asyncio.gather(*(store.upsert_execution(v) for v in views))
    assert any(results)
    stored = await store.get_execution("exec-rec-1")
    assert stored is not None and stored.sequence == 20 and stored.status == statuses[20 % len(statuses)]
    assert len(await store.list_approvals("exec-rec-1")) == 20
    page = await store.list_executions()
    assert page.total == 1


# -- savings ledger -------------------------------------------------------------


def logged(v: ExecutionView, *statuses: ExecutionStatus) -> ExecutionView:
    """`v` with a log passing through `statuses`, one second apart, ending at its updated_at."""
    start = v.updated_at - timedelta(seconds=len(statuses) - 1)
    log = [StepLogEntry(at=start + timedelta(seconds=i), status=st, message=st.value) for i, st in enumerate(statuses)]
    return v.model_copy(update={"log": log})


def completed(n: int, actual: float | None, *, sequence: int = 7, **extra: Any) -> ExecutionView:
    return logged(
        view(n, sequence=sequence, status=S.COMPLETED, actual_monthly_savings=actual, **extra),
        S.APPLYING, S.VERIFYING, S.COMPLETED,
    )


def rolled_back(done: ExecutionView, *, sequence: int = 9) -> ExecutionView:
    """What the workflow reports after rolling back the completed `done`: the figure and log carry over."""
    at = done.started_at + timedelta(seconds=sequence)
    log = [*done.log, StepLogEntry(at=at, status=S.ROLLING_BACK, message="rollback requested"),
           StepLogEntry(at=at, status=S.ROLLED_BACK, message="restored")]
    return done.model_copy(
        update={"status": S.ROLLED_BACK, "sequence": sequence, "updated_at": at, "finished_at": at, "log": log}
    )


async def test_ledger_records_a_completed_execution_once(store: Store, db_url: str) -> None:
    await store.upsert_execution(view(1, status=S.PLANNED, dry_run=True, estimated_monthly_savings=5.0))
    await store.upsert_execution(view(2, status=S.REJECTED, estimated_monthly_savings=5.0))
    await store.upsert_execution(completed(3, None))  # completed, but no verified figure
    await store.upsert_execution(completed(4, 6.0, dry_run=True))  # a dry run never saves anything
    assert await store.list_savings() == []

    done = completed(5, 8.0, estimated_monthly_savings=10.0)
    assert await store.upsert_execution(done) is True
    assert await store.upsert_execution(done) is False  # a retry
    # A later COMPLETED view (a log line after completion) lands, but the ledger keeps the first figure.
    assert await store.upsert_execution(completed(5, 9.0, sequence=8, estimated_monthly_savings=10.0)) is True
    # Duplicates racing each other on another execution.
    await asyncio.gather(*(store.upsert_execution(completed(6, 4.0)) for _ in range(5)))

    entries = await store.list_savings()
    assert [e.execution_id for e in entries] == ["exec-rec-6", "exec-rec-5"]  # newest first
    entry = entries[1]
    assert (entry.status, entry.estimated_monthly_savings, entry.actual_monthly_savings) == (
        LedgerStatus.ACTIVE, 10.0, 8.0,
    )
    assert (entry.customer_id, entry.kind, entry.resource_id) == ("acme", "ec2.stop", done.resource_id)
    assert entry.recorded_at == done.updated_at and entry.recorded_at.tzinfo == UTC
    assert entry.reversed_at is None
    assert await _actual_column(db_url) == {
        "exec-rec-1": None, "exec-rec-2": None, "exec-rec-3": None, "exec-rec-4": 6.0,
        "exec-rec-5": 9.0, "exec-rec-6": 4.0,
    }
    stored = await store.get_execution("exec-rec-5")
    assert stored is not None and stored.actual_monthly_savings == 9.0


async def test_rollback_after_completion_reverses_the_entry(store: Store) -> None:
    done = completed(1, 8.0, estimated_monthly_savings=10.0)
    await store.upsert_execution(done)
    rolling = done.model_copy(update={"status": S.ROLLING_BACK, "sequence": 8, "updated_at": done.updated_at})
    await store.upsert_execution(rolling)
    (entry,) = await store.list_savings()
    assert entry.status == LedgerStatus.ACTIVE  # still saving until the rollback finished

    undone = rolled_back(done, sequence=9)
    assert await store.upsert_execution(undone) is True
    (entry,) = await store.list_savings()
    assert (entry.status, entry.recorded_at, entry.reversed_at) == (
        LedgerStatus.REVERSED, done.updated_at, undone.updated_at,
    )
    assert await store.savings_summary() == SavingsSummary(reversed=1, reversed_actual_monthly=8.0)

    # Retries, a later log line and the late COMPLETED change nothing.
    await store.upsert_execution(undone)
    later = undone.model_copy(update={"sequence": 10, "updated_at": undone.updated_at + timedelta(hours=1)})
    assert await store.upsert_execution(later) is True
    assert await store.upsert_execution(done) is False
    assert await store.list_savings() == [entry]

    # A change rolled back before it ever completed (verification failed) saved nothing.
    failed = logged(view(2, sequence=6, status=S.ROLLED_BACK), S.APPLYING, S.VERIFYING, S.ROLLING_BACK, S.ROLLED_BACK)
    await store.upsert_execution(failed)
    assert [e.execution_id for e in await store.list_savings()] == ["exec-rec-1"]


async def test_rollback_written_before_the_completion_still_ends_reversed(store: Store) -> None:
    """Views are recorded without waiting, so ROLLED_BACK (seq 9) can land before COMPLETED (seq 7).

    The late COMPLETED can never land (older sequence). The ROLLED_BACK view's log
    shows the execution completed, so its entry is created REVERSED right away, dated
    as the COMPLETED write would have dated it; nothing is counted as ACTIVE.
    """
    done = completed(1, 8.0, estimated_monthly_savings=10.0)
    assert await store.upsert_execution(rolled_back(done, sequence=9)) is True
    assert await store.upsert_execution(done) is False
    (entry,) = await store.list_savings()
    assert (entry.status, entry.actual_monthly_savings) == (LedgerStatus.REVERSED, 8.0)
    assert (entry.recorded_at, entry.reversed_at) == (done.updated_at, done.started_at + timedelta(seconds=9))
    assert await store.savings_summary() == SavingsSummary(reversed=1, reversed_actual_monthly=8.0)

    # Without evidence of completion in the log, nothing is invented: no entry at all.
    other = completed(2, 5.0)
    bare = rolled_back(other, sequence=9).model_copy(update={"log": []})
    assert await store.upsert_execution(bare) is True
    assert await store.upsert_execution(other) is False
    assert [e.execution_id for e in await store.list_savings()] == ["exec-rec-1"]
    assert (await store.savings_summary()).executions == 0


async def test_savings_summary_per_customer_and_by_kind(store: Store) -> None:
    ebs = "ebs.delete"
    for v in (
        completed(1, 8.0, estimated_monthly_savings=10.0),
        completed(2, 18.5, estimated_monthly_savings=20.0),
        completed(3, 5.0, estimated_monthly_savings=5.0, kind=ebs),
        completed(4, 6.0, estimated_monthly_savings=7.0, kind=ebs),
        completed(5, 90.0, estimated_monthly_savings=100.0, customer_id="globex"),
    ):
        await store.upsert_execution(v)
    await store.upsert_execution(rolled_back(completed(4, 6.0, estimated_monthly_savings=7.0, kind=ebs)))

    assert await store.savings_summary(customer_id="acme") == SavingsSummary(
        customer_id="acme", executions=3, estimated_monthly=35.0, actual_monthly=31.5,
        reversed=1, reversed_actual_monthly=6.0,
        by_kind={
            "ec2.stop": KindSavings(estimated_monthly=30.0, actual_monthly=26.5, executions=2),
            ebs: KindSavings(estimated_monthly=5.0, actual_monthly=5.0, executions=1),
        },
    )
    assert await store.savings_summary() == SavingsSummary(
        executions=4, estimated_monthly=135.0, actual_monthly=121.5, reversed=1, reversed_actual_monthly=6.0,
        by_kind={
            "ec2.stop": KindSavings(estimated_monthly=130.0, actual_monthly=116.5, executions=3),
            ebs: KindSavings(estimated_monthly=5.0, actual_monthly=5.0, executions=1),
        },
    )
    assert await store.savings_summary(customer_id="nobody") == SavingsSummary(customer_id="nobody")

    assert [e.execution_id for e in await store.list_savings(customer_id="globex")] == ["exec-rec-5"]
    assert [e.execution_id for e in await store.list_savings(customer_id="acme", limit=2)] == [
        "exec-rec-4", "exec-rec-3",
    ]
    assert len(await store.list_savings()) == 5  # reversed entries are listed too
    with pytest.raises(ValueError):
        await store.list_savings(limit=0)


# -- cooldown -------------------------------------------------------------------


async def test_last_change_is_the_newest_mutation_of_the_resource(store: Store) -> None:
    shared = "i-0000000000000abc"
    assert await store.last_change("123456789012", "us-east-1", shared) is None

    await store.upsert_execution(view(1, sequence=7, status=S.COMPLETED, resource_id=shared))
    await store.upsert_execution(view(2, sequence=9, status=S.ROLLED_BACK, resource_id=shared))
    # Newer, but none of these touched the resource.
    await store.upsert_execution(view(3, status=S.PLANNED, dry_run=True, resource_id=shared))
    await store.upsert_execution(view(4, status=S.REJECTED, resource_id=shared))
    await store.upsert_execution(view(5, status=S.AWAITING_APPROVAL, resource_id=shared))
    # The same resource id elsewhere is another resource.
    await store.upsert_execution(view(6, status=S.COMPLETED, resource_id=shared, account_id="210987654321"))
    await store.upsert_execution(view(7, status=S.COMPLETED, resource_id=shared, region="eu-west-1"))

    found = await store.last_change("123456789012", "us-east-1", shared)
    assert found == LastChange(
        execution_id="exec-rec-2", status=S.ROLLED_BACK, at=T0 + timedelta(minutes=2, seconds=9)
    )
    assert found is not None and found.at.tzinfo == UTC
    found = await store.last_change("123456789012", "us-east-1", shared, exclude_execution_id="exec-rec-2")
    assert found is not None and (found.execution_id, found.status) == ("exec-rec-1", S.COMPLETED)
    found = await store.last_change("210987654321", "us-east-1", shared, exclude_execution_id="exec-rec-2")
    assert found is not None and found.execution_id == "exec-rec-6"
    assert await store.last_change("210987654321", "us-east-1", shared, exclude_execution_id="exec-rec-6") is None
    assert await store.last_change("123456789012", "us-east-1", "i-untouched") is None

    # A failed rollback left the resource changed too.
    await store.upsert_execution(view(8, sequence=3, status=S.ROLLBACK_FAILED, resource_id=shared))
    found = await store.last_change("123456789012", "us-east-1", shared)
    assert found is not None and (found.execution_id, found.status) == ("exec-rec-8", S.ROLLBACK_FAILED)


# -- recommendations ------------------------------------------------------------


async def test_recommendations_save_get_list(store: Store) -> None:
    recs = [recommendation(1), recommendation(2, customer_id="globex"), recommendation(3)]
    assert await store.save_recommendations(recs) == 3
    assert await store.save_recommendations([]) == 0
    assert await store.get_recommendation("rec-2") == recs[1]
    assert await store.get_recommendation("rec-nope") is None

    listed = await store.list_recommendations()
    assert {s.recommendation.id for s in listed} == {"rec-1", "rec-2", "rec-3"}
    assert {s.status for s in listed} == {NEW} and all(s.execution_id is None for s in listed)
    assert [s.recommendation.id for s in await store.list_recommendations(customer_id="globex")] == ["rec-2"]
    assert len(await store.list_recommendations(limit=2)) == 2

    # Saving again replaces the payload; a repeated id in one batch counts once, the last wins.
    changed = recommendation(1, estimated_monthly_savings=99.0)
    assert await store.save_recommendations([recommendation(1), changed]) == 1
    assert await store.get_recommendation("rec-1") == changed
    assert len(await store.list_recommendations()) == 3


async def test_recommendation_status_follows_its_execution(store: Store) -> None:
    await store.save_recommendations([recommendation(1), recommendation(2)])
    await store.upsert_execution(view(1, sequence=1, status=S.AWAITING_APPROVAL))

    by_id = {s.recommendation.id: s for s in await store.list_recommendations()}
    assert (by_id["rec-1"].status, by_id["rec-1"].execution_id) == ("AWAITING_APPROVAL", "exec-rec-1")
    assert (by_id["rec-2"].status, by_id["rec-2"].execution_id) == (NEW, None)

    await store.upsert_execution(view(1, sequence=2, status=S.COMPLETED))
    assert [s.recommendation.id for s in await store.list_recommendations(status="COMPLETED")] == ["rec-1"]
    assert [s.recommendation.id for s in await store.list_recommendations(status="new")] == ["rec-2"]
    assert await store.list_recommendations(status=S.AWAITING_APPROVAL) == []
    (completed,) = await store.list_recommendations(status="COMPLETED")
    assert completed.updated_at.tzinfo == UTC and completed.updated_at >= T0


async def test_recommendation_created_at_is_kept_unless_given(store: Store) -> None:
    given = datetime(2024, 12, 31, tzinfo=UTC)
    await store.save_recommendations([recommendation(1, created_at=given), recommendation(2)])
    await store.save_recommendations([recommendation(3)])
    await store.save_recommendations([recommendation(2, source="cost-explorer")])
    listed = await store.list_recommendations()
    assert [s.recommendation.id for s in listed] == ["rec-3", "rec-2", "rec-1"]  # by first save, newest first
    stored = await store.get_recommendation("rec-2")
    assert stored is not None and stored.source == "cost-explorer"


# -- urls -------------------------------------------------------------------------


def test_urls_are_translated_to_async_drivers() -> None:
    assert normalize_url("postgres://u:p@h:5432/d").drivername == "postgresql+asyncpg"
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+asyncpg"
    assert normalize_url("postgresql+asyncpg://u@h/d").drivername == "postgresql+asyncpg"
    pg = normalize_url("postgresql://u@h/d?sslmode=require")
    assert dict(pg.query) == {"ssl": "require"}
    lite = normalize_url("sqlite:///x.db")
    assert (lite.drivername, lite.database) == ("sqlite+aiosqlite", "x.db")
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql://u@h/d")


async def test_url_rendering_hides_the_password() -> None:
    s = await Store.open("postgresql://reclaim:s3cret@db.example:5432/reclaim", migrate=False)
    try:
        assert "s3cret" not in s.url and "s3cret" not in repr(s)
        assert s.url.startswith("postgresql+asyncpg://reclaim:***@db.example:5432/reclaim")
    finally:
        await s.close()


async def test_ping_raises_when_the_database_is_down() -> None:
    s = await Store.open("postgresql://postgres@127.0.0.1:1/nothing", migrate=False)
    try:
        with pytest.raises(OSError):
            await s.ping()
    finally:
        await s.close()


async def test_default_url_is_a_local_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = await Store.open()
    try:
        await s.ping()
        assert s.url == "sqlite+aiosqlite:///.reclaim/reclaim.db"
        assert (tmp_path / ".reclaim" / "reclaim.db").is_file()
    finally:
        await s.close()
