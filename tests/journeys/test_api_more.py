"""The REST API beyond executions: recommendation import, metrics, event streams, and the CLI over HTTP.

Every test runs against the real `stack` (Temporal dev server, worker, SQLite read model,
moto). Event streams and the CLI need a real socket, so those tests serve the app with
uvicorn on a free port inside the test's own event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from domain.execution import ApprovalInput, ExecutionView, RollbackInput
from domain.policy import Role
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus as S
from runtime.settings import Settings
from starter.api.app import create_app
from starter.api.auth import TokenEntry, TokenStore
from starter.api.deps import Services
from starter.api_client import ApiExecutions
from starter.devserver import free_port
from starter.executions import NotFound, ReclaimError, Refused
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation, request

RECLAIM = Path(sys.executable).parent / "reclaim"


@dataclass
class Api:
    app: FastAPI
    http: httpx.AsyncClient
    customer: str
    other: str
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest_asyncio.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    customer, other = f"api-{uuid.uuid4().hex[:8]}", f"api-{uuid.uuid4().hex[:8]}"
    people = {  # name: (subject, role, customers)
        "viewer": ("vera", Role.VIEWER, [customer]),
        "operator": ("alice", Role.OPERATOR, [customer]),
        "approver": ("bob", Role.APPROVER, [customer]),
        "other": ("otto", Role.APPROVER, [other]),
    }
    tokens = {name: secrets.token_hex(16) for name in people}
    entries = [TokenEntry(token=tokens[name], subject=subject, role=role, customers=customers)
               for name, (subject, role, customers) in people.items()]
    app = create_app(Services(settings=Settings(), executions=stack.executions, store=stack.store,
                              tokens=TokenStore(entries)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as http:
        yield Api(app, http, customer, other, tokens)


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app on a real socket, in this event loop (the worker keeps running beside it)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        assert not task.done(), "uvicorn stopped before it started"
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def rec_json(api: Api, aws: AwsAccount | None = None, customer: str | None = None, **over: Any) -> dict[str, Any]:
    resource = aws.instance() if aws is not None else f"i-{uuid.uuid4().hex[:17]}"
    rec = recommendation("ec2.stop", resource, {"expected_instance_type": "m5.large"},
                         customer_id=customer or api.customer)
    return rec.model_dump(mode="json", exclude_none=True) | over


async def stored_status(stack: Stack, execution_id: str, want: S, timeout: float = 15.0) -> ExecutionView:
    """The read model is written by activities: give it a moment to catch up."""
    deadline = time.monotonic() + timeout
    while True:
        stored = await stack.store.get_execution(execution_id)
        if stored is not None and stored.status is want:
            return stored
        assert time.monotonic() < deadline, f"read model has {stored and stored.status}, want {want}"
        await asyncio.sleep(0.1)


async def awaiting(stack: Stack, aws: AwsAccount, customer: str) -> str:
    """An ec2.stop execution by alice, parked in AWAITING_APPROVAL."""
    rec = recommendation("ec2.stop", aws.instance(), customer_id=customer)
    started = await stack.executions.start(request(rec, auto_approve=False))
    view = await stack.executions.wait(started.execution_id)
    assert view.status is S.AWAITING_APPROVAL
    return started.execution_id


# ---- importing recommendations -----------------------------------------------------------------------


async def test_json_import_reports_broken_items_and_imports_the_valid_ones(api: Api, stack: Stack) -> None:
    good = [rec_json(api), rec_json(api)]
    unknown_kind = rec_json(api, kind="ec2.levitate")
    bad_account = rec_json(api, account_id="12")
    bad_params = rec_json(api, params={"nonsense": 1})
    body = [good[0], unknown_kind, bad_account, good[1], bad_params, "not an object"]

    response = await api.http.post("/api/v1/recommendations", json=body, headers=api.auth("operator"))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["imported"] == 2
    by_index = {e["index"]: e for e in result["errors"]}
    assert set(by_index) == {1, 2, 4, 5}, result
    assert all("row" not in e for e in result["errors"])
    assert by_index[1]["field"] == "kind" and "unknown action kind" in by_index[1]["message"]
    assert by_index[2]["field"] == "account_id"
    assert by_index[4]["field"] == "params" and "nonsense" in by_index[4]["message"]
    assert by_index[5]["field"] == "<root>"
    for item in good:
        assert await stack.store.get_recommendation(item["id"]) == Recommendation.model_validate(item)
    for item in (unknown_kind, bad_account, bad_params):
        assert await stack.store.get_recommendation(item["id"]) is None


def csv_text(rows: Iterable[dict[str, Any]]) -> str:
    columns = ["id", "customer_id", "account_id", "region", "kind", "resource_id",
               "estimated_monthly_savings", "params", "tags", "source"]
    lines = [",".join(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            text = value if isinstance(value, str) else json.dumps(value)
            cells.append('"' + text.replace('"', '""') + '"')
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("transport", ["multipart", "text/csv"])
async def test_csv_import_reports_broken_rows(api: Api, stack: Stack, transport: str) -> None:
    good = [rec_json(api, tags={"team": "web"}, source="sheet"), rec_json(api)]
    bad_savings = rec_json(api, estimated_monthly_savings="lots")
    bad_json = rec_json(api, params="{not json")
    text = csv_text([good[0], bad_savings, bad_json, good[1]])
    headers = api.auth("operator")
    if transport == "multipart":
        response = await api.http.post("/api/v1/recommendations", headers=headers,
                                       files={"file": ("recs.csv", text.encode(), "text/csv")})
    else:
        response = await api.http.post("/api/v1/recommendations", content=text.encode(),
                                       headers=headers | {"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["imported"] == 2
    assert [(e["row"], e["field"]) for e in result["errors"]] == [
        (3, "estimated_monthly_savings"), (4, "params")
    ], result
    assert all("index" not in e for e in result["errors"])
    for item in good:
        assert await stack.store.get_recommendation(item["id"]) == Recommendation.model_validate(item)
    for item in (bad_savings, bad_json):
        assert await stack.store.get_recommendation(item["id"]) is None


async def test_unreadable_bodies_are_422_and_import_needs_an_operator(api: Api, stack: Stack) -> None:
    operator = api.auth("operator")
    post = api.http.post
    for response in (
        await post("/api/v1/recommendations", content=b"[{", headers=operator | {"Content-Type": "application/json"}),
        await post("/api/v1/recommendations", json={"id": "x"}, headers=operator),
        await post("/api/v1/recommendations", content=b"id,kind\nx,ec2.stop\n",
                   headers=operator | {"Content-Type": "text/csv"}),
        await post("/api/v1/recommendations", content=b"", headers=operator | {"Content-Type": "text/csv"}),
        await post("/api/v1/recommendations", files={"other": ("a.csv", b"id\n", "text/csv")}, headers=operator),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_request"
    wrong_type = await post("/api/v1/recommendations", content=b"x", headers=operator | {"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    item = rec_json(api)
    viewer = await post("/api/v1/recommendations", json=[item], headers=api.auth("viewer"))
    assert viewer.status_code == 403
    assert await stack.store.get_recommendation(item["id"]) is None


async def test_a_row_for_another_tenant_refuses_the_whole_import(api: Api, stack: Stack) -> None:
    mine, theirs = rec_json(api), rec_json(api, customer=api.other)
    response = await api.http.post("/api/v1/recommendations", json=[mine, theirs], headers=api.auth("operator"))
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden" and api.other in response.json()["detail"]
    text = csv_text([mine, rec_json(api, customer=api.other, kind="bogus")])  # even an invalid foreign row
    as_csv = await api.http.post("/api/v1/recommendations", content=text.encode(),
                                 headers=api.auth("operator") | {"Content-Type": "text/csv"})
    assert as_csv.status_code == 403
    assert await stack.store.get_recommendation(mine["id"]) is None
    assert await stack.store.get_recommendation(theirs["id"]) is None

    # Nor can an id of another customer's recommendation be taken over by importing it again.
    foreign = rec_json(api, customer=api.other)
    assert (await api.http.post("/api/v1/recommendations", json=[foreign], headers=api.auth("other"))).json() == {
        "imported": 1, "errors": []}
    hijack = foreign | {"customer_id": api.customer}
    result = (await api.http.post("/api/v1/recommendations", json=[hijack], headers=api.auth("operator"))).json()
    assert result["imported"] == 0 and [(e["index"], e["field"]) for e in result["errors"]] == [(0, "id")]
    stored = await stack.store.get_recommendation(foreign["id"])
    assert stored is not None and stored.customer_id == api.other


async def test_listing_is_tenant_filtered_and_follows_the_execution(
    api: Api, stack: Stack, aws: AwsAccount
) -> None:
    mine = [rec_json(api, aws), rec_json(api, aws)]
    theirs = rec_json(api, customer=api.other)
    assert (await api.http.post("/api/v1/recommendations", json=mine, headers=api.auth("operator"))).json() == {
        "imported": 2, "errors": []}
    assert (await api.http.post("/api/v1/recommendations", json=[theirs], headers=api.auth("other"))).status_code == 200

    async def listed(who: str, **params: str) -> dict[str, tuple[str, str | None]]:
        response = await api.http.get("/api/v1/recommendations", params=params, headers=api.auth(who))
        assert response.status_code == 200, response.text
        return {r["recommendation"]["id"]: (r["status"], r["execution_id"])
                for r in response.json()["recommendations"]}

    assert await listed("viewer") == {mine[0]["id"]: ("NEW", None), mine[1]["id"]: ("NEW", None)}
    assert await listed("viewer", customer_id=api.other) == {}
    assert await listed("other") == {theirs["id"]: ("NEW", None)}

    started = await api.http.post("/api/v1/executions/execute", json={"recommendation_id": mine[0]["id"]},
                                  headers=api.auth("operator"))
    assert started.status_code == 202, started.text
    execution_id = started.json()["execution_id"]
    assert (await stack.executions.wait(execution_id)).status is S.COMPLETED
    await stored_status(stack, execution_id, S.COMPLETED)

    assert await listed("viewer", status="COMPLETED") == {mine[0]["id"]: ("COMPLETED", execution_id)}
    assert await listed("viewer", status="new", customer_id=api.customer) == {mine[1]["id"]: ("NEW", None)}
    assert await listed("other", status="COMPLETED") == {}
    bad = await api.http.get("/api/v1/recommendations", params={"status": "SLEEPING"}, headers=api.auth("viewer"))
    assert bad.status_code == 422


# ---- metrics ---------------------------------------------------------------------------------------


async def test_summary_and_prometheus_for_a_known_set(api: Api, stack: Stack, aws: AwsAccount) -> None:
    completed_rec = recommendation("ec2.stop", aws.instance(), {"expected_instance_type": "m5.large"},
                                   savings=50.0, customer_id=api.customer)
    completed = (await stack.executions.start(request(completed_rec))).execution_id
    rejected = await awaiting(stack, aws, api.customer)
    pending = await awaiting(stack, aws, api.customer)
    assert (await stack.executions.wait(completed)).status is S.COMPLETED

    refused = await api.http.post(f"/api/v1/executions/{rejected}/reject", json={"reason": "needed"},
                                  headers=api.auth("viewer"))
    assert refused.status_code == 403  # not a decision: no approval wait observed
    decided = await api.http.post(f"/api/v1/executions/{rejected}/reject", json={"reason": "needed"},
                                  headers=api.auth("approver"))
    assert decided.status_code == 200, decided.text
    views = {
        completed: await stored_status(stack, completed, S.COMPLETED),
        rejected: await stored_status(stack, rejected, S.REJECTED),
        pending: await stored_status(stack, pending, S.AWAITING_APPROVAL),
    }

    response = await api.http.get("/api/v1/metrics/summary", params={"customer_id": api.customer},
                                  headers=api.auth("viewer"))
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["total"] == 3
    assert {k: v for k, v in summary["by_status"].items() if v} == {
        "COMPLETED": 1, "REJECTED": 1, "AWAITING_APPROVAL": 1}
    assert set(summary["by_status"]) == {s.value for s in S}
    assert summary["finished"] == 2
    assert summary["success_rate"] == pytest.approx(0.5)
    assert summary["rollback_rate"] == 0.0
    assert summary["pending_approvals"] == 1
    seconds = sorted((v.finished_at - v.started_at).total_seconds()
                     for v in (views[completed], views[rejected]) if v.finished_at is not None)
    assert summary["durations"] == {
        "count": 2, "mean_seconds": pytest.approx(sum(seconds) / 2), "p95_seconds": pytest.approx(seconds[-1])}
    ledger = await stack.store.savings_summary(customer_id=api.customer)
    assert ledger.executions == 1 and ledger.estimated_monthly == pytest.approx(50.0)
    assert summary["savings"]["estimated_monthly"] == pytest.approx(ledger.estimated_monthly)
    assert summary["savings"]["actual_monthly"] == pytest.approx(ledger.actual_monthly)
    assert summary["savings"]["executions"] == 1

    everything = await api.http.get("/api/v1/metrics/summary", headers=api.auth("viewer"))
    assert everything.json() | {"customer_id": api.customer} == summary  # the token sees this customer only
    hidden = (await api.http.get("/api/v1/metrics/summary", params={"customer_id": api.customer},
                                 headers=api.auth("other"))).json()
    assert hidden["total"] == 0 and hidden["finished"] == 0 and hidden["success_rate"] is None
    assert hidden["savings"]["executions"] == 0
    assert (await api.http.get("/api/v1/metrics/summary")).status_code == 401

    scrape = await api.http.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
    assert families["reclaim_executions"].type == "gauge"
    gauge = {s.labels["status"]: s.value for s in families["reclaim_executions"].samples}
    assert set(gauge) == {s.value for s in S}
    assert gauge["COMPLETED"] >= 1 and gauge["REJECTED"] >= 1 and gauge["AWAITING_APPROVAL"] >= 1
    assert gauge["COMPLETED"] == (await stack.store.list_executions(status=S.COMPLETED, limit=1)).total

    wait = families["reclaim_approval_wait_seconds"]
    assert wait.type == "histogram"
    samples = {s.name: s.value for s in wait.samples if s.name.endswith(("_count", "_sum"))}
    assert samples["reclaim_approval_wait_seconds_count"] == 1  # this app's registry: only our reject
    started_waiting = next(e.at for e in views[rejected].log if e.status is S.AWAITING_APPROVAL)
    waited = (views[rejected].finished_at or datetime.now(UTC)) - started_waiting
    assert 0 < samples["reclaim_approval_wait_seconds_sum"] < waited.total_seconds() + 5

    http = families["reclaim_http_request_duration_seconds"]
    assert http.type == "histogram"
    counted = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
               for s in http.samples if s.name.endswith("_count")}
    assert counted[("GET", "/api/v1/metrics/summary", "200")] == 3
    assert counted[("GET", "/api/v1/metrics/summary", "401")] == 1
    assert counted[("POST", "/api/v1/executions/{execution_id}/reject", "200")] == 1
    assert counted[("POST", "/api/v1/executions/{execution_id}/reject", "403")] == 1
    await stack.executions.cancel(pending)


# ---- server-sent events ------------------------------------------------------------------------------


@dataclass
class Event:
    name: str
    id: str | None
    data: str
    arrived: datetime


async def read_events(response: httpx.Response, into: list[Event]) -> None:
    name, event_id, data = "message", None, list[str]()
    async for line in response.aiter_lines():
        if line == "":
            if data:
                into.append(Event(name, event_id, "\n".join(data), datetime.now(UTC)))
            name, event_id, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "id":
                event_id = value
            elif key == "data":
                data.append(value)


def transitions(view: ExecutionView) -> list[tuple[S, datetime]]:
    """The log's status changes: each status with the time it was entered."""
    changes: list[tuple[S, datetime]] = []
    for entry in view.log:
        if not changes or changes[-1][0] is not entry.status:
            changes.append((entry.status, entry.at))
    return changes


async def test_event_stream_follows_an_approval_to_completion(api: Api, stack: Stack, aws: AwsAccount) -> None:
    execution_id = await awaiting(stack, aws, api.customer)
    events: list[Event] = []
    path = f"/api/v1/executions/{execution_id}/events"
    async with (
        served(api.app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        http.stream("GET", path, headers=api.auth("viewer")) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = asyncio.create_task(read_events(response, events))
        deadline = time.monotonic() + 10
        while not events:
            assert time.monotonic() < deadline, "no first event"
            await asyncio.sleep(0.05)
        await stack.executions.decide(execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
        await asyncio.wait_for(reader, timeout=60)  # the server ends the stream at COMPLETED

    view = await stack.executions.status(execution_id)
    assert view.status is S.COMPLETED
    assert {e.name for e in events} == {"status"}
    payloads = [json.loads(e.data) for e in events]
    assert all("log" not in p for p in payloads)
    assert [e.id for e in events] == [str(p["sequence"]) for p in payloads]
    assert [p["sequence"] for p in payloads] == sorted({p["sequence"] for p in payloads})
    statuses = [S(p["status"]) for p in payloads]
    assert statuses[0] is S.AWAITING_APPROVAL and statuses[-1] is S.COMPLETED
    assert len(set(statuses)) == len(statuses), statuses  # one event per change, none repeated

    # Every later event is the next status change of the log, in order, within 1 s of it.
    changes = transitions(view)
    position = [s for s, _ in changes].index(S.AWAITING_APPROVAL)
    for event, status in zip(events[1:], statuses[1:], strict=True):
        later = [i for i in range(position + 1, len(changes)) if changes[i][0] is status]
        assert later, f"{status} is not a later change of the log {[s.value for s, _ in changes]}"
        position = later[0]
        lag = (event.arrived - changes[position][1]).total_seconds()
        assert lag < 1.0, f"{status} arrived {lag:.2f} s after it happened"


async def test_event_stream_of_another_tenant_or_nothing_is_404(api: Api, stack: Stack, aws: AwsAccount) -> None:
    execution_id = await awaiting(stack, aws, api.customer)
    for who, target in (("other", execution_id), ("viewer", "exec-nothing-here")):
        response = await api.http.get(f"/api/v1/executions/{target}/events", headers=api.auth(who))
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "not_found"
    assert (await api.http.get(f"/api/v1/executions/{execution_id}/events")).status_code == 401
    await stack.executions.cancel(execution_id)


async def test_event_stream_of_a_settled_execution_is_one_event(api: Api, stack: Stack, aws: AwsAccount) -> None:
    rec = recommendation("ec2.stop", aws.instance(), customer_id=api.customer)
    started = await stack.executions.start(request(rec))
    assert (await stack.executions.wait(started.execution_id)).status is S.COMPLETED
    async with served(api.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.get(f"/api/v1/executions/{started.execution_id}/events", headers=api.auth("viewer"))
    assert response.status_code == 200
    assert response.text.startswith("event: status\nid: ")
    assert response.text.count("event: ") == 1 and '"status":"COMPLETED"' in response.text


# ---- the CLI and its client over HTTP ---------------------------------------------------------------


def cli_env(url: str, token: str) -> dict[str, str]:
    drop = ("RECLAIM_", "TEMPORAL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in {"DATABASE_URL", "COLUMNS"}}
    return env | {"RECLAIM_API_URL": url, "RECLAIM_API_TOKEN": token,
                  "TEMPORAL_ADDRESS": "127.0.0.1:1"}  # Temporal unreachable: only the API can do it


async def reclaim(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [str(RECLAIM), *args], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=90, stdin=subprocess.DEVNULL,
    )


async def test_cli_over_the_api(api: Api, stack: Stack, aws: AwsAccount, tmp_path: Path) -> None:
    execution_id = await awaiting(stack, aws, api.customer)
    async with served(api.app) as url:
        refused = await reclaim(cli_env(url, api.tokens["viewer"]), tmp_path, "--as", "bob", "approve", execution_id)
        assert refused.returncode != 0 and refused.stdout.strip() == "", refused
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in refused.stderr, refused
        assert "approver" in lines[0]
        assert (await stack.executions.status(execution_id)).status is S.AWAITING_APPROVAL

        approved = await reclaim(cli_env(url, api.tokens["approver"]), tmp_path, "--as", "bob", "approve",
                                 execution_id, "-m", "idle since May")
        assert approved.returncode == 0, approved
        assert f"approved {execution_id} as bob" in approved.stdout
        view = await stack.executions.wait(execution_id, until=frozenset({S.COMPLETED}))
        assert [(a.actor, a.accepted, a.comment) for a in view.approvals] == [("bob", True, "idle since May")]
        await stored_status(stack, execution_id, S.COMPLETED)

        status = await reclaim(cli_env(url, api.tokens["viewer"]), tmp_path, "status", execution_id, "--json")
        assert status.returncode == 0, status
        assert json.loads(status.stdout)["status"] == "COMPLETED"
        listed = await reclaim(cli_env(url, api.tokens["viewer"]), tmp_path, "list", "--json")
        assert listed.returncode == 0, listed
        assert [v["execution_id"] for v in json.loads(listed.stdout)] == [execution_id]

        missing = await reclaim(cli_env(url, api.tokens["viewer"]), tmp_path, "status", "exec-nothing-here")
        assert missing.returncode == 1 and "Traceback" not in missing.stderr
        assert missing.stderr.strip().startswith("error: ") and len(missing.stderr.strip().splitlines()) == 1


async def test_a_refusal_over_the_api_is_recorded_once(api: Api, stack: Stack, aws: AwsAccount, tmp_path: Path) -> None:
    # The API records it; the CLI, its client, records nothing more (it has no database on this path).
    rec = recommendation("ec2.stop", aws.instance(), customer_id=api.customer)
    started = await stack.executions.start(request(rec, requested_by="bob", auto_approve=False))
    assert (await stack.executions.wait(started.execution_id)).status is S.AWAITING_APPROVAL
    async with served(api.app) as url:
        own = await reclaim(cli_env(url, api.tokens["approver"]), tmp_path, "approve", started.execution_id)
    assert own.returncode == 1 and "cannot approve" in own.stderr, own
    trail = await stack.store.list_approvals(started.execution_id)
    assert [(a.actor, a.accepted, a.via) for a in trail] == [("bob", False, "api")]


async def test_api_client_maps_the_api_to_executions_errors(api: Api, stack: Stack, aws: AwsAccount) -> None:
    rec = recommendation("ec2.stop", aws.instance(), customer_id=api.customer)
    async with served(api.app) as url:
        async with ApiExecutions(url, api.tokens["operator"]) as client:
            started = await client.start(request(rec))
            assert started.created and started.execution_id == f"exec-{rec.id}"
            assert not (await client.start(request(rec))).created
            view = await client.wait(started.execution_id, timeout=60)
            assert view.status is S.COMPLETED and view.requested_by == "alice"
            with pytest.raises(NotFound):
                await client.status("exec-nothing-here")
            message = await client.rollback(started.execution_id, RollbackInput(actor="ignored", reason="oops"))
            assert message
            rolled = await client.wait(started.execution_id, until=frozenset({S.ROLLED_BACK}), timeout=60)
            assert rolled.status is S.ROLLED_BACK
            with pytest.raises(NotFound):  # another tenant's execution looks missing
                async with ApiExecutions(url, api.tokens["other"]) as other:
                    await other.status(started.execution_id)
        async with ApiExecutions(url, api.tokens["approver"]) as approver:
            with pytest.raises(Refused, match="no running execution"):
                await approver.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
        async with ApiExecutions(url, "not-a-token-at-all") as nobody:
            with pytest.raises(ReclaimError, match="refused the token"):
                await nobody.status(started.execution_id)
    async with ApiExecutions(url, api.tokens["viewer"]) as gone:  # the server has stopped
        with pytest.raises(ReclaimError, match="cannot reach the API"):
            await gone.status(started.execution_id)
