"""Manual items through `reclaim plan confirm|fail` (real subprocesses) and /api/v1/plans (ASGI), on
the dev server, a real worker and moto: who may answer, tenants, and bad items refused at the edge."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from domain.plan import PLAN_TERMINAL
from tests.conftest import AwsAccount
from tests.helpers import recommendation
from tests.journeys.test_cli import Cli, cli, failed, succeeded
from tests.test_api import Api, api, rec_for
from tests.test_api_plans import _body, _until

__all__ = ["api", "cli"]
PLANS = "/api/v1/plans"


def _step(item_id: str, role: str = "operator", **fields: Any) -> dict[str, Any]:
    return {"kind": "manual", "id": item_id, "role": role, "timeout": "PT10M",
            "instructions": "Check the **latency** dashboard: https://grafana.example.com/d/batch", **fields}


async def test_cli_confirm_and_fail(cli: Cli, aws: AwsAccount, tmp_path: Path) -> None:
    instance = aws.instance("m5.large")
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    plan = {
        "name": "with people in the loop",
        "recommendations": [rec.model_dump(mode="json", exclude_none=True)],
        "manual": [_step("check-latency"), _step("tell-owners", role="approver")],
        "strategy": "waves",
        "waves": [{"name": "before", "items": ["check-latency", "tell-owners"]},
                  {"name": "stop", "items": [rec.id], "depends_on": ["before"]}],
        "options": {"rollback_window": "PT0S"},
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    plan_id = f"manual-{rec.id}"
    run = await cli("plan", "run", str(path), "--id", plan_id, "--wait", timeout=120)
    assert run.returncode == 3, str(run)  # only a person can move it: both manual items wait
    assert "2 items await a person (2 manual" in run.stderr, str(run)
    shown = succeeded(await cli("plan", "status", plan_id)).stdout
    assert "manual item check-latency waits for operator" in shown and "latency dashboard" in shown

    assert "role viewer" in failed(await cli("plan", "confirm", plan_id, "check-latency", "--as", "vic",
                                             RECLAIM_ROLE="viewer"))
    confirmed = succeeded(await cli("plan", "confirm", plan_id, "check-latency", "--as", "olga", "--comment",
                                    "p99 flat", "--evidence", "https://grafana.example.com/d/batch?t=1",
                                    RECLAIM_ROLE="operator"))
    assert "manual item check-latency confirmed" in confirmed.stdout
    succeeded(await cli("plan", "fail", plan_id, "tell-owners", "--as", "bob", "-m", "owners unreachable",
                        "-e", "paged twice"))
    ended = await cli("plan", "watch", plan_id, "--interval", "0.3", timeout=120)
    assert ended.returncode == 4, str(ended)  # COMPLETED_WITH_FAILURES: the stop wave was skipped
    assert aws.instance_state(instance)[0] == "running"

    report = json.loads(succeeded(await cli("plan", "report", plan_id, "--format", "json")).stdout)
    assert report["status"] == "COMPLETED_WITH_FAILURES" and report["counts"] == {
        "CONFIRMED": 1, "FAILED": 1, "SKIPPED": 1}
    assert [(x["recommendation_id"], x["status"], x["decided_by"], x["comment"], x["evidence"])
            for x in report["manual"]] == [
        ("check-latency", "CONFIRMED", "olga", "p99 flat", "https://grafana.example.com/d/batch?t=1"),
        ("tell-owners", "FAILED", "bob", "owners unreachable", "paged twice")]


async def test_cli_refuses_a_bad_manual_item_and_starts_nothing(cli: Cli, aws: AwsAccount, tmp_path: Path) -> None:
    rec = recommendation("ec2.stop", aws.instance("m5.large"), {"expected_instance_type": "m5.large"})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"recommendations": [rec.model_dump(mode="json", exclude_none=True)],
                                "manual": [_step("x", role="boss")],
                                "strategy": "waves", "waves": [{"name": "a", "items": [rec.id, "x"]}]}))
    refused = failed(await cli("plan", "run", str(path), "--id", f"bad-{rec.id}"))
    assert "invalid plan: manual.0.role: Value error, unknown role 'boss' for a manual item" in refused
    assert "no plan" in failed(await cli("plan", "status", f"bad-{rec.id}"))


async def test_api_confirm_and_fail_with_roles_and_tenants(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance("m5.large")
    rec = rec_for(api.acme, instance)
    body = _body([rec], id=f"m-{api.acme}", strategy="waves", manual=[_step("sign-off", role="approver")],
                 waves=[{"name": "sign", "items": ["sign-off"]},
                        {"name": "stop", "items": [rec.id], "depends_on": ["sign"]}])
    created = await api.call("operator", "POST", PLANS, json=body)
    assert created.status_code == 202, created.text
    plan_id = created.json()["plan_id"]
    view = await _until(api, "viewer", plan_id, {"RUNNING"})
    for _ in range(600):
        if view["manual"][0]["status"] == "AWAITING_CONFIRMATION":
            break
        await asyncio.sleep(0.1)
        view = (await api.call("viewer", "GET", f"{PLANS}/{plan_id}")).json()
    assert view["manual"][0]["status"] == "AWAITING_CONFIRMATION" and "latency" in view["manual"][0]["instructions"]

    confirm = f"{PLANS}/{plan_id}/items/sign-off/confirm"
    answer = {"comment": "signed", "evidence": "https://wiki.example.com/signoff/7"}
    assert (await api.call("viewer", "POST", confirm, json=answer)).status_code == 403
    assert (await api.call("globex-approver", "POST", confirm, json=answer)).status_code == 404
    assert (await api.call(None, "POST", confirm, json=answer)).status_code == 401
    too_low = await api.call("operator", "POST", confirm, json=answer)
    assert too_low.status_code == 409 and "role operator" in too_low.json()["detail"], too_low.text
    unknown = await api.call("approver", "POST", f"{PLANS}/{plan_id}/items/nope/confirm", json=answer)
    assert unknown.status_code == 409 and "has no manual item nope" in unknown.json()["detail"]
    ok = await api.call("approver", "POST", confirm, json=answer)
    assert ok.status_code == 200 and "sign-off confirmed" in ok.json()["message"], ok.text
    again = await api.call("approver", "POST", f"{PLANS}/{plan_id}/items/sign-off/fail", json={})
    assert again.status_code == 409 and "not waiting" in again.json()["detail"]

    done = await _until(api, "viewer", plan_id, {s.value for s in PLAN_TERMINAL})
    assert done["status"] == "COMPLETED" and done["counts"] == {"CONFIRMED": 1, "COMPLETED": 1}
    report = (await api.call("viewer", "GET", f"{PLANS}/{plan_id}/report")).json()
    assert report["manual"][0]["decided_by"] == "acme-approver"
    assert report["manual"][0]["evidence"] == "https://wiki.example.com/signoff/7"
    markdown = await api.call("viewer", "GET", f"{PLANS}/{plan_id}/report", params={"format": "md"})
    assert "https://wiki.example.com/signoff/7" in markdown.text


async def test_api_refuses_bad_manual_items_and_starts_nothing(api: Api, aws: AwsAccount) -> None:
    rec = rec_for(api.acme, aws.instance("m5.large"))
    waves = [{"name": "a", "items": [rec.id, "x"]}]
    for step, field in [(_step("x", instructions="  "), "instructions"), (_step("x", role="root"), "role"),
                        (_step("x", timeout=-5), "timeout")]:
        response = await api.call("operator", "POST", PLANS,
                                  json=_body([rec], id=f"bad-{api.acme}", strategy="waves", waves=waves,
                                             manual=[step]))
        assert response.status_code == 422, response.text
        assert any(p["field"].endswith(f"manual.0.{field}") for p in response.json()["detail"]), response.text
    assert (await api.call("viewer", "GET", f"{PLANS}/bad-{api.acme}")).status_code == 404
    assert await api.stack.store.plans.list_plans(customer_ids={api.acme}) == []
