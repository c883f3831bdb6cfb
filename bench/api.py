"""API latency at scale: GET one execution and GET the list through the real app, 100,000 rows in PostgreSQL.

A bench database is created next to DATABASE_URL's (default the local
PostgreSQL), migrated by `Store.open`, filled with COPY into the Store's
`executions` table (realistic COMPLETED / AWAITING_APPROVAL / FAILED views over 20
customers and 4 kinds), served by `reclaim api` (uvicorn) in its own process on a
free port, and queried over HTTP by httpx one request at a time. The database is
dropped afterwards. EXPLAIN ANALYZE of the list's two statements goes into the result.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import statistics
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from bench import procs
from domain.execution import ExecutionView, StepLogEntry
from domain.policy import RiskLevel
from domain.status import ExecutionStatus as S
from starter.devserver import free_port
from store.repository import Store
from store.tables import ExecutionRow

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
KINDS = ("ec2.stop", "ebs.gp2_to_gp3", "s3.lifecycle", "dynamodb.billing_mode")
CUSTOMERS = [f"cust-{i:02d}" for i in range(20)]
#: The filtered page asks for one customer's executions awaiting approval (about 1 in 400 rows).
FILTER = {"customer_id": "cust-07", "status": S.AWAITING_APPROVAL.value}


def _view(i: int, at: datetime) -> ExecutionView:
    roll = i % 20
    status = S.AWAITING_APPROVAL if roll == 0 else S.FAILED if roll == 1 else S.COMPLETED
    kind, customer = KINDS[i % len(KINDS)], CUSTOMERS[zlib.crc32(str(i).encode()) % len(CUSTOMERS)]
    path = [S.PENDING, S.VALIDATING, S.AWAITING_APPROVAL] if status is S.AWAITING_APPROVAL else \
        [S.PENDING, S.VALIDATING, S.BACKING_UP, S.APPLYING, status]
    log = [StepLogEntry(at=at + timedelta(seconds=n), status=s, message=f"{s.value.lower()} step of {kind}")
           for n, s in enumerate(path)]
    done = status is not S.AWAITING_APPROVAL
    return ExecutionView(
        execution_id=f"exec-rec-{i:06d}", recommendation_id=f"rec-{i:06d}", customer_id=customer,
        account_id="123456789012", region="us-east-1", kind=kind, resource_id=f"res-{i:06d}",
        requested_by="alice", status=status, step=log[-1].message, progress_percent=100 if done else 20,
        risk=RiskLevel.LOW, risk_reasons=[f"{kind} has base risk LOW"],
        approval_reasons=["the requester asked for a human approval"] if not done else [],
        estimated_monthly_savings=10.0 + i % 90, actual_monthly_savings=(10.0 + i % 90) if status is S.COMPLETED else None,
        started_at=at, updated_at=log[-1].at, finished_at=log[-1].at if done else None, log=log,
        sequence=len(path),
    )


def _record(view: ExecutionView, columns: list[str]) -> tuple[Any, ...]:
    values: dict[str, Any] = {
        "execution_id": view.execution_id, "recommendation_id": view.recommendation_id,
        "customer_id": view.customer_id, "account_id": view.account_id, "region": view.region,
        "kind": view.kind, "resource_id": view.resource_id, "status": view.status.value,
        "risk": view.risk.value if view.risk else None, "requested_by": view.requested_by,
        "dry_run": view.dry_run, "estimated_monthly_savings": view.estimated_monthly_savings,
        "actual_monthly_savings": view.actual_monthly_savings, "sequence": view.sequence,
        "started_at": view.started_at, "updated_at": view.updated_at, "finished_at": view.finished_at,
        "view": json.dumps(view.model_dump(mode="json")),
    }
    return tuple(values[c] for c in columns)


async def _fill(dsn: str, rows: int) -> float:
    """COPY `rows` executions into the migrated table; seconds taken."""
    columns = [c.name for c in ExecutionRow.__table__.columns]
    start_at = datetime(2025, 1, 1, tzinfo=UTC)
    start = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        batch = 10_000
        for first in range(0, rows, batch):
            records = [_record(_view(i, start_at + timedelta(seconds=30 * i)), columns)
                       for i in range(first, min(rows, first + batch))]
            await conn.copy_records_to_table("executions", records=records, columns=columns)
        await conn.execute("ANALYZE executions")
    finally:
        await conn.close()
    return time.perf_counter() - start


async def _explain(dsn: str) -> dict[str, Any]:
    """What PostgreSQL does for the list's count and page, unfiltered and filtered (ms, top plan node)."""
    where = "WHERE customer_id = $1 AND status = $2"
    page = "SELECT view, started_at, execution_id FROM executions {} ORDER BY started_at DESC, execution_id DESC LIMIT 51"
    statements = {
        "count": ("SELECT count(*) FROM executions", ()),
        "page": (page.format(""), ()),
        "count_filtered": (f"SELECT count(*) FROM executions {where}", (FILTER["customer_id"], FILTER["status"])),
        "page_filtered": (page.format(where), (FILTER["customer_id"], FILTER["status"])),
        "get_one": ("SELECT view FROM executions WHERE execution_id = $1", ("exec-rec-050000",)),
    }
    conn = await asyncpg.connect(dsn)
    out: dict[str, Any] = {}
    try:
        for name, (sql, args) in statements.items():
            plan = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args))[0]
            out[name] = {"ms": round(plan["Execution Time"], 2), "plan": _nodes(plan["Plan"])}
    finally:
        await conn.close()
    return out


async def _vacuum(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE executions")
    finally:
        await conn.close()


def _nodes(node: dict[str, Any]) -> str:
    label = node["Node Type"] + (f" on {node['Index Name']}" if "Index Name" in node else "")
    children = [_nodes(child) for child in node.get("Plans", [])]
    return label + (f" <- {' + '.join(children)}" if children else "")


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def _timed(client: httpx.AsyncClient, paths: list[str], warmup: int = 20) -> dict[str, Any]:
    for path in paths[:warmup]:
        (await client.get(path)).raise_for_status()
    times = []
    for path in paths:
        t0 = time.perf_counter()
        response = await client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
    return {"p50_ms": round(statistics.median(times), 1), "p99_ms": round(_pct(times, 99), 1), "n": len(times),
            "bytes": len(response.content)}


async def run(logdir: Path, temporal_address: str, *, rows: int, requests: int, database_url: str | None) -> dict[str, Any]:
    base = make_url(database_url or DEFAULT_URL)
    name = f"reclaim_bench_{secrets.token_hex(4)}"
    admin_dsn = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    url = base.set(database=name)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        store = await Store.open(url.render_as_string(hide_password=False))  # migrates to head
        await store.close()
        fill_s = await _fill(dsn, rows)
        token = secrets.token_urlsafe(24)
        port = free_port()
        env = {"DATABASE_URL": url.render_as_string(hide_password=False), "TEMPORAL_ADDRESS": temporal_address,
               "RECLAIM_API_TOKENS": json.dumps([{"subject": "bench", "role": "admin", "customers": ["*"],
                                                  "token": token}])}
        args = [str(procs.BIN / "reclaim"), "api", "--port", str(port)]
        rng = random.Random(6)
        ids = [f"exec-rec-{rng.randrange(rows):06d}" for _ in range(requests)]
        filtered = "&".join(f"{k}={v}" for k, v in FILTER.items())
        with procs.running("api", args, logdir, port, env=env):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                         headers={"Authorization": f"Bearer {token}"}) as client:
                # Right after the bulk load the visibility map is empty, so count(*) reads the whole heap;
                # autovacuum fixes that within a minute of such a load: measured both ways.
                cold = await _timed(client, ["/api/v1/executions"] * requests)
                cold_explain = (await _explain(dsn))["count"]
                await _vacuum(dsn)
                figures = {
                    "get_one": await _timed(client, [f"/api/v1/executions/{i}" for i in ids]),
                    "list_first_page": await _timed(client, ["/api/v1/executions"] * requests),
                    "list_filtered": await _timed(client, [f"/api/v1/executions?{filtered}"] * requests),
                    "list_first_page_before_vacuum": cold,
                }
        explain = {**await _explain(dsn), "count_before_vacuum": cold_explain}
    finally:
        await asyncio.sleep(0.2)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return {"rows": rows, "fill_seconds": round(fill_s, 1), "transport": "httpx -> uvicorn (`reclaim api`, own process)",
            "filter": FILTER, **figures, "explain": explain}
