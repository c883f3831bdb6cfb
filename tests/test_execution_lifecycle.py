"""ExecutionWorkflow end to end on the real dev server, a real worker and moto."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from domain.execution import ApprovalInput, RollbackInput
from domain.policy import Role
from domain.status import ExecutionStatus as S
from starter.executions import Refused, ResourceBusy
from tests.conftest import AwsAccount, Stack
from tests.helpers import activity_names, eventually, recommendation, request


async def test_stop_auto_approved_completes_and_is_findable(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance("m5.large")
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    started = await stack.executions.start(request(rec))
    view = await stack.executions.wait(started.execution_id)

    assert view.status is S.COMPLETED, view.reason
    assert aws.instance_state(instance) == ("stopped", "m5.large")
    assert view.rollback_available_until is not None
    assert S.AWAITING_APPROVAL not in {e.status for e in view.log}  # low risk: auto-approved
    history = await stack.executions.handle(started.execution_id).fetch_history()
    assert activity_names(history).count("apply") == 1
    assert activity_names(history).count("backup") == 1
    # The read model catches up with the status.
    async def stored_completed() -> bool:
        stored = await stack.store.get_execution(started.execution_id)
        return stored is not None and stored.status is S.COMPLETED

    await eventually(stored_completed)


async def test_production_resource_is_refused_and_nothing_changes(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance(tags={"Environment": "Production"})
    view = await stack.executions.wait(
        (await stack.executions.start(request(recommendation("ec2.stop", instance)))).execution_id
    )
    assert view.status is S.REJECTED_BY_VALIDATION
    assert "production" in (view.reason or "")
    assert aws.instance_state(instance)[0] == "running"


async def test_protect_tag_refused(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance(tags={"reclaim:protect": "true"})
    view = await stack.executions.wait(
        (await stack.executions.start(request(recommendation("ec2.stop", instance)))).execution_id
    )
    assert view.status is S.REJECTED_BY_VALIDATION
    assert "reclaim:protect" in (view.reason or "")
    assert aws.instance_state(instance)[0] == "running"


async def test_drift_refused(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance("m5.xlarge")
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    view = await stack.executions.wait((await stack.executions.start(request(rec))).execution_id)
    assert view.status is S.REJECTED_BY_VALIDATION
    assert "drift" in (view.reason or "")
    assert aws.instance_state(instance) == ("running", "m5.xlarge")


async def test_dry_run_checks_permissions_and_changes_nothing(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    before = aws.describe_instance(instance)
    view = await stack.executions.wait(
        (await stack.executions.start(request(recommendation("ec2.stop", instance), dry_run=True))).execution_id
    )
    assert view.status is S.PLANNED
    assert view.permission_report is not None and view.permission_report.allowed
    assert "ec2:StopInstances" in view.permission_report.checked
    assert view.permission_report.plan
    after = aws.describe_instance(instance)
    assert after["State"] == before["State"] and after["InstanceType"] == before["InstanceType"]
    history = await stack.executions.handle(view.execution_id).fetch_history()
    assert not {"backup", "apply", "revert"} & set(activity_names(history))


async def test_duplicate_submission_returns_the_same_execution(stack: Stack, aws: AwsAccount) -> None:
    rec = recommendation("ec2.stop", aws.instance())
    first = await stack.executions.start(request(rec))
    second = await stack.executions.start(request(rec))
    assert first.created and not second.created
    assert first.execution_id == second.execution_id
    await stack.executions.wait(first.execution_id)
    third = await stack.executions.start(request(rec))
    assert third.execution_id == first.execution_id and not third.created


async def test_busy_resource_is_refused(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    first = await stack.executions.start(request(recommendation("ec2.stop", instance), auto_approve=False))
    await stack.executions.wait(first.execution_id)  # parked awaiting approval, holding the lease
    with pytest.raises(ResourceBusy, match=first.execution_id):
        await stack.executions.start(request(recommendation("ec2.stop", instance)))


async def test_busy_resource_refused_inside_the_workflow_too(stack: Stack, aws: AwsAccount) -> None:
    """Two submissions racing past the client check: the lease workflow id decides."""
    instance = aws.instance()
    first = await stack.executions.start(request(recommendation("ec2.stop", instance), auto_approve=False))
    await stack.executions.wait(first.execution_id)
    rec = recommendation("ec2.stop", instance)
    from workflows.execution import ExecutionWorkflow

    handle = await stack.client.start_workflow(
        ExecutionWorkflow.run, request(rec), id=f"exec-{rec.id}", task_queue=stack.task_queue
    )
    view = await stack.executions.wait(handle.id)
    assert view.status is S.REJECTED_BY_VALIDATION
    assert "busy" in (view.reason or "")


@pytest.mark.parametrize("path", ["signal", "update"])
async def test_approval_by_a_second_person(stack: Stack, aws: AwsAccount, path: str) -> None:
    instance = aws.instance()
    started = await stack.executions.start(request(recommendation("ec2.stop", instance), auto_approve=False))
    view = await stack.executions.wait(started.execution_id)
    assert view.status is S.AWAITING_APPROVAL
    assert aws.instance_state(instance)[0] == "running"

    bob = ApprovalInput(actor="bob", role=Role.APPROVER, comment="looks idle")
    if path == "signal":
        from workflows.execution import ExecutionWorkflow

        await stack.executions.handle(started.execution_id).signal(ExecutionWorkflow.approve_signal, bob)
    else:
        record = await stack.executions.decide(started.execution_id, True, bob)
        assert record.accepted
    view = await stack.executions.wait(started.execution_id, until=frozenset({S.COMPLETED}))
    assert aws.instance_state(instance)[0] == "stopped"
    assert [(a.actor, a.accepted, a.via) for a in view.approvals] == [("bob", True, path)]


@pytest.mark.parametrize("path", ["signal", "update"])
async def test_self_approval_and_wrong_role_are_refused_and_recorded(
    stack: Stack, aws: AwsAccount, path: str
) -> None:
    from workflows.execution import ExecutionWorkflow

    instance = aws.instance()
    started = await stack.executions.start(request(recommendation("ec2.stop", instance), auto_approve=False))
    await stack.executions.wait(started.execution_id)
    handle = stack.executions.handle(started.execution_id)
    attempts = [ApprovalInput(actor="alice", role=Role.APPROVER), ApprovalInput(actor="carol", role=Role.OPERATOR)]
    for attempt in attempts:
        if path == "signal":
            await handle.signal(ExecutionWorkflow.approve_signal, attempt)
        else:
            with pytest.raises(Refused, match=r"cannot approve|role operator"):
                await stack.executions.decide(started.execution_id, True, attempt)
    view = await stack.executions.status(started.execution_id)
    assert view.status is S.AWAITING_APPROVAL
    assert aws.instance_state(instance)[0] == "running"
    if path == "signal":
        assert [(a.actor, a.accepted) for a in view.approvals] == [("alice", False), ("carol", False)]
        assert "cannot approve" in (view.approvals[0].refusal or "")
    else:
        # A rejected update never enters history; the client records the refusal in the store.
        history = await handle.fetch_history()
        assert not [e for e in history.events if e.HasField("workflow_execution_update_accepted_event_attributes")]
    await stack.executions.cancel(started.execution_id)


async def test_rejection_ends_without_change(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    started = await stack.executions.start(request(recommendation("ec2.stop", instance), auto_approve=False))
    await stack.executions.wait(started.execution_id)
    await stack.executions.decide(started.execution_id, False, ApprovalInput(actor="bob", role=Role.APPROVER, comment="needed for QA"))
    view = await stack.executions.wait(started.execution_id)
    assert view.status is S.REJECTED
    assert "needed for QA" in (view.reason or "")
    assert aws.instance_state(instance)[0] == "running"


async def test_approval_timeout_expires(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    rec = recommendation("ec2.stop", instance)
    started = await stack.executions.start(
        request(rec, auto_approve=False, approval_timeout=timedelta(seconds=1))
    )
    view = await stack.executions.wait(started.execution_id, until=frozenset({S.EXPIRED}))
    assert view.status is S.EXPIRED
    assert aws.instance_state(instance)[0] == "running"


async def test_cancel_while_awaiting_approval(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    started = await stack.executions.start(request(recommendation("ec2.stop", instance), auto_approve=False))
    await stack.executions.wait(started.execution_id)
    await stack.executions.cancel(started.execution_id)
    view = await stack.executions.wait(started.execution_id, until=frozenset({S.CANCELLED}))
    assert view.status is S.CANCELLED
    with pytest.raises(WorkflowFailureError):
        await stack.executions.handle(started.execution_id).result()
    description = await stack.executions.handle(started.execution_id).describe()
    assert description.status == WorkflowExecutionStatus.CANCELED
    assert aws.instance_state(instance)[0] == "running"
    # The lease is released: a new execution on the resource may start.
    assert await stack.executions.lease_holder("123456789012", "us-east-1", instance) is None


async def test_rollback_after_completion_restores(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance("m5.2xlarge")
    rec = recommendation("ec2.rightsize", instance,
                         {"expected_instance_type": "m5.2xlarge", "target_instance_type": "m5.large"})
    started = await stack.executions.start(request(rec))
    view = await stack.executions.wait(started.execution_id)
    assert view.status is S.AWAITING_APPROVAL  # a restart is MEDIUM risk
    await stack.executions.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    view = await stack.executions.wait(started.execution_id, until=frozenset({S.COMPLETED}))
    assert aws.instance_state(instance) == ("running", "m5.large")

    await stack.executions.rollback(started.execution_id, RollbackInput(actor="bob", reason="latency"))
    view = await stack.executions.wait(started.execution_id, until=frozenset({S.ROLLED_BACK}))
    assert aws.instance_state(instance) == ("running", "m5.2xlarge")
    assert "bob" in (view.reason or "")
    await stack.executions.handle(started.execution_id).result()
    description = await stack.executions.handle(started.execution_id).describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED


async def test_rollback_refused_when_not_completed(stack: Stack, aws: AwsAccount) -> None:
    started = await stack.executions.start(request(recommendation("ec2.stop", aws.instance()), auto_approve=False))
    await stack.executions.wait(started.execution_id)
    with pytest.raises(Refused, match="AWAITING_APPROVAL"):
        await stack.executions.rollback(started.execution_id, RollbackInput(actor="bob"))
    await stack.executions.cancel(started.execution_id)


async def test_rollback_window_end_cleans_up_backups(stack: Stack, aws: AwsAccount) -> None:
    volume = aws.volume(size=20)
    rec = recommendation("ebs.delete", volume, {"expected_size_gib": 20})
    started = await stack.executions.start(request(rec, rollback_window=timedelta(seconds=2)))
    view = await stack.executions.wait(started.execution_id)
    assert view.status is S.AWAITING_APPROVAL  # deleting data is never auto-approved
    await stack.executions.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    view = await stack.executions.wait(started.execution_id, until=frozenset({S.COMPLETED}))
    assert view.status is S.COMPLETED, view.reason
    assert len(aws.snapshots_for(started.execution_id)) == 1
    await stack.executions.handle(started.execution_id).result()
    assert aws.snapshots_for(started.execution_id) == []
    assert volume not in aws.volumes()


KINDS = {
    "ec2.stop": ("instance", {}),
    "ec2.rightsize": ("instance", {"expected_instance_type": "m5.large", "target_instance_type": "m5.medium"}),
    "ebs.delete": ("volume", {}),
    "ebs.gp2_to_gp3": ("volume", {}),
}


def _seed(aws: AwsAccount, what: str, tags: dict[str, str]) -> str:
    return aws.instance("m5.large", tags=tags) if what == "instance" else aws.volume(size=50, tags=tags)


def _snapshot_of(aws: AwsAccount, what: str, resource: str) -> object:
    if what == "instance":
        return aws.instance_state(resource)
    volume = aws.volumes()[resource]
    return (volume["State"], volume["VolumeType"], volume["Size"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tags", [{"reclaim:protect": "yes"}, {"Stage": "PROD-eu"}], ids=["protect", "production"])
async def test_every_kind_refuses_protected_resources(
    stack: Stack, aws: AwsAccount, kind: str, tags: dict[str, str]
) -> None:
    what, params = KINDS[kind]
    resource = _seed(aws, what, tags)
    before = _snapshot_of(aws, what, resource)
    view = await stack.executions.wait(
        (await stack.executions.start(request(recommendation(kind, resource, params)))).execution_id
    )
    assert view.status is S.REJECTED_BY_VALIDATION
    assert ("reclaim:protect" if "reclaim:protect" in tags else "production") in (view.reason or "")
    assert _snapshot_of(aws, what, resource) == before


@pytest.mark.parametrize("kind", KINDS)
async def test_every_kind_completes_through_the_workflow(stack: Stack, aws: AwsAccount, kind: str) -> None:
    what, params = KINDS[kind]
    resource = _seed(aws, what, {"team": "data"})
    started = await stack.executions.start(request(recommendation(kind, resource, params)))
    view = await stack.executions.wait(started.execution_id)
    if view.status is S.AWAITING_APPROVAL:
        await stack.executions.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
        view = await stack.executions.wait(started.execution_id, until=frozenset({S.COMPLETED, S.ROLLED_BACK}))
    assert view.status is S.COMPLETED, view.reason
    after = {
        "ec2.stop": lambda: aws.instance_state(resource) == ("stopped", "m5.large"),
        "ec2.rightsize": lambda: aws.instance_state(resource) == ("running", "m5.medium"),
        "ebs.delete": lambda: resource not in aws.volumes() and len(aws.snapshots_for(started.execution_id)) == 1,
        "ebs.gp2_to_gp3": lambda: aws.volumes()[resource]["VolumeType"] == "gp3",
    }[kind]
    assert after()


async def test_maintenance_window_waits_and_rechecks_the_policy(stack: Stack, aws: AwsAccount) -> None:
    """Auto-approved before the window; tagged production while waiting: a human must now decide."""
    from datetime import UTC, datetime

    from domain.execution import ExecutionOptions, ExecutionRequest
    from domain.policy import Policy

    instance = aws.instance()
    rec = recommendation("ec2.stop", instance)
    not_before = datetime.now(UTC) + timedelta(seconds=3)
    req = ExecutionRequest(recommendation=rec, requested_by="alice", policy=Policy(refuse_production=False),
                           options=ExecutionOptions(not_before=not_before))
    started = await stack.executions.start(req)
    view = await stack.executions.wait(started.execution_id, until=frozenset({S.SCHEDULED}), timeout=20)
    assert aws.instance_state(instance)[0] == "running"
    aws.ec2.create_tags(Resources=[instance], Tags=[{"Key": "env", "Value": "production"}])
    view = await stack.executions.wait(started.execution_id)
    assert view.status is S.AWAITING_APPROVAL
    assert any("production" in r for r in view.approval_reasons)
    assert aws.instance_state(instance)[0] == "running"
    await stack.executions.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    view = await stack.executions.wait(started.execution_id, until=frozenset({S.COMPLETED}))
    assert aws.instance_state(instance)[0] == "stopped"
    assert view.log[0].at <= not_before <= next(e.at for e in view.log if e.status is S.AWAITING_APPROVAL)


async def test_savings_ledger_records_the_change_and_a_rollback_reverses_it(stack: Stack, aws: AwsAccount) -> None:
    import uuid

    customer = f"ledger-{uuid.uuid4().hex[:8]}"
    instance = aws.instance("m5.large")
    rec = recommendation("ec2.stop", instance, savings=65.0, customer_id=customer)
    started = await stack.executions.start(request(rec))
    view = await stack.executions.wait(started.execution_id)
    assert view.status is S.COMPLETED
    assert view.actual_monthly_savings == pytest.approx(0.096 * 730)  # m5.large, us-east-1 list price

    async def ledger_has_it() -> bool:
        return (await stack.store.savings_summary(customer_id=customer)).executions == 1

    await eventually(ledger_has_it)
    summary = await stack.store.savings_summary(customer_id=customer)
    assert (summary.executions, summary.estimated_monthly) == (1, 65.0)
    assert summary.actual_monthly == pytest.approx(70.08)

    await stack.executions.rollback(started.execution_id, RollbackInput(actor="bob"))
    await stack.executions.handle(started.execution_id).result()
    summary = await stack.store.savings_summary(customer_id=customer)
    assert (summary.executions, summary.reversed) == (0, 1)


async def test_a_recently_changed_resource_is_refused_until_the_cooldown_ends(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    first = await stack.executions.start(request(recommendation("ec2.stop", instance)))
    await stack.executions.wait(first.execution_id)
    await stack.executions.rollback(first.execution_id, RollbackInput(actor="bob"))
    await stack.executions.handle(first.execution_id).result()  # the read model has caught up

    second = await stack.executions.start(request(recommendation("ec2.stop", instance)))
    view = await stack.executions.wait(second.execution_id)
    assert view.status is S.REJECTED_BY_VALIDATION
    assert "cooldown of 7 days" in (view.reason or "") and first.execution_id in (view.reason or "")
    assert aws.instance_state(instance)[0] == "running"
    await stack.executions.handle(second.execution_id).result()  # its lease is released only as it closes

    from domain.execution import ExecutionOptions, ExecutionRequest
    from domain.policy import Policy

    relaxed = ExecutionRequest(recommendation=recommendation("ec2.stop", instance), requested_by="alice",
                               policy=Policy(cooldown_days=0), options=ExecutionOptions())
    third = await stack.executions.wait((await stack.executions.start(relaxed)).execution_id)
    assert third.status is S.COMPLETED


async def test_a_dry_run_does_not_use_up_the_real_execution(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    rec = recommendation("ec2.stop", instance)
    plan = await stack.executions.start(request(rec, dry_run=True))
    assert (await stack.executions.wait(plan.execution_id)).status is S.PLANNED
    again = await stack.executions.start(request(rec, dry_run=True))  # plans may be repeated
    assert again.created and again.execution_id == plan.execution_id
    await stack.executions.wait(again.execution_id)
    real = await stack.executions.start(request(rec))
    assert real.created and real.execution_id != plan.execution_id
    assert (await stack.executions.wait(real.execution_id)).status is S.COMPLETED
    assert aws.instance_state(instance)[0] == "stopped"


async def test_a_repeated_dry_run_replaces_the_first_in_the_read_model(stack: Stack, aws: AwsAccount) -> None:
    """Dry-run a recommendation whose instance is gone, fix its resource id, dry-run again:
    `reclaim list` and the API (the read model) show the second run, as the status query does."""
    rec = recommendation("ec2.stop", "i-0000000000000dead")
    first = await stack.executions.start(request(rec, dry_run=True))
    assert (await stack.executions.wait(first.execution_id)).status is S.REJECTED_BY_VALIDATION

    async def first_stored() -> bool:
        """the first run is in the read model"""
        row = await stack.store.get_execution(first.execution_id)
        return row is not None and row.status is S.REJECTED_BY_VALIDATION

    await eventually(first_stored)
    instance = aws.instance()
    fixed = rec.model_copy(update={"resource_id": instance})
    again = await stack.executions.start(request(fixed, dry_run=True))
    assert again.created and again.execution_id == first.execution_id
    assert (await stack.executions.wait(again.execution_id)).status is S.PLANNED

    async def second_stored() -> bool:
        """the second run replaced the first in the read model"""
        row = await stack.store.get_execution(again.execution_id)
        return row is not None and (row.status, row.resource_id) == (S.PLANNED, instance)

    await eventually(second_stored)
