"""The REST API on the real dev server, a real worker and moto: lifecycle, validation, roles and tenants.

Every test speaks HTTP to `create_app(services)` through httpx's ASGI transport; the
executions behind it are real workflows changing (moto) instances.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.aws import SessionFactory
from domain.execution import ExecutionView, dry_run_id_for, execution_id_for
from domain.policy import Role
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus as S
from runtime.settings import Settings
from starter.api.app import create_app
from starter.api.auth import TokenEntry, TokenStore, hash_token
from starter.api.deps import Services
from starter.executions import SETTLED, NotFound
from store.repository import Store
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation, request
from worker import build_worker

BASE = "/api/v1/executions"
UI = "http://ui.test"

#: Who calls: `None` sends no token, "bad" an unknown one; the rest are configured tokens.
TOKENS: dict[str, str] = {
    "viewer": "acme-viewer-token-0001",
    "operator": "acme-operator-token-0002",
    "approver": "acme-approver-token-0003",
    "admin": "acme-admin-token-0004",
    "globex-operator": "globex-operator-token-0005",
    "globex-approver": "globex-approver-token-0006",
    "root": "root-admin-all-customers-0007",
}
BAD_TOKEN = "this-token-was-never-issued"
ROLE = {
    "viewer": Role.VIEWER, "operator": Role.OPERATOR, "approver": Role.APPROVER, "admin": Role.ADMIN,
    "globex-operator": Role.OPERATOR, "globex-approver": Role.APPROVER, "root": Role.ADMIN,
}
#: Which of the two tenants ("acme", "globex") each token may act for.
TENANTS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"acme"}), "operator": frozenset({"acme"}), "approver": frozenset({"acme"}),
    "admin": frozenset({"acme"}), "globex-operator": frozenset({"globex"}),
    "globex-approver": frozenset({"globex"}), "root": frozenset({"acme", "globex"}),
}
SUBJECT = {who: f"{who}-subject" if who.startswith("globex") or who == "root" else f"acme-{who}" for who in TOKENS}


def token_store(acme: str, globex: str) -> TokenStore:
    customers = {"acme": [acme], "globex": [globex]}
    entries = [
        TokenEntry(subject=SUBJECT[who], role=ROLE[who], customers=customers[next(iter(TENANTS[who]))],
                   token=TOKENS[who])
        for who in TOKENS if who != "root"
    ]
    # The all-customers admin is configured the production way: by its hash only.
    entries.append(TokenEntry(subject=SUBJECT["root"], role=Role.ADMIN, customers=["*"],
                              sha256=hash_token(TOKENS["root"])))
    return TokenStore(entries)


@dataclass
class Api:
    """An HTTP client on the app, two fresh tenants, and the stack behind it."""

    http: httpx.AsyncClient
    stack: Stack
    acme: str
    globex: str

    def customer(self, tenant: str) -> str:
        return {"acme": self.acme, "globex": self.globex}[tenant]

    async def call(self, who: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if who == "bad":
            headers["Authorization"] = f"Bearer {BAD_TOKEN}"
        elif who is not None:
            headers["Authorization"] = f"Bearer {TOKENS[who]}"
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def execute(self, who: str | None, rec: Recommendation | None = None, **body: Any) -> httpx.Response:
        if rec is not None:
            body["recommendation"] = rec.model_dump(mode="json", exclude_none=True)
        return await self.call(who, "POST", f"{BASE}/execute", json=body)

    async def get(self, who: str | None, execution_id: str) -> httpx.Response:
        return await self.call(who, "GET", f"{BASE}/{execution_id}")

    async def act(self, who: str | None, action: str, execution_id: str, **body: Any) -> httpx.Response:
        return await self.call(who, "POST", f"{BASE}/{execution_id}/{action}", json=body)

    async def list_all(self, who: str, **params: Any) -> list[dict[str, Any]]:
        """Walk every page; asserts each page is well formed."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = dict(params) | ({"cursor": cursor} if cursor else {})
            response = await self.call(who, "GET", BASE, params=query)
            assert response.status_code == 200, response.text
            page = response.json()
            assert set(page) == {"total", "executions", "next_cursor"}
            found += page["executions"]
            cursor = page["next_cursor"]
            if cursor is None:
                assert len(found) == page["total"]
                return found


def make_app(stack: Stack, acme: str, globex: str, store: Store | None = None) -> Any:
    return create_app(Services(
        settings=Settings(web_ui_url=UI), executions=stack.executions, store=store or stack.store,
        tokens=token_store(acme, globex),
    ))


@asynccontextmanager
async def open_api(stack: Stack) -> AsyncIterator[Api]:
    suffix = uuid.uuid4().hex[:10]
    acme, globex = f"acme-{suffix}", f"globex-{suffix}"
    app = make_app(stack, acme, globex)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        yield Api(http, stack, acme, globex)


@pytest_asyncio.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    async with open_api(stack) as opened:
        yield opened


def rec_for(customer: str, instance: str, **extra: Any) -> Recommendation:
    return recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"}, customer_id=customer, **extra)


async def settled(stack: Stack, execution_id: str, until: frozenset[S] = SETTLED) -> ExecutionView:
    """Wait for the workflow, then for the read model (written asynchronously) to hold the same view."""
    view = await stack.executions.wait(execution_id, until=until, timeout=120)
    for _ in range(400):
        stored = await stack.store.get_execution(execution_id)
        if stored is not None and stored.sequence >= view.sequence:
            return stored
        await asyncio.sleep(0.05)
    raise AssertionError(f"the read model never caught up with {execution_id}")


async def assert_nothing_started(stack: Stack, rec: Recommendation) -> None:
    # neither the execution nor a dry run (under its id of now or of before)
    for execution_id in (execution_id_for(rec.id), dry_run_id_for(rec.id), execution_id_for(rec.id, dry_run=True)):
        with pytest.raises(NotFound):
            await stack.executions.status(execution_id)
        assert await stack.store.get_execution(execution_id) is None
    assert await stack.store.get_recommendation(rec.id) is None


def not_found(execution_id: str) -> dict[str, Any]:
    return {"error": "not_found", "detail": f"no execution {execution_id}"}


# ---- execute ---------------------------------------------------------------------------------------------


async def test_execute_inline_then_again_returns_the_same_execution(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance("m5.large")
    rec = rec_for(api.acme, instance)
    first = await api.execute("operator", rec)
    assert first.status_code == 202, first.text
    body = first.json()
    assert set(body) == {"execution_id", "status", "started_at", "created"}
    assert body["execution_id"] == execution_id_for(rec.id)
    assert body["created"] is True
    assert S(body["status"]) in set(S)
    datetime.fromisoformat(body["started_at"])

    again = await api.execute("operator", rec)
    assert again.status_code == 200, again.text
    assert again.json()["execution_id"] == body["execution_id"]
    assert again.json()["created"] is False
    assert again.json()["started_at"] == body["started_at"]

    view = await settled(api.stack, body["execution_id"])
    assert view.status is S.COMPLETED, view.reason
    assert view.requested_by == SUBJECT["operator"]
    assert aws.instance_state(instance) == ("stopped", "m5.large")
    assert await api.stack.store.get_recommendation(rec.id) == rec


async def test_execute_a_stored_recommendation_by_id(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance()
    rec = rec_for(api.acme, instance)
    await api.stack.store.save_recommendations([rec])
    response = await api.execute("operator", recommendation_id=rec.id, dry_run=True)
    assert response.status_code == 202, response.text
    assert response.json()["execution_id"] == dry_run_id_for(rec.id)
    assert response.json()["created"] is True
    view = await settled(api.stack, dry_run_id_for(rec.id))
    assert view.status is S.PLANNED
    assert aws.instance_state(instance)[0] == "running"


async def test_execute_another_tenants_stored_recommendation_is_not_found(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance()
    theirs = rec_for(api.globex, instance)
    await api.stack.store.save_recommendations([theirs])
    response = await api.execute("operator", recommendation_id=theirs.id)
    missing_id = f"rec-{uuid.uuid4().hex[:12]}"
    missing = await api.execute("operator", recommendation_id=missing_id)
    assert response.status_code == missing.status_code == 404
    assert response.json() == {"error": "not_found", "detail": f"no recommendation {theirs.id}"}
    assert missing.json() == {"error": "not_found", "detail": f"no recommendation {missing_id}"}
    with pytest.raises(NotFound):
        await api.stack.executions.status(execution_id_for(theirs.id))
    assert await api.stack.store.get_recommendation(theirs.id) == theirs
    assert aws.instance_state(instance)[0] == "running"


async def test_a_busy_resource_is_refused_and_nothing_starts(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance()
    first = await api.execute("operator", rec_for(api.acme, instance), auto_approve=False)
    assert first.status_code == 202, first.text
    holder = first.json()["execution_id"]
    assert (await settled(api.stack, holder)).status is S.AWAITING_APPROVAL

    second = rec_for(api.acme, instance)
    response = await api.execute("operator", second)
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "resource_busy"
    assert holder in response.json()["detail"]  # the caller may see the holder: it is named
    await assert_nothing_started(api.stack, second)
    assert aws.instance_state(instance) == ("running", "m5.large")
    assert (await api.stack.executions.status(holder)).status is S.AWAITING_APPROVAL


async def test_busy_by_another_tenant_does_not_name_their_execution(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance()
    theirs = await api.execute("globex-operator", rec_for(api.globex, instance), auto_approve=False)
    assert theirs.status_code == 202, theirs.text
    holder = theirs.json()["execution_id"]
    await settled(api.stack, holder)

    mine = rec_for(api.acme, instance)
    response = await api.execute("operator", mine)
    assert response.status_code == 409, response.text
    assert response.json() == {
        "error": "resource_busy", "detail": f"resource {instance} is busy: another execution is changing it",
    }
    await assert_nothing_started(api.stack, mine)
    assert aws.instance_state(instance)[0] == "running"


async def test_a_recommendation_id_of_another_tenant_is_neither_overwritten_nor_revealed(
    api: Api, aws: AwsAccount
) -> None:
    theirs = rec_for(api.globex, aws.instance())
    started = await api.execute("globex-operator", theirs, auto_approve=False)
    assert started.status_code == 202, started.text
    await settled(api.stack, started.json()["execution_id"])
    before = await api.stack.executions.status(started.json()["execution_id"])

    instance = aws.instance()
    impostor = rec_for(api.acme, instance).model_copy(update={"id": theirs.id})
    response = await api.execute("operator", impostor)
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "conflict"
    assert "AWAITING_APPROVAL" not in response.text and started.json()["execution_id"] not in response.text
    assert await api.stack.store.get_recommendation(theirs.id) == theirs
    after = await api.stack.executions.status(started.json()["execution_id"])
    assert after.customer_id == api.globex and after.sequence == before.sequence
    assert aws.instance_state(instance)[0] == "running"


def _inline(rec: Recommendation) -> dict[str, Any]:
    return rec.model_dump(mode="json", exclude_none=True)


INVALID_BODIES: dict[str, tuple[Any, str, str]] = {
    # case: (body builder key, expected field, text expected in the message)
    "unknown_kind": ("unknown_kind", "body.recommendation.kind", "ec2.stop"),
    "bad_params": ("bad_params", "body.recommendation.params", "expected_instance_typo"),
    "extra_field": ("extra_field", "body.surprise", "Extra inputs are not permitted"),
    "extra_field_in_recommendation": ("extra_nested", "body.recommendation.surprise", "Extra inputs"),
    "both": ("both", "body", "exactly one of recommendation_id or recommendation"),
    "neither": ("neither", "body", "exactly one of recommendation_id or recommendation"),
    "bad_pattern": ("bad_pattern", "body.recommendation.account_id", "pattern"),
}


def _invalid_body(case: str, rec: Recommendation) -> dict[str, Any]:
    inline = _inline(rec)
    bodies: dict[str, dict[str, Any]] = {
        "unknown_kind": {"recommendation": inline | {"kind": "ec2.explode"}},
        "bad_params": {"recommendation": inline | {"params": {"expected_instance_typo": "m5.large"}}},
        "extra_field": {"recommendation": inline, "surprise": True},
        "extra_nested": {"recommendation": inline | {"surprise": True}},
        "both": {"recommendation": inline, "recommendation_id": rec.id},
        "neither": {"dry_run": True},
        "bad_pattern": {"recommendation": inline | {"account_id": "12345"}},
    }
    return bodies[case]


@pytest.mark.parametrize("case", list(INVALID_BODIES))
async def test_invalid_execute_bodies_are_422_naming_the_field(api: Api, aws: AwsAccount, case: str) -> None:
    instance = aws.instance()
    rec = rec_for(api.acme, instance)
    builder, expected_field, expected_text = INVALID_BODIES[case]
    response = await api.call("operator", "POST", f"{BASE}/execute", json=_invalid_body(builder, rec))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    problems = {p["field"]: p["message"] for p in body["detail"]}
    assert expected_field in problems, body
    assert expected_text in problems[expected_field], body
    if case == "unknown_kind":
        assert "ec2.explode" in problems[expected_field]
        assert "ebs.delete" in problems[expected_field]  # the known kinds are listed
    await assert_nothing_started(api.stack, rec)
    assert aws.instance_state(instance) == ("running", "m5.large")


@pytest.mark.parametrize("raw", [b'{"recommendation": {', b"not json at all", b"", b"[1, 2]", b"null", b"\xff\xfe{"])
async def test_malformed_json_is_422_not_500(api: Api, raw: bytes) -> None:
    response = await api.call("operator", "POST", f"{BASE}/execute", content=raw,
                              headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert all(p["field"].startswith("body") for p in response.json()["detail"])


async def test_execute_for_a_customer_the_token_does_not_cover_is_forbidden(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance()
    rec = rec_for(api.globex, instance)
    response = await api.execute("admin", rec)
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden"
    await assert_nothing_started(api.stack, rec)
    assert aws.instance_state(instance)[0] == "running"


# ---- get and list ----------------------------------------------------------------------------------------


async def test_get_shows_a_completed_execution(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance("m5.large")
    started = await api.execute("operator", rec_for(api.acme, instance, savings=42.5))
    execution_id = started.json()["execution_id"]
    await settled(api.stack, execution_id)

    response = await api.get("viewer", execution_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["execution_id"] == execution_id
    assert body["customer_id"] == api.acme
    assert body["kind"] == "ec2.stop" and body["resource_id"] == instance
    assert body["status"] == "COMPLETED"
    assert body["step"]
    assert body["progress_percent"] == 100
    assert body["risk"] == "LOW"
    assert body["approvals"] == []
    assert body["estimated_monthly_savings"] == 42.5
    assert body["actual_monthly_savings"] is not None and body["actual_monthly_savings"] > 0
    started_at, updated_at = (datetime.fromisoformat(body[k]) for k in ("started_at", "updated_at"))
    finished_at = datetime.fromisoformat(body["finished_at"])
    assert started_at <= finished_at <= updated_at
    until = datetime.fromisoformat(body["rollback_available_until"])
    assert until - finished_at > timedelta(days=6)
    assert body["web_ui_url"] == f"{UI}/namespaces/default/workflows/{execution_id}"
    assert execution_id in body["web_ui_url"]


async def test_get_shows_an_execution_awaiting_approval_then_its_approvals(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance()
    started = await api.execute("operator", rec_for(api.acme, instance), auto_approve=False)
    execution_id = started.json()["execution_id"]
    await settled(api.stack, execution_id)

    body = (await api.get("viewer", execution_id)).json()
    assert body["status"] == "AWAITING_APPROVAL"
    assert body["progress_percent"] == 25
    assert body["risk"] == "LOW"
    assert body["approval_reasons"]
    assert body["approvals"] == []
    assert body["finished_at"] is None and body["rollback_available_until"] is None
    assert body["actual_monthly_savings"] is None

    assert (await api.act("approver", "approve", execution_id, comment="idle")).status_code == 200
    await settled(api.stack, execution_id, until=frozenset({S.COMPLETED}))
    body = (await api.get("viewer", execution_id)).json()
    assert [(a["actor"], a["accepted"], a["decision"], a["comment"]) for a in body["approvals"]] == [
        (SUBJECT["approver"], True, "approve", "idle")
    ]
    assert body["status"] == "COMPLETED"


async def test_get_of_a_missing_execution_is_404(api: Api) -> None:
    execution_id = f"exec-rec-{uuid.uuid4().hex[:12]}"
    response = await api.get("root", execution_id)
    assert response.status_code == 404
    assert response.json() == not_found(execution_id)


def _view(customer: str, n: int, started_at: datetime, status: S, kind: str) -> ExecutionView:
    return ExecutionView(
        execution_id=f"exec-seeded-{customer}-{n}", recommendation_id=f"seeded-{customer}-{n}",
        customer_id=customer, account_id="123456789012", region="us-east-1", kind=kind,
        resource_id=f"i-seeded{n:09d}", requested_by="seed", status=status, step="seeded",
        progress_percent=100, started_at=started_at, updated_at=started_at, finished_at=started_at,
        sequence=1,
    )


async def test_list_is_newest_first_filtered_and_pages_walk_everything(api: Api, aws: AwsAccount) -> None:
    # Two real executions (newest) and seven older rows of the read model, all of one fresh tenant.
    real = []
    for _ in range(2):
        response = await api.execute("operator", rec_for(api.acme, aws.instance()), dry_run=True)
        real.append(response.json()["execution_id"])
    for execution_id in real:
        assert (await settled(api.stack, execution_id)).status is S.PLANNED
    past = datetime.now(UTC) - timedelta(days=1)
    seeded = [
        _view(api.acme, n, past - timedelta(minutes=n), [S.REJECTED, S.FAILED, S.CANCELLED][n % 3],
              "ec2.rightsize" if n % 2 else "ebs.delete")
        for n in range(7)
    ]
    for view in seeded:
        await api.stack.store.upsert_execution(view)
    await api.stack.store.upsert_execution(_view(api.globex, 99, past, S.REJECTED, "ebs.delete"))

    first = await api.call("viewer", "GET", BASE, params={"customer_id": api.acme, "limit": 3})
    assert first.status_code == 200, first.text
    page = first.json()
    assert page["total"] == 9 and len(page["executions"]) == 3 and page["next_cursor"]

    everything = await api.list_all("viewer", customer_id=api.acme, limit=2)
    ids = [e["execution_id"] for e in everything]
    assert len(ids) == len(set(ids)) == 9
    assert set(ids[:2]) == set(real)
    assert ids[2:] == [v.execution_id for v in seeded]  # newest first
    starts = [datetime.fromisoformat(e["started_at"]) for e in everything]
    assert starts == sorted(starts, reverse=True)
    assert all(e["web_ui_url"].endswith(e["execution_id"]) for e in everything)
    # Unfiltered, the tenant's token sees exactly its own rows (never globex's).
    assert sorted(e["execution_id"] for e in await api.list_all("viewer", limit=4)) == sorted(ids)

    rejected = await api.list_all("viewer", customer_id=api.acme, status="REJECTED")
    assert [e["execution_id"] for e in rejected] == [v.execution_id for v in seeded if v.status is S.REJECTED]
    planned = await api.list_all("viewer", status="PLANNED")
    assert sorted(e["execution_id"] for e in planned) == sorted(real)
    rightsize = await api.list_all("viewer", kind="ec2.rightsize", limit=1)
    assert [e["execution_id"] for e in rightsize] == [v.execution_id for v in seeded if v.kind == "ec2.rightsize"]
    both = await api.list_all("viewer", kind="ebs.delete", status="CANCELLED")
    assert [e["execution_id"] for e in both] == [
        v.execution_id for v in seeded if v.kind == "ebs.delete" and v.status is S.CANCELLED
    ]
    assert await api.list_all("viewer", kind="s3.lifecycle") == []


@pytest.mark.parametrize(
    "params, field",
    [
        ({"cursor": "definitely-not-a-cursor"}, "query.cursor"),
        ({"cursor": "eyJhIjogMX0"}, "query.cursor"),  # base64 of {"a": 1}: decodes, but is not ours
        ({"limit": 0}, "query.limit"),
        ({"limit": 501}, "query.limit"),
        ({"status": "SLEEPING"}, "query.status"),
    ],
)
async def test_list_rejects_bad_queries_with_422(api: Api, params: dict[str, Any], field: str) -> None:
    response = await api.call("viewer", "GET", BASE, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert field in {p["field"] for p in response.json()["detail"]}


# ---- approve, reject, rollback, cancel -----------------------------------------------------------------


async def parked(api: Api, aws: AwsAccount, who: str = "operator") -> tuple[str, str]:
    instance = aws.instance()
    response = await api.execute(who, rec_for(api.acme, instance), auto_approve=False)
    assert response.status_code == 202, response.text
    execution_id = response.json()["execution_id"]
    assert (await settled(api.stack, execution_id)).status is S.AWAITING_APPROVAL
    return execution_id, instance


async def test_approval_by_a_second_person_completes_the_change(api: Api, aws: AwsAccount) -> None:
    execution_id, instance = await parked(api, aws)
    response = await api.act("approver", "approve", execution_id, comment="idle since May")
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["accepted"] is True and record["refusal"] is None
    assert (record["actor"], record["role"], record["decision"]) == (SUBJECT["approver"], "approver", "approve")
    assert record["execution_id"] == execution_id and record["via"] == "update"
    view = await settled(api.stack, execution_id, until=frozenset({S.COMPLETED}))
    assert view.status is S.COMPLETED
    assert aws.instance_state(instance)[0] == "stopped"
    again = await api.act("approver", "approve", execution_id)
    assert again.status_code == 409 and again.json()["error"] == "refused"
    assert again.json()["detail"] == f"already approved by {SUBJECT['approver']}"


async def test_self_approval_is_refused_and_recorded(api: Api, aws: AwsAccount) -> None:
    execution_id, instance = await parked(api, aws, who="approver")
    response = await api.act("approver", "approve", execution_id, comment="mine")
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "refused"
    assert "cannot approve" in response.json()["detail"]
    trail = await api.stack.store.list_approvals(execution_id)
    assert [(a.actor, a.accepted, a.via, a.decision.value) for a in trail] == [
        (SUBJECT["approver"], False, "api", "approve")
    ]
    assert "cannot approve" in (trail[0].refusal or "")
    assert (await api.stack.executions.status(execution_id)).status is S.AWAITING_APPROVAL
    assert aws.instance_state(instance)[0] == "running"
    # Someone else may.
    assert (await api.act("admin", "approve", execution_id)).status_code == 200
    await settled(api.stack, execution_id, until=frozenset({S.COMPLETED}))
    assert aws.instance_state(instance)[0] == "stopped"


async def test_reject_ends_without_change(api: Api, aws: AwsAccount) -> None:
    execution_id, instance = await parked(api, aws)
    response = await api.act("approver", "reject", execution_id, reason="needed for QA")
    assert response.status_code == 200, response.text
    assert response.json()["decision"] == "reject" and response.json()["accepted"] is True
    view = await settled(api.stack, execution_id, until=frozenset({S.REJECTED}))
    assert "needed for QA" in (view.reason or "")
    assert aws.instance_state(instance)[0] == "running"
    body = (await api.get("viewer", execution_id)).json()
    assert body["status"] == "REJECTED" and body["progress_percent"] == 100


async def test_rollback_of_a_completed_execution(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance("m5.large")
    started = await api.execute("operator", rec_for(api.acme, instance))
    execution_id = started.json()["execution_id"]
    assert (await settled(api.stack, execution_id)).status is S.COMPLETED
    assert aws.instance_state(instance)[0] == "stopped"

    response = await api.act("operator", "rollback", execution_id, reason="batch job needs it")
    assert response.status_code == 202, response.text
    assert response.json()["execution_id"] == execution_id and response.json()["message"]
    view = await settled(api.stack, execution_id, until=frozenset({S.ROLLED_BACK}))
    assert view.status is S.ROLLED_BACK
    assert aws.instance_state(instance) == ("running", "m5.large")
    assert (await api.get("viewer", execution_id)).json()["status"] == "ROLLED_BACK"
    again = await api.act("operator", "rollback", execution_id)
    assert again.status_code == 409 and again.json()["error"] == "refused"


async def test_rollback_of_an_execution_awaiting_approval_is_refused(api: Api, aws: AwsAccount) -> None:
    execution_id, instance = await parked(api, aws)
    response = await api.act("operator", "rollback", execution_id)
    assert response.status_code == 409, response.text
    assert "only a COMPLETED execution" in response.json()["detail"]
    assert (await api.stack.executions.status(execution_id)).status is S.AWAITING_APPROVAL
    assert aws.instance_state(instance)[0] == "running"


async def test_cancel_while_awaiting_approval(api: Api, aws: AwsAccount) -> None:
    execution_id, instance = await parked(api, aws)
    response = await api.act("operator", "cancel", execution_id)
    assert response.status_code == 202, response.text
    view = await settled(api.stack, execution_id, until=frozenset({S.CANCELLED}))
    assert view.status is S.CANCELLED
    assert aws.instance_state(instance)[0] == "running"
    assert (await api.get("viewer", execution_id)).json()["status"] == "CANCELLED"
    again = await api.act("operator", "cancel", execution_id)
    assert again.status_code == 409 and again.json()["error"] == "refused"


# ---- health, protocol details ----------------------------------------------------------------------------


async def test_healthz_ok(api: Api) -> None:
    response = await api.call(None, "GET", "/healthz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "checks": {"temporal": "ok", "database": "ok"}}


@pytest.mark.parametrize("broken", ["sqlite_gone", "postgres_unreachable"])
async def test_healthz_names_an_unreachable_database(stack: Stack, tmp_path: Path, broken: str) -> None:
    if broken == "sqlite_gone":
        # A closed SQLite store simply reconnects; one whose directory vanished cannot.
        db = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/gone/reclaim.db")
        await db.close()
        shutil.rmtree(tmp_path / "gone")
    else:
        db = await Store.open("postgresql://postgres@127.0.0.1:1/x", migrate=False)
    try:
        app = make_app(stack, "acme", "globex", store=db)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as http:
            response = await http.get("/healthz")
    finally:
        await db.close()
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["temporal"] == "ok"
    assert body["checks"]["database"].startswith("unreachable")


async def test_wrong_method_is_405_with_allow(api: Api) -> None:
    response = await api.call("root", "DELETE", f"{BASE}/execute")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "token abc"])
async def test_malformed_authorization_is_401(api: Api, authorization: str) -> None:
    response = await api.http.get(BASE, headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_rejected_requests_change_nothing(api: Api, aws: AwsAccount) -> None:
    """401, 403, 404, 409 and 422 answers leave AWS, Temporal and every store row as they were."""
    execution_id, instance = await parked(api, aws)
    spare = aws.instance()

    async def snapshot() -> tuple[Any, ...]:
        view = await api.stack.executions.status(execution_id)
        stored = await api.stack.store.get_execution(execution_id)
        rows = await api.stack.store.list_executions(customer_ids={api.acme, api.globex}, limit=500)
        return (
            aws.describe_instance(instance)["State"], aws.describe_instance(spare)["State"],
            view.status, view.sequence, stored, rows,
            await api.stack.store.list_approvals(execution_id),
            await api.stack.store.list_recommendations(customer_id=api.acme),
            await api.stack.store.list_recommendations(customer_id=api.globex),
        )

    before = await snapshot()
    spare_rec = rec_for(api.acme, spare)
    attempts = [
        api.execute(None, spare_rec), api.execute("bad", spare_rec), api.execute("viewer", spare_rec),
        api.execute("globex-operator", spare_rec),
        api.execute("operator", rec_for(api.acme, instance)),  # busy: 409
        api.execute("operator", spare_rec.model_copy(update={"kind": "ec2.explode"})),
        api.call("operator", "POST", f"{BASE}/execute", content=b"{", headers={"Content-Type": "application/json"}),
    ]
    for action in ("approve", "reject", "rollback", "cancel"):
        attempts += [
            api.act(None, action, execution_id), api.act("bad", action, execution_id),
            api.act("viewer", action, execution_id), api.act("globex-approver", action, execution_id),
            api.act("globex-operator", action, execution_id),
        ]
    attempts.append(api.act("approver", "approve", execution_id, comment="x" * 2001))
    attempts.append(api.act("operator", "approve", execution_id))
    statuses = [(await attempt).status_code for attempt in attempts]
    assert all(400 <= s < 500 for s in statuses), statuses
    assert {401, 403, 404, 409, 422} <= set(statuses)
    assert await snapshot() == before


# ---- the role x endpoint x tenant matrix ---------------------------------------------------------------

CALLERS: list[str | None] = [None, "bad", "viewer", "operator", "approver", "admin",
                             "globex-operator", "globex-approver", "root"]
ENDPOINTS = ["execute", "get", "list", "approve", "reject", "rollback", "cancel"]
TARGETS = ["acme", "globex", "missing"]
VIEW_ROLES = frozenset(Role)
ALLOWED: dict[str, frozenset[Role]] = {
    "get": VIEW_ROLES,
    "list": VIEW_ROLES,
    "execute": frozenset({Role.OPERATOR, Role.APPROVER, Role.ADMIN}),
    "rollback": frozenset({Role.OPERATOR, Role.APPROVER, Role.ADMIN}),
    "cancel": frozenset({Role.OPERATOR, Role.APPROVER, Role.ADMIN}),
    "approve": frozenset({Role.APPROVER, Role.ADMIN}),
    "reject": frozenset({Role.APPROVER, Role.ADMIN}),
}
SUCCESS = {"execute": 202, "get": 200, "list": 200, "approve": 200, "reject": 200, "rollback": 202, "cancel": 202}
MUTATING = ("approve", "reject", "rollback", "cancel")


def expected_status(endpoint: str, who: str | None, target: str) -> int:
    if who is None or who == "bad":
        return 401
    if ROLE[who] not in ALLOWED[endpoint]:
        return 403
    if endpoint == "list":
        return 200  # filtered to what the token may see
    if target == "missing":
        return 404
    if target not in TENANTS[who]:
        # Inline recommendation for a customer the token does not cover: refused outright.
        # An id-addressed execution of another customer: exactly like a missing one.
        return 403 if endpoint == "execute" else 404
    return SUCCESS[endpoint]


@dataclass
class Target:
    execution_id: str
    instance: str


@dataclass
class World:
    api: Api
    aws: AwsAccount
    shared: dict[tuple[str, str], Target]  # (tenant, "parked" | "done")
    prepared: dict[tuple[str, str, str], Target] = field(default_factory=dict)  # (endpoint, who, tenant)


@pytest_asyncio.fixture(scope="class")
async def world(
    temporal_env: WorkflowEnvironment, store: Store, moto_endpoint: str, activity_executor: Any
) -> AsyncIterator[World]:
    """One worker, two tenants, and every execution the matrix needs, prepared in parallel once."""
    aws = AwsAccount(moto_endpoint)  # no reset: the executions below live across the class
    stack = Stack(temporal_env.client, f"tq-api-{uuid.uuid4()}", SessionFactory(endpoint_url=moto_endpoint), store)
    worker = build_worker(temporal_env.client, task_queue=stack.task_queue, sessions=stack.sessions, store=store,
                          executor=activity_executor, max_concurrent_activities=16)
    async with worker, open_api(stack) as api:
        async def prepare(tenant: str, state: str) -> Target:
            instance = aws.instance("m5.large")
            rec = rec_for(api.customer(tenant), instance)
            started = await stack.executions.start(request(rec, requested_by="requester",
                                                           auto_approve=state == "done"))
            view = await settled(stack, started.execution_id)
            assert view.status is (S.COMPLETED if state == "done" else S.AWAITING_APPROVAL), view.reason
            return Target(started.execution_id, instance)

        wanted: dict[Any, tuple[str, str]] = {
            (tenant, state): (tenant, state) for tenant in ("acme", "globex") for state in ("parked", "done")
        }
        for endpoint in MUTATING:
            for who in CALLERS:
                for tenant in ("acme", "globex"):
                    if who is not None and expected_status(endpoint, who, tenant) == SUCCESS[endpoint]:
                        wanted[(endpoint, who, tenant)] = (tenant, "done" if endpoint == "rollback" else "parked")
        targets = await asyncio.gather(*(prepare(*spec) for spec in wanted.values()))
        prepared = dict(zip(wanted, targets, strict=True))
        yield World(
            api, aws,
            shared={k: v for k, v in prepared.items() if len(k) == 2},
            prepared={k: v for k, v in prepared.items() if len(k) == 3},
        )


def _cell_id(value: Any) -> str:
    return "anonymous" if value is None else str(value)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("who", CALLERS, ids=_cell_id)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
class TestRoleTenantMatrix:
    async def test_cell(self, world: World, endpoint: str, who: str | None, target: str) -> None:
        expected = expected_status(endpoint, who, target)
        if endpoint == "execute":
            await self._execute(world, who, target, expected)
        elif endpoint == "list":
            await self._list(world, who, target, expected)
        else:
            await self._by_id(world, endpoint, who, target, expected)

    async def _execute(self, world: World, who: str | None, target: str, expected: int) -> None:
        api, instance = world.api, world.aws.instance("m5.large")
        rec = rec_for(api.customer("acme" if target == "missing" else target), instance)
        if target == "missing":
            response = await api.execute(who, recommendation_id=rec.id, dry_run=True)
        else:
            response = await api.execute(who, rec, dry_run=True)
        assert response.status_code == expected, response.text
        if expected == 202:
            plan = dry_run_id_for(rec.id)
            assert response.json()["execution_id"] == plan
            assert response.json()["created"] is True
            assert (await api.stack.executions.status(plan)).requested_by == SUBJECT[str(who)]
            return
        assert response.json()["error"] == {401: "unauthenticated", 403: "forbidden", 404: "not_found"}[expected]
        await assert_nothing_started(api.stack, rec)
        assert world.aws.instance_state(instance) == ("running", "m5.large")

    async def _list(self, world: World, who: str | None, target: str, expected: int) -> None:
        api = world.api
        customer = f"nobody-{uuid.uuid4().hex[:8]}" if target == "missing" else api.customer(target)
        response = await api.call(who, "GET", BASE, params={"customer_id": customer, "limit": 500})
        assert response.status_code == expected, response.text
        if expected != 200:
            assert response.json()["error"] == {401: "unauthenticated", 403: "forbidden"}[expected]
            return
        page = response.json()
        assert who is not None
        if target == "missing" or target not in TENANTS[who]:
            assert page == {"total": 0, "executions": [], "next_cursor": None}
            return
        ids = {e["execution_id"] for e in page["executions"]}
        assert {e["customer_id"] for e in page["executions"]} == {customer}
        assert {t.execution_id for (tenant, _), t in world.shared.items() if tenant == target} <= ids
        # Unfiltered: every execution the token can see, and none of another tenant's.
        seen = await api.list_all(who, limit=500)
        visible = {api.customer(t) for t in TENANTS[who]}
        if who == "root":
            assert visible <= {e["customer_id"] for e in seen}
        else:
            assert {e["customer_id"] for e in seen} == visible
        shared_ids = {t.execution_id: tenant for (tenant, _), t in world.shared.items()}
        assert {tenant for eid, tenant in shared_ids.items() if eid in {e["execution_id"] for e in seen}} == set(
            TENANTS[who]
        )

    async def _by_id(self, world: World, endpoint: str, who: str | None, target: str, expected: int) -> None:
        api, stack = world.api, world.api.stack
        if target == "missing":
            execution_id, instance = f"exec-rec-{uuid.uuid4().hex[:12]}", None
        else:
            mine = world.prepared.get((endpoint, str(who), target))
            chosen = mine or world.shared[(target, "done" if endpoint in ("rollback", "get") else "parked")]
            execution_id, instance = chosen.execution_id, chosen.instance
            assert (mine is not None) == (expected == SUCCESS[endpoint] and endpoint != "get")

        async def state() -> tuple[Any, ...]:
            if instance is None:
                return ()
            view = await stack.executions.status(execution_id)
            return (view.status, view.sequence, len(view.approvals), world.aws.instance_state(instance),
                    await stack.store.list_approvals(execution_id))

        before = await state()
        if endpoint == "get":
            response = await api.get(who, execution_id)
        else:
            body = {"comment": "matrix"} if endpoint == "approve" else {"reason": "matrix"}
            response = await api.act(who, endpoint, execution_id, **({} if endpoint == "cancel" else body))
        assert response.status_code == expected, response.text

        if expected == SUCCESS[endpoint]:
            assert response.json()["execution_id"] == execution_id
            if endpoint in ("approve", "reject"):
                assert response.json()["accepted"] is True
                assert response.json()["actor"] == SUBJECT[str(who)]
            return
        assert response.json() == (
            not_found(execution_id) if expected == 404
            else {"error": {401: "unauthenticated", 403: "forbidden"}[expected],
                  "detail": response.json()["detail"]}
        )
        if expected == 401:
            assert response.headers["www-authenticate"] == "Bearer"
        assert await state() == before  # a refused request changes nothing


async def test_another_tenants_execution_is_indistinguishable_from_a_missing_one(api: Api, aws: AwsAccount) -> None:
    theirs, _ = await parked(api, aws, who="operator")  # acme's; asked for by globex tokens below
    missing = f"exec-rec-{uuid.uuid4().hex[:12]}"
    for who, action in [("globex-approver", "get"), ("globex-approver", "approve"), ("globex-approver", "reject"),
                        ("globex-operator", "rollback"), ("globex-operator", "cancel")]:
        answers = []
        for execution_id in (theirs, missing):
            if action == "get":
                response = await api.get(who, execution_id)
            else:
                response = await api.act(who, action, execution_id)
            body = response.json()
            body["detail"] = body["detail"].replace(execution_id, "<id>")
            answers.append((response.status_code, body, sorted(response.headers)))
        assert answers[0] == answers[1], (who, action, answers)
        assert answers[0][0] == 404
