"""Savings checked in the read model, on SQLite and PostgreSQL: the measurements table (migration
0006), the accuracy table joined to the ledger, `reclaim savings`, the API's summary and the plan
report's measured column (read at report time)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from alembic import command
from sqlalchemy import Connection, inspect, update
from typer.testing import CliRunner

from domain.plan import PlanView, RateControl, Strategy, WaveMode, WaveProgress
from domain.plan_report import build_report, render_markdown
from domain.policy import Role
from domain.savings import MeasureMethod, SavingsMeasurement
from runtime.settings import Settings
from starter.api.app import create_app
from starter.api.auth import TokenEntry, TokenStore
from starter.api.deps import Services
from starter.cli import app
from starter.savings_cli import parse_since
from store.db import alembic_config
from store.repository import Store
from store.tables import PlanItemRow
from tests import test_store
from tests.test_store import _run_sync, _schema, completed, recommendation, rolled_back

# The store tests' fixtures: an empty SQLite file and an empty PostgreSQL database per test.
db_url, store = test_store.db_url, test_store.store

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def measurement(n: int, measured: float | None, method: MeasureMethod = MeasureMethod.PRICE_TABLE, *,
                estimated: float = 10.0, customer_id: str = "acme", kind: str = "ec2.stop",
                account_id: str = "123456789012", start: datetime = T0) -> SavingsMeasurement:
    return SavingsMeasurement(
        execution_id=f"exec-rec-{n}", customer_id=customer_id, account_id=account_id, region="us-east-1", kind=kind,
        resource_id=f"i-{n:017x}", estimated_monthly_savings=estimated, verified_monthly_savings=estimated - 1,
        measured_monthly_savings=measured, method=method, evidence=[f"evidence {n}"],
        period_start=start, period_end=start + timedelta(days=30))


async def seed(store: Store) -> None:
    """acme: two stops measured (8 of 10, 10 of 10), a delete rolled back and measured 0, a stop not yet
    measured; globex: one stop measured by Cost Explorer in another account."""
    for v in (completed(1, 9.0, estimated_monthly_savings=10.0), completed(2, 9.0, estimated_monthly_savings=10.0),
              completed(4, 9.0, estimated_monthly_savings=10.0),
              completed(5, 19.0, estimated_monthly_savings=20.0, customer_id="globex", account_id="210987654321")):
        await store.upsert_execution(v)
    deleted = completed(3, 4.0, estimated_monthly_savings=5.0, kind="ebs.delete")
    await store.upsert_execution(deleted)
    await store.upsert_execution(rolled_back(deleted))
    await store.measurements.record(measurement(1, 8.0))
    await store.measurements.record(measurement(2, 7.0, MeasureMethod.COST_EXPLORER))
    await store.measurements.record(measurement(2, 10.0))  # measured again: replaces the first
    await store.measurements.record(measurement(3, 0.0, estimated=5.0, kind="ebs.delete"))
    await store.measurements.record(measurement(5, 15.0, MeasureMethod.COST_EXPLORER, estimated=20.0,
                                                customer_id="globex", account_id="210987654321"))


async def test_0006_adds_the_measurements_table_and_downgrades(db_url: str) -> None:
    await _run_sync(db_url, lambda connection: command.upgrade(alembic_config(connection), "0005"))
    opened = await Store.open(db_url)
    try:
        revision, tables, diffs = await _schema(db_url)
        assert revision is not None and revision >= "0006" and "savings_measurements" in tables and diffs == []
        await opened.measurements.record(measurement(1, 8.0))
    finally:
        await opened.close()

    def tables_after_downgrade(connection: Connection) -> set[str]:
        command.downgrade(alembic_config(connection), "0005")
        return set(inspect(connection).get_table_names())

    assert "savings_measurements" not in await _run_sync(db_url, tables_after_downgrade)


async def test_measurements_round_trip_and_the_accuracy_table(store: Store) -> None:
    await seed(store)
    assert await store.measurements.get("exec-rec-2") == measurement(2, 10.0)
    assert await store.measurements.get("exec-rec-4") is None
    assert [m.execution_id for m in await store.measurements.list(customer_ids=["globex"])] == ["exec-rec-5"]

    acme = await store.measurements.accuracy(customer_ids=["acme"], customer_id="acme")
    lines = {(line.kind, line.account_id): line for line in acme.lines}
    stop = lines[("ec2.stop", "123456789012")]
    assert (stop.executions, stop.measured, stop.estimated_monthly, stop.verified_monthly) == (3, 2, 30.0, 27.0)
    assert (stop.measured_monthly, stop.estimated_measured_monthly, stop.accuracy) == (18.0, 20.0, 0.9)
    assert stop.methods == {"price-table": 2}
    delete = lines[("ebs.delete", "123456789012")]
    assert (delete.reversed, delete.measured_monthly, delete.accuracy) == (1, 0.0, 0.0)
    assert (acme.total.executions, acme.total.measured, acme.total.accuracy) == (4, 3, round(18 / 25, 4))

    everyone = await store.measurements.accuracy()
    assert everyone.total.methods == {"cost-explorer": 1, "price-table": 3}
    assert [(line.kind, line.account_id) for line in everyone.lines] == [
        ("ebs.delete", "123456789012"), ("ec2.stop", "123456789012"), ("ec2.stop", "210987654321")]
    assert (await store.measurements.accuracy(customer_ids=[])).total.executions == 0
    # `since` is on when the change completed; a measurement the ledger does not hold counts too.
    await store.measurements.record(measurement(9, 3.0, estimated=4.0, start=T0 + timedelta(days=400)))
    later = await store.measurements.accuracy(since=T0 + timedelta(days=300))
    assert (later.total.executions, later.total.measured_monthly) == (1, 3.0)


def _invoke(url: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["savings", *args], env={"DATABASE_URL": url, "COLUMNS": "200"})


async def test_reclaim_savings_table_and_json(store: Store, db_url: str) -> None:
    await seed(store)
    shown = await asyncio.to_thread(_invoke, store.url, "--customer", "acme")
    assert shown.exit_code == 0, shown.output
    assert "savings checked for acme" in shown.output
    assert "$18.00 of $20.00" in shown.output and "90%" in shown.output and "price-table 2" in shown.output
    assert "1 rolled back" in shown.output and "72%" in shown.output  # the total: 18 of 25

    as_json = await asyncio.to_thread(_invoke, store.url, "--json", "--since", "2025-01-01")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["total"]["measured"] == 4 and data["since"].startswith("2025-01-01")
    assert {m["execution_id"] for m in data["measurements"]} == {"exec-rec-1", "exec-rec-2", "exec-rec-3",
                                                                 "exec-rec-5"}
    detailed = await asyncio.to_thread(_invoke, store.url, "--customer", "globex", "--details")
    assert "exec-rec-5 ec2.stop" in detailed.output and "- evidence 5" in detailed.output
    bad = await asyncio.to_thread(_invoke, store.url, "--since", "last week")
    assert bad.exit_code == 1 and "--since 'last week'" in bad.output and "Traceback" not in bad.output


def test_since_takes_dates_and_days() -> None:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    assert parse_since("30d", now) == now - timedelta(days=30)
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since(None) is None


async def test_the_api_summary_gains_the_same_figures(store: Store) -> None:
    await seed(store)
    tokens = TokenStore([TokenEntry(subject="v", role=Role.VIEWER, customers=["acme"], token="acme-viewer-0001"),
                         TokenEntry(subject="r", role=Role.ADMIN, customers=["*"], token="root-admin-00002")])
    api = create_app(Services(settings=Settings(), executions=None, store=store, tokens=tokens))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api.test") as http:
        async def summary(token: str, **params: str) -> dict[str, Any]:
            response = await http.get("/api/v1/metrics/summary", params=params,
                                      headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            figures: dict[str, Any] = response.json()["savings_accuracy"]
            return figures

        mine = await summary("acme-viewer-0001")
        assert (mine["total"]["executions"], mine["total"]["accuracy"]) == (4, 0.72)
        assert {line["account_id"] for line in mine["lines"]} == {"123456789012"}  # globex's account unseen
        assert (await summary("acme-viewer-0001", customer_id="globex"))["total"]["executions"] == 0
        everything = await summary("root-admin-00002")
        assert everything["total"]["methods"] == {"cost-explorer": 1, "price-table": 3}
        assert (await summary("root-admin-00002", since="2030-01-01T00:00:00Z"))["total"]["executions"] == 0


async def test_the_plan_report_shows_measured_savings_read_at_report_time(store: Store, db_url: str) -> None:
    recs = [recommendation(1), recommendation(2)]
    view = PlanView(plan_id="plan-1", customer_ids=["acme"], requested_by="alice", strategy=Strategy.SEQUENTIAL,
                    rate=RateControl(), total=2, waves=[WaveProgress(index=0, name="all", mode=WaveMode.ORDERED,
                                                                     size=2)], started_at=T0, updated_at=T0)
    await store.plans.create(view, [recs])
    await _run_sync(db_url, lambda c: c.execute(update(PlanItemRow).where(PlanItemRow.plan_id == "plan-1").values(
        status="COMPLETED", execution_id="exec-" + PlanItemRow.recommendation_id, actual_monthly_savings=9.0)))
    before = build_report(view, await store.plans.items("plan-1"))
    assert before.measured_monthly_savings is None and "measured $/mo" not in render_markdown(before)

    await store.measurements.record(measurement(1, 8.0))  # exec-rec-1, a month later
    report = build_report(view, await store.plans.items("plan-1"))
    assert (report.measured_monthly_savings, report.measured_items) == (8.0, 1)
    assert [(x.measured_monthly_savings, x.measurement_method) for x in report.items] == [
        (8.0, "price-table"), (None, None)]
    markdown = render_markdown(report)
    assert "measured $8.00 (1 of them measured)" in markdown
    assert "| 10.00 | 9.00 | 8.00 (price-table) | exec-rec-1 |" in markdown
