"""Manual items in plans (issue 16, part 2) on the real dev server, a real worker and moto:
confirmed, failed, timed out, refused; validation at the edge; the report keeps the evidence."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from temporalio.client import WorkflowUpdateFailedError

from domain.manual import ManualDecision
from domain.plan import PLAN_TERMINAL, PlanControl, PlanDecision, PlanSpec, PlanStatus, WaveState
from domain.plan_report import render_markdown
from domain.policy import Role
from domain.status import ExecutionStatus as S
from starter.executions import Refused
from starter.plans import Plans
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation
from tests.test_plans import _until
from workflows.plan import PlanWorkflow

FAST = {"step_timeout": timedelta(seconds=20), "verify_timeout": timedelta(seconds=20),
        "rollback_window": timedelta(0)}


@pytest.fixture
def plans(stack: Stack) -> Plans:
    return Plans(stack.client, stack.task_queue, stack.store)


def manual(item_id: str, role: str = "operator", timeout: Any = "PT10M", **fields: Any) -> dict[str, Any]:
    return {"kind": "manual", "id": item_id, "role": role, "timeout": timeout,
            "instructions": f"Tell **#batch-team** about {item_id}; paste the message's link as evidence.",
            **fields}


def spec(recs: list[Any], steps: list[dict[str, Any]], waves: list[dict[str, Any]], **fields: Any) -> PlanSpec:
    return PlanSpec.model_validate({"recommendations": [r.model_dump(mode="json") for r in recs] + steps,
                                    "strategy": "waves", "waves": waves, "options": FAST, **fields})


def waiting(item_id: str) -> Any:
    return lambda v: any(m.id == item_id and m.status == "AWAITING_CONFIRMATION" for m in v.manual)


async def test_confirmed_by_update_then_the_waves_behind_it_run(plans: Plans, aws: AwsAccount) -> None:
    instance = aws.instance("m5.large")
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    plan_id = (await plans.submit(spec([rec], [manual("tell-team")], [
        {"name": "announce", "items": ["tell-team"]},
        {"name": "stop", "items": [rec.id], "depends_on": ["announce"]}]), requested_by="alice")).plan_id

    view = await _until(plans, plan_id, waiting("tell-team"))
    # The progress query shows the waiting item with its instructions; a person must move the plan.
    step = next(m for m in view.manual if m.id == "tell-team")
    assert "#batch-team" in step.instructions and step.role is Role.OPERATOR and step.deadline is not None
    assert view.counts == {"AWAITING_CONFIRMATION": 1}
    assert view.awaiting_person == 1 and view.running == 1
    assert aws.instance_state(instance)[0] == "running"  # the wave behind it has not started

    def decision(**fields: Any) -> ManualDecision:
        return ManualDecision(**{"item": "tell-team", "actor": "olga", "role": Role.OPERATOR, **fields})

    with pytest.raises(Refused, match="role viewer; manual item tell-team is confirmed or failed by operator"):
        await plans.answer(plan_id, True, decision(actor="vic", role=Role.VIEWER))
    with pytest.raises(Refused, match=f"plan {plan_id} has no manual item nope"):
        await plans.answer(plan_id, True, decision(item="nope"))
    with pytest.raises(Refused, match=f"no manual item {rec.id}"):  # a recommendation is not a manual item
        await plans.answer(plan_id, True, decision(item=rec.id))
    assert "manual item tell-team confirmed" in await plans.answer(
        plan_id, True, decision(comment="told them", evidence="https://chat.example.com/m/42"))
    with pytest.raises(Refused, match="tell-team is CONFIRMED by olga, not waiting"):
        await plans.answer(plan_id, False, decision(actor="bob", role=Role.APPROVER))

    done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert done.status is PlanStatus.COMPLETED, done.reason
    assert done.counts == {"CONFIRMED": 1, S.COMPLETED.value: 1}
    assert aws.instance_state(instance)[0] == "stopped"
    assert any("tell-team: confirmed by olga (operator) via update: told them" in e.message for e in done.events)

    report = await plans.report(plan_id)
    line = next(x for x in report.manual)
    assert (line.recommendation_id, line.kind, line.status, line.decided_by, line.evidence) == (
        "tell-team", "manual", "CONFIRMED", "olga", "https://chat.example.com/m/42")
    markdown = render_markdown(report)
    assert "## Manual steps" in markdown
    assert "| tell-team | announce | CONFIRMED | olga | told them | https://chat.example.com/m/42 |" in markdown
    # Who and what, in the history: the update's input.
    history = await plans.handle(plan_id).fetch_history()
    updates = [e for e in history.events if e.HasField("workflow_execution_update_accepted_event_attributes")]
    assert len(updates) == 1 and b"https://chat.example.com/m/42" in updates[0].SerializeToString()


async def test_failed_by_signal_counts_toward_the_threshold_and_skips_its_dependants(
    plans: Plans, stack: Stack, aws: AwsAccount
) -> None:
    behind, beside = aws.instance("m5.large"), aws.instance("m5.large")
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in (behind, beside)]
    plan_id = (await plans.submit(spec(recs, [manual("migrate", role="approver")], [
        {"name": "migration", "items": ["migrate"]},
        {"name": "stop", "items": [recs[0].id], "depends_on": ["migration"]},
        {"name": "other", "items": [recs[1].id]}], rate={"error_threshold": 1}), requested_by="alice")).plan_id
    await _until(plans, plan_id, waiting("migrate"))

    handle = stack.client.get_workflow_handle_for(PlanWorkflow.run, plans.handle(plan_id).id)
    # A refused signal is kept among the plan's events (an operator may not answer an approver's item).
    await handle.signal(PlanWorkflow.fail_signal, ManualDecision(item="migrate", actor="olga", role=Role.OPERATOR))
    await _until(plans, plan_id, lambda v: any("refused: olga has role operator" in e.message for e in v.events))
    await handle.signal(PlanWorkflow.fail_signal, ManualDecision(
        item="migrate", actor="bob", role=Role.APPROVER, comment="migration broke", evidence="ticket OPS-7"))

    paused = await plans.wait(plan_id, timeout=60)
    assert paused.status is PlanStatus.PAUSED, paused.reason
    assert paused.reason == "error threshold reached: 1 failed items (threshold 1)"
    await plans.control(plan_id, "resume", PlanControl(actor="olga", role=Role.OPERATOR))
    done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert done.status is PlanStatus.COMPLETED_WITH_FAILURES, done.reason
    assert done.counts == {"FAILED": 1, "SKIPPED": 1, S.COMPLETED.value: 1}
    assert [w.state for w in done.waves] == [WaveState.FAILED, WaveState.SKIPPED, WaveState.SUCCEEDED]
    assert [aws.instance_state(i)[0] for i in (behind, beside)] == ["running", "stopped"]

    report = await plans.report(plan_id)
    assert [(x.recommendation_id, x.status) for x in report.failures] == [("migrate", "FAILED")]
    assert report.manual[0].evidence == "ticket OPS-7" and report.manual[0].comment == "migration broke"
    assert "manual item failed by bob: migration broke" in (report.failures[0].reason or "")


async def test_a_manual_item_nobody_answers_times_out_and_fails(plans: Plans, aws: AwsAccount) -> None:
    instance = aws.instance("m5.large")
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    plan_id = (await plans.submit(spec([rec], [manual("check-dashboard", timeout=1)], [
        {"name": "check", "items": ["check-dashboard"]},
        {"name": "stop", "items": [rec.id], "depends_on": ["check"]}]), requested_by="alice")).plan_id
    done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=60)
    assert done.status is PlanStatus.FAILED, done.reason  # no item succeeded
    assert done.counts == {"TIMED_OUT": 1, "SKIPPED": 1}
    assert [m.status for m in done.manual] == ["TIMED_OUT"]
    assert aws.instance_state(instance)[0] == "running"
    with pytest.raises(Refused, match="has ended"):
        await plans.answer(plan_id, True, ManualDecision(item="check-dashboard", actor="olga", role=Role.OPERATOR))
    report = await plans.report(plan_id)
    assert report.failures[0].reason == "manual item: nobody confirmed or failed it within 0:00:01"


async def test_a_dry_run_plans_a_manual_item_and_the_approved_run_waits_for_it(
    plans: Plans, stack: Stack, aws: AwsAccount
) -> None:
    instance = aws.instance("m5.large")
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    plan_id = (await plans.submit(spec([rec], [manual("announce")], [
        {"name": "first", "items": ["announce"]},
        {"name": "then", "items": [rec.id], "depends_on": ["first"]}], dry_run=True), requested_by="alice")).plan_id
    dry = await plans.wait(plan_id, timeout=60)
    assert dry.status is PlanStatus.AWAITING_APPROVAL and dry.counts == {"PLANNED": 2}, dry
    await plans.decide(plan_id, True, PlanDecision(actor="bob", role=Role.APPROVER))
    await _until(plans, plan_id, waiting("announce"))
    # The stock client's update, refused in its validator: nothing enters the history.
    handle = stack.client.get_workflow_handle_for(PlanWorkflow.run, plans.handle(plan_id).id)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(PlanWorkflow.confirm_update,
                                    ManualDecision(item="announce", actor="vic", role=Role.VIEWER))
    await plans.answer(plan_id, True, ManualDecision(item="announce", actor="bob", role=Role.ADMIN))
    done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert done.status is PlanStatus.COMPLETED and done.counts == {"CONFIRMED": 1, "COMPLETED": 1}, done


async def test_an_abort_ends_a_waiting_manual_item(plans: Plans, aws: AwsAccount) -> None:
    rec = recommendation("ec2.stop", aws.instance("m5.large"), {"expected_instance_type": "m5.large"})
    plan_id = (await plans.submit(spec([rec], [manual("hold")], [
        {"name": "hold", "items": ["hold"]},
        {"name": "stop", "items": [rec.id], "depends_on": ["hold"]}]), requested_by="alice")).plan_id
    await _until(plans, plan_id, waiting("hold"))
    await plans.control(plan_id, "abort", PlanControl(actor="olga", role=Role.OPERATOR, reason="freeze"))
    done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=60)
    assert done.status is PlanStatus.ABORTED and done.counts == {"CANCELLED": 1, "NOT_STARTED": 1}, done
    assert [(m.id, m.status) for m in done.manual] == [("hold", "CANCELLED")]


@pytest.mark.parametrize(("step", "message"), [
    (manual("x", instructions="   "), "a manual item needs instructions"),
    (manual("x", role="opertor"), "unknown role 'opertor' for a manual item: one of operator, approver, admin"),
    (manual("x", role="viewer"), "unknown role 'viewer'"),
    (manual("x", timeout=0), "a manual item's timeout must be positive"),
    (manual("x", timeout="-PT5M"), "a manual item's timeout must be positive"),
])
def test_a_bad_manual_item_is_refused_when_the_plan_is_read(step: dict[str, Any], message: str) -> None:
    rec = recommendation("ec2.stop", "i-0123456789abcdef0", {"expected_instance_type": "m5.large"})
    with pytest.raises(ValidationError, match=message):
        spec([rec], [step], [{"name": "a", "items": [rec.id, "x"]}])


def test_manual_items_are_placed_by_waves() -> None:
    rec = recommendation("ec2.stop", "i-0123456789abcdef0", {"expected_instance_type": "m5.large"})
    with pytest.raises(ValidationError, match="manual items are placed by waves"):
        PlanSpec.model_validate({"recommendations": [rec.model_dump(mode="json"), manual("x")],
                                 "strategy": "sequential"})


def test_the_readme_plan_file_with_manual_items_is_a_valid_plan() -> None:
    """The README's "Manual steps" example reads as a plan; its commands' options exist."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Manual steps\n", 1)[1].split("\n## ", 1)[0]
    example, commands = re.findall(r"```(?:yaml|sh)\n(.*?)```", section, re.S)[:2]
    parsed = PlanSpec.model_validate(yaml.safe_load(example))
    assert [m.id for m in parsed.manual] == ["tell-batch-team", "check-latency"]
    assert {m.role for m in parsed.manual} == {Role.OPERATOR, Role.APPROVER}
    assert "reclaim plan confirm <plan-id> tell-batch-team --as olga -m" in commands
    assert "--evidence" in commands
