"""/api/v1/plans on the real dev server, a real worker and moto: the lifecycle, roles and tenants."""

from __future__ import annotations

import asyncio
from typing import Any

from domain.plan import PLAN_TERMINAL
from tests.conftest import AwsAccount
from tests.test_api import Api, api, rec_for

__all__ = ["api"]
PLANS = "/api/v1/plans"


def _body(recs: list[Any], **fields: Any) -> dict[str, Any]:
    return {"recommendations": [r.model_dump(mode="json", exclude_none=True) for r in recs],
            "options": {"rollback_window": "PT0S"}, **fields}


async def _until(api: Api, who: str, plan_id: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
    for _ in range(int(timeout * 10)):
        response = await api.call(who, "GET", f"{PLANS}/{plan_id}")
        assert response.status_code == 200, response.text
        if response.json()["status"] in statuses:
            return dict(response.json())
        await asyncio.sleep(0.1)
    raise AssertionError(f"plan {plan_id} never reached {statuses}")


async def test_plan_lifecycle_over_http(api: Api, aws: AwsAccount) -> None:
    instances = [aws.instance("m5.large") for _ in range(2)]
    recs = [rec_for(api.acme, i) for i in instances]
    created = await api.call("operator", "POST", PLANS, json=_body(recs, dry_run=True, id=f"p-{api.acme}"))
    assert created.status_code == 202, created.text
    plan_id = created.json()["plan_id"]
    again = await api.call("operator", "POST", PLANS, json=_body(recs, dry_run=True, id=plan_id))
    assert again.status_code == 200 and again.json()["plan_id"] == plan_id  # the same plan, not a second one
    view = await _until(api, "viewer", plan_id, {"AWAITING_APPROVAL"})
    assert view["counts"] == {"PLANNED": 2}

    refused = await api.call("approver", "POST", f"{PLANS}/{plan_id}/approve",
                             json={"items": ["not-in-the-plan"]})
    assert refused.status_code == 409 and "not planned" in refused.json()["detail"]
    assert (await api.call("operator", "POST", f"{PLANS}/{plan_id}/approve", json={})).status_code == 403
    assert (await api.call("globex-approver", "POST", f"{PLANS}/{plan_id}/approve", json={})).status_code == 404
    approved = await api.call("approver", "POST", f"{PLANS}/{plan_id}/approve", json={"comment": "ok"})
    assert approved.status_code == 200, approved.text
    done = await _until(api, "viewer", plan_id, {s.value for s in PLAN_TERMINAL})
    assert done["status"] == "COMPLETED" and done["counts"] == {"COMPLETED": 2}
    assert all(aws.instance_state(i)[0] == "stopped" for i in instances)

    report = await api.call("viewer", "GET", f"{PLANS}/{plan_id}/report")
    assert report.status_code == 200 and report.json()["approved_by"] == "acme-approver"
    markdown = await api.call("viewer", "GET", f"{PLANS}/{plan_id}/report", params={"format": "md"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith(f"# Plan {plan_id}")
    late = await api.call("operator", "POST", f"{PLANS}/{plan_id}/pause", json={})
    assert late.status_code == 409, late.text
    listed = await api.call("viewer", "GET", PLANS)
    assert plan_id in [p["plan_id"] for p in listed.json()]
    assert plan_id not in [p["plan_id"] for p in (await api.call("globex-operator", "GET", PLANS)).json()]


async def test_bad_plans_are_refused_and_start_nothing(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance("m5.large")
    rec = rec_for(api.acme, instance)
    cases = [
        ("viewer", _body([rec]), 403),
        ("globex-operator", _body([rec]), 403),
        (None, _body([rec]), 401),
        ("operator", _body([rec], strategy="waves", waves=[{"name": "a", "items": ["nope"]}]), 422),
        ("operator", _body([rec], rate={"max_concurrency": "150%"}), 422),
        ("operator", _body([rec], strategy="sideways"), 422),
        ("operator", _body([rec, rec]), 422),
        ("operator", {"recommendation_ids": ["never-imported"]}, 422),
        ("operator", {"recommendations": []}, 422),
    ]
    for who, body, status in cases:
        response = await api.call(who, "POST", PLANS, json=body)
        assert response.status_code == status, (who, body, response.text)
        assert set(response.json()) == {"error", "detail"}
    malformed = await api.call("operator", "POST", PLANS, content=b"{not json",
                               headers={"content-type": "application/json"})
    assert malformed.status_code == 422
    assert (await api.call("viewer", "GET", f"{PLANS}/nope")).status_code == 404
    assert aws.instance_state(instance)[0] == "running"
    assert await api.stack.store.plans.list_plans(customer_ids={api.acme}) == []
