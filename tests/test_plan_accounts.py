"""A running plan and the worker's accounts file (PLAN_TELLS_AND_HOLDS), on the real dev server and moto:
an account disabled mid-plan has its items held while the other account's complete, and released
when it is enabled again; a hold is bounded (SKIPPED after the plan's pause_timeout); each item runs
under its account's policy overrides."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from temporalio.client import Client

from activities.accounts import AccountsSource
from activities.aws import SessionFactory
from activities.faults import FaultInjector
from domain.accounts import Account, AccountsFile, PolicyOverrides
from domain.execution import ApprovalInput, execution_id_for
from domain.manual import AWAITING_CONFIRMATION, ManualDecision
from domain.plan import PLAN_TERMINAL, PlanSpec, PlanStatus, PlanView
from domain.policy import Policy, Role
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus as S
from starter.executions import Executions
from starter.plan_cli import progress_table
from starter.plans import Plans, account_policies
from starter.polling import poll
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import REGION, activity_names, recommendation
from worker import build_worker

A, B = "111111111111", "222222222222"
FAST = {"step_timeout": timedelta(seconds=20), "verify_timeout": timedelta(seconds=20),
        "rollback_window": timedelta(0)}


def write_accounts(path: Path, *, a_enabled: bool = True, a_policy: str = "") -> None:
    path.write_text("defaults:\n  role_arn: arn:aws:iam::{account_id}:role/ReclaimExecutor\naccounts:\n"
                    f"  - {{id: \"{A}\", name: shop-a, customer: acme, enabled: {str(a_enabled).lower()}{a_policy}}}\n"
                    f"  - {{id: \"{B}\", name: shop-b, customer: acme}}\n")


@dataclass
class Org:
    plans: Plans
    executions: Executions
    accounts: Path


@pytest.fixture
def accounts_path(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.yaml"
    write_accounts(path)
    return path


@pytest.fixture
def sessions(moto_endpoint: str, faults: FaultInjector, accounts_path: Path) -> SessionFactory:
    """Each execution assumes its account's role (moto keeps each account's instances apart)."""
    return SessionFactory(endpoint_url=moto_endpoint, session_hooks=[faults.install],
                          accounts=AccountsSource(accounts_path))


@pytest_asyncio.fixture
async def org(client: Client, sessions: SessionFactory, store: Store, aws: AwsAccount, accounts_path: Path,
              activity_executor: ThreadPoolExecutor) -> AsyncIterator[Org]:
    """A worker and a submitter reading the same accounts file."""
    path = accounts_path
    task_queue = f"plan-accounts-{uuid.uuid4()}"
    worker = build_worker(client, task_queue=task_queue, sessions=sessions, store=store, executor=activity_executor,
                          max_concurrent_activities=16, accounts=AccountsSource(path))
    async with worker:
        yield Org(Plans(client, task_queue, store, accounts=AccountsSource(path)), Executions(client, task_queue), path)


def _ec2(endpoint: str, account: str) -> Any:
    """EC2 in `account` (us-east-1), the operator's way: an assumed role there."""
    creds = boto3.client("sts", region_name=REGION, endpoint_url=endpoint).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="seed")["Credentials"]
    return boto3.client("ec2", region_name=REGION, endpoint_url=endpoint, aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])


def _stop(aws: AwsAccount, account: str) -> Recommendation:
    """A running m5.large in `account` and the recommendation to stop it."""
    instance = _ec2(aws.endpoint, account).run_instances(
        ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1, InstanceType="m5.large")["Instances"][0]["InstanceId"]
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    return rec.model_copy(update={"account_id": account})


def _state(aws: AwsAccount, rec: Recommendation) -> str:
    reservations = _ec2(aws.endpoint, rec.account_id).describe_instances(InstanceIds=[rec.resource_id])
    return str(reservations["Reservations"][0]["Instances"][0]["State"]["Name"])


def _gated(first: list[Recommendation], then: list[Recommendation], **rate: Any) -> PlanSpec:
    """Wave `first` with a manual gate, then wave `then`: the accounts file is edited at the gate."""
    gate = {"kind": "manual", "id": "gate", "role": "operator", "timeout": "PT10M", "instructions": "Go ahead?"}
    return PlanSpec.model_validate({
        "recommendations": [r.model_dump(mode="json") for r in [*first, *then]], "manual": [gate],
        "options": FAST, "rate": {"hold_recheck": 1, **rate}, "strategy": "waves", "waves": [
            {"name": "first", "items": ["gate", *(r.id for r in first)]},
            {"name": "then", "items": [r.id for r in then], "depends_on": ["first"]}]})


async def _view(plans: Plans, plan_id: str, ready: Any, timeout: float = 120) -> PlanView:
    view: PlanView = await poll(lambda: plans.progress(plan_id), ready, interval=0.1, timeout=timeout,
                                too_long=lambda v: AssertionError(f"{v.status.value} {v.counts}: {v.events[-5:]}"))
    return view


async def _through_the_gate(org: Org, plan_id: str) -> None:
    # Account A's first item runs while A is enabled; the gate waits for a person.
    await _view(org.plans, plan_id, lambda v: v.counts == {AWAITING_CONFIRMATION: 1, S.COMPLETED.value: 1})
    write_accounts(org.accounts, a_enabled=False)  # the kill switch, mid-plan
    await org.plans.answer(plan_id, True, ManualDecision(item="gate", actor="olga", role=Role.OPERATOR))


async def _runs(org: Org, plan_id: str) -> int:
    query = f"WorkflowId = '{org.plans.handle(plan_id).id}'"
    return len([e async for e in org.plans.client.list_workflows(query)])


def _rendered(view: PlanView) -> str:
    console = Console(file=io.StringIO(), width=200)
    console.print(progress_table(view))
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


async def test_a_disabled_account_holds_its_items_while_the_rest_completes_then_enabled_releases_them(
    org: Org, aws: AwsAccount
) -> None:
    then_a, then_b = [_stop(aws, A) for _ in range(2)], [_stop(aws, B) for _ in range(2)]
    # A short history: the plan continues as new while it holds items, and the next run picks them up.
    plan_id = (await org.plans.submit(_gated([_stop(aws, A)], [*then_a, *then_b]), requested_by="alice",
                                      history_limit=100)).plan_id
    await _through_the_gate(org, plan_id)

    held = await _view(org.plans, plan_id, lambda v: v.counts.get(S.COMPLETED.value) == 3)
    assert held.counts == {"CONFIRMED": 1, S.COMPLETED.value: 3, "HELD": 2}, held.counts
    assert held.status is PlanStatus.RUNNING and held.running == 0
    [account] = held.held
    assert account.account_id == A and len(account.positions) == 2 and "disabled" in account.reason
    assert all(_state(aws, r) == "running" for r in then_a)
    assert all(_state(aws, r) == "stopped" for r in then_b)
    assert f"account {A}: 2 items held" in _rendered(held)

    # Asked again on its timer, still disabled: still held, also by the run it continues as new into
    # (its first run's history is short), which loads the held items again by position.
    await poll(lambda: _runs(org, plan_id), lambda n: n >= 2, interval=0.2, timeout=60)
    handle = org.plans.handle(plan_id)

    async def asked() -> int:
        return activity_names(await handle.fetch_history()).count("check_plan_accounts")

    await poll(asked, lambda n: n >= 2, interval=0.2, timeout=30)
    assert "load_plan_items" in activity_names(await handle.fetch_history())
    assert (await org.plans.progress(plan_id)).counts.get("HELD") == 2

    write_accounts(org.accounts, a_enabled=True)
    done = await org.plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert done.status is PlanStatus.COMPLETED, done.reason
    assert done.counts == {"CONFIRMED": 1, S.COMPLETED.value: 5} and done.held == []
    assert all(_state(aws, r) == "stopped" for r in then_a)
    assert any(f"account {A} is allowed again" in e.message for e in done.events)


async def test_a_hold_ends_after_the_pause_timeout_with_its_items_skipped(org: Org, aws: AwsAccount) -> None:
    then_a, then_b = [_stop(aws, A)], [_stop(aws, B)]
    spec = _gated([_stop(aws, A)], [*then_a, *then_b], pause_timeout=3)
    plan_id = (await org.plans.submit(spec, requested_by="alice")).plan_id
    await _through_the_gate(org, plan_id)

    done = await org.plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    # Not a failure: nothing ran there; the plan says not everything was done.
    assert done.status is PlanStatus.COMPLETED_WITH_FAILURES, done.reason
    assert done.counts == {"CONFIRMED": 1, S.COMPLETED.value: 2, "SKIPPED": 1} and done.failures == 0
    assert _state(aws, then_a[0]) == "running"
    report = await org.plans.report(plan_id)
    [skipped] = [line for line in report.items if line.status == "SKIPPED"]
    assert skipped.recommendation_id == then_a[0].id
    assert skipped.reason is not None and skipped.reason.startswith("held for 0:00:03 and never allowed: account")
    assert "disabled" in skipped.reason


async def test_each_item_runs_under_its_accounts_policy(org: Org, aws: AwsAccount) -> None:
    write_accounts(org.accounts, a_policy=", policy: {auto_approve_max_monthly_savings: 0}")
    strict, relaxed = _stop(aws, A), _stop(aws, B)
    spec = PlanSpec.model_validate({"recommendations": [r.model_dump(mode="json") for r in (strict, relaxed)],
                                    "options": FAST})
    plan_id = (await org.plans.submit(spec, requested_by="alice")).plan_id
    view = await _view(org.plans, plan_id, lambda v: v.counts == {"AWAITING_APPROVAL": 1, S.COMPLETED.value: 1})
    assert view.awaiting_person == 1
    waiting = await org.executions.wait(execution_id_for(strict.id), until=frozenset({S.AWAITING_APPROVAL}))
    assert waiting.status is S.AWAITING_APPROVAL  # A's threshold 0: a person decides
    assert (await org.executions.status(execution_id_for(relaxed.id))).status is S.COMPLETED  # B's default: auto

    await org.executions.decide(execution_id_for(strict.id), True, ApprovalInput(actor="bob", role=Role.APPROVER))
    assert (await org.plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)).status is PlanStatus.COMPLETED


@given(threshold=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
       refuse=st.one_of(st.none(), st.booleans()), cooldown=st.one_of(st.none(), st.floats(min_value=0, max_value=90)))
def test_a_plan_carries_a_policy_only_for_accounts_whose_overrides_change_it(
    threshold: float | None, refuse: bool | None, cooldown: float | None
) -> None:
    overrides = PolicyOverrides(auto_approve_max_monthly_savings=threshold, refuse_production=refuse,
                                cooldown_days=cooldown)
    file = AccountsFile(accounts=[Account(id=A, name="a", customer="acme", policy=overrides),
                                  Account(id=B, name="b", customer="acme")])
    base = Policy()
    recs = [recommendation("ec2.stop", "i-1").model_copy(update={"account_id": account}) for account in (A, B)]
    mapped = account_policies(file, base, recs)
    assert set(mapped) <= {A}
    assert mapped.get(A, base) == file.policy_for(A, base) == overrides.apply(base)
    assert account_policies(None, base, recs) == {}
