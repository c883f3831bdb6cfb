"""Savings checked (issue 15): the SavingsCheck workflow on the time-skipping server, and
`measure_savings` from Cost Explorer (moto's answers; AWS's resource-level shape on botocore's
Stubber) or, failing that, from the price table and the resource as it is now (moto's EC2)."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from botocore.stub import Stubber
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.actions.base import action_class
from activities.aws import SessionFactory
from activities.faults import FaultInjector, FaultRule
from activities.savings import CE_REGION, SavingsActivities
from domain import pricing
from domain.execution import Observation
from domain.savings import (
    MeasureInput,
    MeasureMethod,
    SavingsCheckInput,
    SavingsCheckRow,
    accuracy,
    daily_costs,
    price_table_measure,
    resource_filter,
    windows,
)
from store.repository import Store
from tests.conftest import ACCOUNT, REGION, AwsAccount
from worker import build_worker
from workflows.savings import SavingsCheckWorkflow, savings_check_id

END = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
START = END - timedelta(days=30)
M5_LARGE = round(pricing.ec2_monthly(REGION, "m5.large") or 0.0, 2)  # 70.08


def observe(sessions: SessionFactory, kind: str, resource_id: str) -> Observation:
    return action_class(kind).resource.observe(lambda s: sessions.client(ACCOUNT, REGION, s), resource_id)


def check(kind: str, resource_id: str, estimated: float, *, before: Observation | None = None,
          **extra: Any) -> SavingsCheckInput:
    return SavingsCheckInput(execution_id=f"exec-{uuid.uuid4().hex[:12]}", customer_id="acme", account_id=ACCOUNT,
                             region=REGION, kind=kind, resource_id=resource_id, estimated_monthly_savings=estimated,
                             verified_monthly_savings=estimated, observed_before=before, **extra)


def ce_days(first: datetime, days: int, amount: float) -> dict[str, Any]:
    """One Cost Explorer answer as moto gives it back: a Total per day, no groups."""
    return {"ResultsByTime": [
        {"TimePeriod": {"Start": (first + timedelta(days=n)).date().isoformat(),
                        "End": (first + timedelta(days=n + 1)).date().isoformat()},
         "Total": {"UnblendedCost": {"Amount": f"{amount}", "Unit": "USD"}}, "Groups": [], "Estimated": False}
        for n in range(days)]}


def queue_ce(endpoint: str, *answers: dict[str, Any]) -> None:
    """moto hands these out in order, one per distinct request (the before window is asked first)."""
    response = requests.post(f"{endpoint}/moto-api/static/ce/cost-and-usage-results",
                             json={"results": list(answers)}, timeout=10)
    assert response.status_code == 201


async def measure(sessions: SessionFactory, store: Store, c: SavingsCheckInput,
                  start: datetime = START, end: datetime = END) -> Any:
    activities = SavingsActivities(sessions, store)
    return await ActivityEnvironment().run(activities.measure_savings,
                                           MeasureInput(check=c, period_start=start, period_end=end))


# -- the workflow ------------------------------------------------------------------------------


async def test_the_check_waits_30_days_in_a_moment_and_records_a_measurement(
    skipping_env: WorkflowEnvironment, aws: AwsAccount, sessions: SessionFactory, store: Store,
    activity_executor: ThreadPoolExecutor,
) -> None:
    instance = aws.instance("m5.large")
    before = observe(sessions, "ec2.stop", instance)
    aws.ec2.stop_instances(InstanceIds=[instance])
    c = check("ec2.stop", instance, M5_LARGE, before=before)
    queue = f"savings-{uuid.uuid4()}"
    async with build_worker(skipping_env.client, task_queue=queue, sessions=sessions, store=store,
                            executor=activity_executor, max_concurrent_activities=4):
        handle = await skipping_env.client.start_workflow(
            SavingsCheckWorkflow.run, c, id=savings_check_id(c.execution_id), task_queue=queue)
        assert handle.id == f"savings-{c.execution_id}"
        assert await handle.query(SavingsCheckWorkflow.measurement) is None  # still waiting
        measured = await asyncio.wait_for(handle.result(), timeout=60)
        assert await handle.query(SavingsCheckWorkflow.measurement) == measured
    assert measured.period_end - measured.period_start >= timedelta(days=30)
    assert measured.method is MeasureMethod.PRICE_TABLE  # moto's Cost Explorer has no cost rows for it
    assert measured.measured_monthly_savings == M5_LARGE and measured.accuracy == 1.0
    assert any("no resource-level cost" in e for e in measured.evidence)
    assert await store.measurements.get(c.execution_id) == measured


# -- Cost Explorer ---------------------------------------------------------------------------


async def test_cost_explorer_before_and_after_the_change(
    aws: AwsAccount, moto_endpoint: str, sessions: SessionFactory, store: Store,
) -> None:
    volume = aws.volume(size=500, volume_type="gp2")
    before_window, after_window = windows(START, END, timedelta(days=7)) or pytest.fail("no windows")
    # $50/month before (500 GiB gp2), $40.5 after: $9.50 a month less, against $10 estimated.
    per_month = pricing.hours_per_month() / 24
    queue_ce(moto_endpoint, ce_days(datetime.combine(before_window.start, datetime.min.time()), 7, 50 / per_month),
             ce_days(datetime.combine(after_window.start, datetime.min.time()), 7, 40.5 / per_month))
    c = check("ebs.gp2_to_gp3", volume, 10.0)
    measured = await measure(sessions, store, c)
    assert measured.method is MeasureMethod.COST_EXPLORER
    assert measured.measured_monthly_savings == pytest.approx(9.5, abs=0.01)
    assert measured.accuracy == pytest.approx(0.95, abs=0.001)
    assert "7 days) before the change" in measured.evidence[0]
    assert await store.measurements.get(c.execution_id) == measured


async def test_aws_resource_level_shape_through_the_session_factory(
    aws: AwsAccount, sessions: SessionFactory, store: Store,
) -> None:
    """AWS keeps RESOURCE_ID for GetCostAndUsageWithResources: a plain call it refuses is asked again
    that way, and its grouped answer (Total empty, the cost in the resource's group) is read."""
    instance = aws.instance("m5.large")
    c = check("ec2.stop", instance, M5_LARGE)
    before_window, after_window = windows(START, END, c.window) or pytest.fail("no windows")
    ce = sessions.client(ACCOUNT, CE_REGION, "ce")

    def grouped(window_start: Any, amount: str) -> dict[str, Any]:
        return {"GroupDefinitions": [{"Type": "DIMENSION", "Key": "RESOURCE_ID"}], "ResultsByTime": [
            {"TimePeriod": {"Start": (window_start + timedelta(days=n)).isoformat(),
                            "End": (window_start + timedelta(days=n + 1)).isoformat()},
             "Total": {}, "Estimated": n == 6,
             "Groups": [{"Keys": [instance], "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}}]}
            for n in range(7)]}

    with Stubber(ce) as stub:
        for window, amount in ((before_window, "2.304"), (after_window, "0")):
            query = {"TimePeriod": window.period(), "Granularity": "DAILY", "Metrics": ["UnblendedCost"],
                     "Filter": resource_filter(instance, ACCOUNT)}
            stub.add_client_error("get_cost_and_usage", service_error_code="ValidationException",
                                  service_message="RESOURCE_ID is only available in GetCostAndUsageWithResources",
                                  expected_params=query)
            stub.add_response("get_cost_and_usage_with_resources", grouped(window.start, amount), query)
        measured = await measure(sessions, store, c)
        stub.assert_no_pending_responses()
    assert measured.method is MeasureMethod.COST_EXPLORER
    assert measured.measured_monthly_savings == M5_LARGE
    assert "some days still estimated by AWS" in measured.evidence[0]


# -- the price table -------------------------------------------------------------------------


async def test_access_denied_by_cost_explorer_measures_from_the_price_table(
    aws: AwsAccount, sessions: SessionFactory, store: Store, faults: FaultInjector,
) -> None:
    faults.rules.append(FaultRule("GetCostAndUsage", "AccessDeniedException", message="no ce:GetCostAndUsage"))
    instance = aws.instance("m5.large")
    c = check("ec2.stop", instance, M5_LARGE, before=observe(sessions, "ec2.stop", instance))
    aws.ec2.stop_instances(InstanceIds=[instance])
    measured = await measure(sessions, store, c)
    assert measured.method is MeasureMethod.PRICE_TABLE
    assert measured.measured_monthly_savings == M5_LARGE
    assert "AccessDeniedException" in measured.evidence[0]
    assert "before the change m5.large running $70.08/month; now m5.large stopped $0.00/month" in measured.evidence[1]
    assert faults.calls.get("GetCostAndUsage") == 1


async def test_a_change_undone_since_measures_zero_and_says_so(
    aws: AwsAccount, sessions: SessionFactory, store: Store, faults: FaultInjector,
) -> None:
    faults.rules.append(FaultRule("GetCostAndUsage", "AccessDeniedException"))
    instance = aws.instance("m5.large")
    before = observe(sessions, "ec2.stop", instance)
    aws.ec2.stop_instances(InstanceIds=[instance])
    after = observe(sessions, "ec2.stop", instance)
    aws.ec2.start_instances(InstanceIds=[instance])  # someone started it again
    measured = await measure(sessions, store, check("ec2.stop", instance, M5_LARGE, before=before,
                                                     observed_after=after))
    assert measured.measured_monthly_savings == 0.0 and measured.accuracy == 0.0
    said = " ".join(measured.evidence)
    assert "the change no longer holds" in said and "saves nothing" in said
    assert "state was 'stopped', now 'running'" in said


async def test_still_gp3_and_still_deleted(aws: AwsAccount, sessions: SessionFactory, store: Store,
                                           faults: FaultInjector) -> None:
    faults.rules.append(FaultRule("GetCostAndUsage", "DataUnavailableException"))
    moved = aws.volume(size=100, volume_type="gp2")
    gp2 = observe(sessions, "ebs.gp2_to_gp3", moved)
    aws.ec2.modify_volume(VolumeId=moved, VolumeType="gp3")
    kept = await measure(sessions, store, check("ebs.gp2_to_gp3", moved, 2.0, before=gp2))
    assert (kept.method, kept.measured_monthly_savings) == (MeasureMethod.PRICE_TABLE, 2.0)  # $10 -> $8
    assert "now gp3 100 GiB" in kept.evidence[-1]

    deleted = aws.volume(size=100, volume_type="gp2")
    seen = observe(sessions, "ebs.delete", deleted)
    aws.ec2.delete_volume(VolumeId=deleted)
    gone = await measure(sessions, store, check("ebs.delete", deleted, 5.0, before=seen))
    assert gone.measured_monthly_savings == 10.0  # the whole volume (its snapshot was cleaned up)
    assert "now gone $0.00/month" in gone.evidence[-1]


# -- pure parts ------------------------------------------------------------------------------


def test_daily_costs_read_both_shapes_and_skip_days_without_data() -> None:
    moto = [{"TimePeriod": {"Start": "2026-11-01"}, "Total": {"BlendedCost": {"Amount": "1.5"}}, "Groups": []},
            {"TimePeriod": {"Start": "2026-11-02"}, "Total": {}, "Groups": []}]
    assert [(d.day, d.amount) for d in daily_costs(moto, "i-1")] == [("2026-11-01", 1.5)]
    aws = [{"TimePeriod": {"Start": "2026-11-01"}, "Total": {}, "Estimated": True, "Groups": [
        {"Keys": ["i-1"], "Metrics": {"UnblendedCost": {"Amount": "2"}}},
        {"Keys": ["i-2"], "Metrics": {"UnblendedCost": {"Amount": "7"}}}]}]
    (day,) = daily_costs(aws, "i-1")
    assert (day.amount, day.estimated) == (2.0, True)


def test_windows_leave_out_the_partial_days_and_need_room_after_the_change() -> None:
    before, after = windows(START, END, timedelta(days=7)) or pytest.fail("no windows")
    assert (before.start.isoformat(), before.end.isoformat()) == ("2026-10-29", "2026-11-05")
    assert (after.start.isoformat(), after.end.isoformat()) == ("2026-11-28", "2026-12-05")
    assert windows(END - timedelta(days=3), END, timedelta(days=7)) is None


def test_usage_billed_kinds_keep_the_verified_figure_only_while_the_change_holds() -> None:
    c = check("lambda.memory", "fn", 4.0, before=Observation(state={"memory_size": 1024}),
              observed_after=Observation(state={"memory_size": 512}))
    held, why = price_table_measure(c, "AWS::Lambda::Function", Observation(state={"memory_size": 512}))
    assert held == 4.0 and "verified figure $4.00/month stands" in why[-1]
    undone, why = price_table_measure(c, "AWS::Lambda::Function", Observation(state={"memory_size": 1024}))
    assert undone == 0.0 and "no longer holds" in why[0]
    nothing, why = price_table_measure(check("lambda.memory", "fn", 4.0), "AWS::Lambda::Function", None)
    assert nothing is None and "nothing observed" in why[-1]


def test_accuracy_per_kind_and_account() -> None:
    def row(n: int, kind: str, account: str, estimated: float, measured: float | None,
            method: MeasureMethod | None = None) -> SavingsCheckRow:
        return SavingsCheckRow(execution_id=f"e{n}", customer_id="acme", account_id=account, kind=kind,
                               estimated_monthly_savings=estimated, verified_monthly_savings=estimated,
                               measured_monthly_savings=measured, method=method, completed_at=START)

    table = accuracy([row(1, "ec2.stop", "111111111111", 100, 80, MeasureMethod.COST_EXPLORER),
                      row(2, "ec2.stop", "111111111111", 100, 100, MeasureMethod.PRICE_TABLE),
                      row(3, "ec2.stop", "111111111111", 50, None),
                      row(4, "ebs.delete", "222222222222", 10, 0, MeasureMethod.PRICE_TABLE)])
    stop = next(line for line in table.lines if line.kind == "ec2.stop")
    assert (stop.executions, stop.measured, stop.estimated_monthly, stop.measured_monthly) == (3, 2, 250, 180)
    assert stop.accuracy == 0.9 and stop.methods == {"cost-explorer": 1, "price-table": 1}
    assert table.total.accuracy == pytest.approx(180 / 210, abs=1e-4)
