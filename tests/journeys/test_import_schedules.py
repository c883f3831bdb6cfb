"""Imports on a Temporal Schedule (issue 14): ImportWorkflow keeps the read model current and opens a
dry-run plan of the NEW recommendations that waits for approval; `reclaim schedule` and the API's
/imports and /schedules routes on the dev server.

The time-skipping test server implements no schedule API (CreateSchedule is unimplemented there), so
the workflow a schedule starts runs there with the input the schedule's action carries, and the
schedules themselves (created, fired by their spec, triggered, paused, deleted) run on the dev server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from activities.aws import SessionFactory
from domain.imports import ImportInput, ImportPlan, ImportSource
from domain.plan import PlanStatus
from starter.imports import Imports
from starter.plans import Plans
from store.repository import NEW, Store
from tests.conftest import ACCOUNT, REGION, AwsAccount, Stack
from tests.journeys.test_cli import Cli, cli, failed, succeeded
from tests.test_api import Api, api
from worker import build_worker

__all__ = ["api", "cli"]


def hub_file(path: Path, instances: dict[str, float]) -> str:
    """A saved `aws cost-optimization-hub list-recommendations` of Stop + Ec2Instance items (and one
    Savings Plans purchase, not executable yet)."""
    items = [{"recommendationId": f"rec-{iid}", "accountId": ACCOUNT, "region": REGION, "resourceId": iid,
              "resourceArn": f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{iid}", "actionType": "Stop",
              "currentResourceType": "Ec2Instance", "estimatedMonthlySavings": savings}
             for iid, savings in instances.items()]
    items.append({"recommendationId": "rec-sp", "accountId": ACCOUNT, "region": REGION, "resourceId": "sp",
                  "actionType": "PurchaseSavingsPlans", "currentResourceType": "ComputeSavingsPlans",
                  "estimatedMonthlySavings": 100.0})
    path.write_text(json.dumps({"items": items}))
    return str(path)


def file_import(customer: str, file: str, max_items: int | None = None) -> ImportInput:
    return ImportInput(source=ImportSource.FILE, customer_id=customer, file=file, requested_by="alice",
                       plan=ImportPlan(max_items=max_items) if max_items else None)


async def test_an_import_opens_a_dry_run_plan_of_the_new_ones_on_the_time_skipping_server(
    skipping_env: WorkflowEnvironment, aws: AwsAccount, sessions: SessionFactory, store: Store,
    activity_executor: ThreadPoolExecutor, tmp_path: Path,
) -> None:
    customer = f"acme-{uuid.uuid4().hex[:8]}"
    small, large, middle = aws.instance(), aws.instance(), aws.instance()
    saved = hub_file(tmp_path / "recs.json", {small: 5.0, large: 50.0, middle: 20.0})
    queue = f"import-{uuid.uuid4()}"
    async with build_worker(skipping_env.client, task_queue=queue, sessions=sessions, store=store,
                            executor=activity_executor, max_concurrent_activities=8):
        imports, plans = Imports(skipping_env.client, queue), Plans(skipping_env.client, queue, store)
        first = await imports.wait(await imports.start(file_import(customer, saved, max_items=2)), timeout=60)
        assert first.status == "COMPLETED" and first.customer_id == customer, first
        result = first.result
        assert result is not None and result.source == "cost-optimization-hub"
        assert (result.counts.new, result.counts.updated, result.found) == (3, 0, 3)
        assert sum(result.counts.unsupported.values()) == 1
        assert result.new_ids == [f"coh-rec-{i}" for i in (large, middle, small)]  # largest savings first
        assert result.plan_id == first.import_id and result.planned == 2  # capped at --max-items
        view = await plans.wait(result.plan_id, timeout=60)
        assert view.status is PlanStatus.AWAITING_APPROVAL and view.dry_run and view.counts == {"PLANNED": 2}
        assert view.customer_ids == [customer]
        assert all(aws.instance_state(i)[0] == "running" for i in (small, large, middle))

        # The same answer again: nothing new, and only the one not planned yet is still NEW.
        again = await imports.wait(await imports.start(file_import(customer, saved, max_items=5)), timeout=60)
        assert again.result is not None and (again.result.counts.new, again.result.counts.unchanged) == (0, 3)
        assert again.result.new_ids == [f"coh-rec-{small}"] and again.result.planned == 1
        assert again.result.plan_id is not None
        assert (await plans.wait(again.result.plan_id, timeout=60)).counts == {"PLANNED": 1}
        left = await store.list_recommendations(customer_id=customer, status=NEW)
        assert left == []

        nothing = await imports.wait(await imports.start(file_import(customer, saved, max_items=5)), timeout=60)
        assert nothing.result is not None and nothing.result.plan_id is None
        assert nothing.result.plan_note == "no NEW recommendation: no plan opened"

        missing = await imports.wait(await imports.start(file_import(customer, str(tmp_path / "gone.json"))),
                                     timeout=60)
        assert missing.status == "FAILED" and "no such file" in (missing.error or ""), missing


async def test_schedule_create_fire_trigger_pause_list_delete_on_the_dev_server(
    stack: Stack, aws: AwsAccount, tmp_path: Path,
) -> None:
    customer = f"acme-{uuid.uuid4().hex[:8]}"
    instance = aws.instance()
    saved = hub_file(tmp_path / "recs.json", {instance: 30.0})
    imports = Imports(stack.client, stack.task_queue)
    name = f"weekly-{uuid.uuid4().hex[:8]}"
    view = await imports.create_schedule(name, file_import(customer, saved, max_items=10), "0 6 * * MON")
    assert view.cron == "0 6 * * MON" and not view.paused and view.input.schedule == name
    assert view.next_runs and all(t.weekday() == 0 and t.hour == 6 for t in view.next_runs)

    await imports.trigger_schedule(name)
    started = await imports.triggered_import(name, [])
    assert started.startswith(f"import-{name}-")
    done = await imports.wait(started, timeout=60)
    assert done.result is not None and done.result.counts.new == 1 and done.result.plan_id == started
    plan = await Plans(stack.client, stack.task_queue, stack.store).wait(started, timeout=60)
    assert plan.status is PlanStatus.AWAITING_APPROVAL and plan.counts == {"PLANNED": 1}

    paused = await imports.pause_schedule(name, True, "holiday")
    assert paused.paused and paused.note == "holiday"
    assert not (await imports.pause_schedule(name, False)).paused
    listed = await _listed(imports, name)
    assert listed.input.customer_id == customer and listed.recent == [started]
    assert name not in [v.name for v in await imports.list_schedules(frozenset({"someone-else"}))]
    await imports.delete_schedule(name)
    assert name not in [v.name for v in await imports.list_schedules()]

    # A schedule fires by its spec alone (every second here), then is deleted.
    every = f"often-{uuid.uuid4().hex[:8]}"
    await imports.create_schedule(every, file_import(customer, saved), "@every 1s")
    fired = await imports.triggered_import(every, [], timeout=30)
    await imports.delete_schedule(every)
    result = (await imports.wait(fired, timeout=60)).result
    assert result is not None and result.counts.unchanged == 1 and result.plan_id is None


async def _listed(imports: Imports, name: str) -> Any:
    from starter.polling import poll

    views = await poll(imports.list_schedules, lambda vs: name in [v.name for v in vs], interval=0.2,
                       max_interval=1.0, backoff=1.5, timeout=30)
    return next(v for v in views if v.name == name)


async def test_imports_and_schedules_over_http_with_roles_and_tenants(api: Api, aws: AwsAccount) -> None:
    body = {"source": "coh", "customer_id": api.acme}
    assert (await api.call("globex-operator", "POST", "/api/v1/imports", json=body)).status_code == 403
    assert (await api.call("viewer", "POST", "/api/v1/imports", json=body)).status_code == 403
    bad = await api.call("operator", "POST", "/api/v1/imports", json={**body, "lookback_days": 3})
    assert bad.status_code == 422 and "scan" in bad.text
    started = await api.call("operator", "POST", "/api/v1/imports",
                             json={"source": "scan", "customer_id": api.acme, "regions": [REGION]})
    assert started.status_code == 202, started.text
    import_id = started.json()["import_id"]
    assert (await api.call("globex-operator", "GET", f"/api/v1/imports/{import_id}")).status_code == 404
    status = await Imports(api.stack.client, api.stack.task_queue).wait(import_id, timeout=60)
    assert status.status == "COMPLETED", status
    got = await api.call("viewer", "GET", f"/api/v1/imports/{import_id}")
    assert got.status_code == 200 and got.json()["result"]["source"] == "reclaim-scan"
    assert set(got.json()["result"]["counts"]) >= {"new", "updated", "stale", "unsupported", "invalid"}
    assert (await api.call("viewer", "GET", "/api/v1/imports/import-nothing")).status_code == 404

    name = f"api-{uuid.uuid4().hex[:8]}"
    schedule = {"name": name, "cron": "0 6 * * MON", "source": "ta", "customer_id": api.acme,
                "plan": {"max_items": 5}}
    assert (await api.call("viewer", "POST", "/api/v1/schedules", json=schedule)).status_code == 403
    assert (await api.call("globex-operator", "POST", "/api/v1/schedules", json=schedule)).status_code == 403
    cron = await api.call("operator", "POST", "/api/v1/schedules", json={**schedule, "cron": "not a cron"})
    assert cron.status_code == 422, cron.text
    created = await api.call("operator", "POST", "/api/v1/schedules", json=schedule)
    assert created.status_code == 201 and created.json()["input"]["plan"]["max_items"] == 5, created.text
    assert (await api.call("operator", "POST", "/api/v1/schedules", json=schedule)).status_code == 409
    assert (await api.call("globex-operator", "GET", f"/api/v1/schedules/{name}")).status_code == 404
    assert (await api.call("viewer", "POST", f"/api/v1/schedules/{name}/pause", json={})).status_code == 403
    paused = await api.call("operator", "POST", f"/api/v1/schedules/{name}/pause", json={"note": "wait"})
    assert paused.status_code == 200 and paused.json()["paused"] is True
    resumed = await api.call("operator", "POST", f"/api/v1/schedules/{name}/resume", json={})
    assert resumed.json()["paused"] is False
    triggered = await api.call("operator", "POST", f"/api/v1/schedules/{name}/trigger")
    assert triggered.status_code == 202, triggered.text
    fired = await Imports(api.stack.client, api.stack.task_queue).wait(triggered.json()["import_id"], timeout=60)
    assert fired.status == "FAILED" and "trusted-advisor" in (fired.error or "")  # moto has no Trusted Advisor
    for _ in range(300):
        listed = await api.call("viewer", "GET", "/api/v1/schedules")
        if name in [s["name"] for s in listed.json()]:
            break
        await asyncio.sleep(0.1)  # Temporal lists schedules from its visibility store: a moment behind
    assert name in [s["name"] for s in listed.json()]
    assert name not in [s["name"] for s in (await api.call("globex-operator", "GET", "/api/v1/schedules")).json()]
    assert (await api.call("globex-operator", "DELETE", f"/api/v1/schedules/{name}")).status_code == 404
    assert (await api.call("operator", "DELETE", f"/api/v1/schedules/{name}")).status_code == 204
    assert (await api.call("viewer", "GET", f"/api/v1/schedules/{name}")).status_code == 404


async def test_from_a_hub_export_to_an_approved_plan_in_five_commands(
    cli: Cli, stack: Stack, aws: AwsAccount, tmp_path: Path,
) -> None:
    """The README's five commands, with the hub's saved output instead of a live hub (moto has none)."""
    customer = f"acme-{uuid.uuid4().hex[:8]}"
    instances = [aws.instance(), aws.instance()]
    saved = hub_file(tmp_path / "recs.json", {i: 10.0 + n for n, i in enumerate(instances)})
    name = f"coh-{uuid.uuid4().hex[:8]}"
    succeeded(await cli("import", "--from", "file", "--file", saved, "--customer", customer, "--save"))
    listed = succeeded(await cli("recommendations", "list", "--source", "cost-optimization-hub", "--status", "NEW",
                                 "--customer", customer, "--json")).json()
    assert len(listed) == 2
    created = succeeded(await cli("schedule", "create", name, "--source", "file", "--file", saved, "--customer",
                                  customer, "--cron", "0 6 * * MON", "--plan", "dry-run", "--max-items", "20",
                                  "--now", "--wait", timeout=120))
    plan_id = created.stdout.split("dry-run plan ")[1].split(": ")[0]
    assert plan_id.startswith(f"import-{name}-") and "2 NEW recommendations" in created.stdout, created
    succeeded(await cli("plan", "approve", plan_id, "--as", "bob"))
    await Plans(stack.client, stack.task_queue, stack.store).wait(plan_id, {PlanStatus.COMPLETED}, timeout=60)
    report = succeeded(await cli("plan", "report", plan_id, "--format", "json")).json()
    assert report["status"] == "COMPLETED" and report["approved_by"] == "bob"
    assert all(aws.instance_state(i)[0] == "stopped" for i in instances)

    assert "paused" in succeeded(await cli("schedule", "pause", name)).stdout
    again = succeeded(await cli("schedule", "trigger", name, "--wait", "--json", timeout=120)).json()
    assert again["status"]["result"]["counts"]["held"] == 2 and again["status"]["result"]["plan_id"] is None
    assert "already exists" in failed(await cli("schedule", "create", name, "--source", "coh", "--cron", "0 6 * * *"))
    succeeded(await cli("schedule", "delete", name))
    assert "no schedule" in failed(await cli("schedule", "delete", name))
