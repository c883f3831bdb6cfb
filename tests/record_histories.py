"""Record the histories that tests/test_replay.py replays on every run.

`python -m tests.record_histories [PREFIX]` runs one execution per path through
ExecutionWorkflow on a throwaway dev server and moto, and writes their event
histories to tests/histories/. Re-record only for an intentional, patched change:
old histories must keep replaying (that is the point).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from moto.server import ThreadedMotoServer
from temporalio.client import WorkflowFailureError

from activities.aws import SessionFactory
from activities.faults import FaultInjector, FaultRule
from domain.execution import ApprovalInput, RollbackInput
from domain.policy import Role
from domain.status import ExecutionStatus as S
from runtime.settings import Settings
from starter.demo import DemoAccount
from starter.devserver import free_port
from starter.executions import Executions
from starter.stack import embedded_stack
from tests.helpers import ACCOUNT, REGION, recommendation, request
from tests.notify_support import catch_all_notify_file, http_receiver

OUT = Path(__file__).parent / "histories"
DONE = frozenset({S.COMPLETED, S.ROLLED_BACK, S.REJECTED, S.EXPIRED, S.REJECTED_BY_VALIDATION, S.PLANNED,
                  S.CANCELLED})
Steer = Callable[[Executions, str], Awaitable[None]]


async def main(prefix: str = "") -> None:
    with contextlib.ExitStack() as stack_context:
        await _main(prefix, stack_context)


async def _main(prefix: str, stack_context: contextlib.ExitStack) -> None:
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    account = DemoAccount(endpoint)
    flaky = account.instance("c5.2xlarge")
    unstartable = account.instance("m5.large")  # its undo fails: the alarm rings
    faults = FaultInjector([FaultRule("StartInstances", "InsufficientInstanceCapacity", resource=flaky, times=1),
                            FaultRule("StartInstances", "UnauthorizedOperation", resource=unstartable)])
    home = Path(tempfile.mkdtemp())
    receiver = stack_context.enter_context(http_receiver())  # executions tell a webhook everything
    settings = Settings(home=home, task_queue="record", notify_file=catch_all_notify_file(home, receiver.url))
    short = {"rollback_window": timedelta(seconds=1)}

    async def approve(ex: Executions, eid: str) -> None:
        await ex.wait(eid)
        await ex.decide(eid, True, ApprovalInput(actor="bob", role=Role.APPROVER))

    async def reject(ex: Executions, eid: str) -> None:
        await ex.wait(eid)
        await ex.decide(eid, False, ApprovalInput(actor="bob", role=Role.APPROVER, comment="no"))

    async def refused_then_approved(ex: Executions, eid: str) -> None:
        from workflows.execution import ExecutionWorkflow

        await ex.wait(eid)
        await ex.handle(eid).signal(ExecutionWorkflow.approve_signal, ApprovalInput(actor="alice", role=Role.APPROVER))
        await ex.handle(eid).signal(ExecutionWorkflow.approve_signal, ApprovalInput(actor="bob", role=Role.APPROVER))

    async def roll_back(ex: Executions, eid: str) -> None:
        await ex.wait(eid)
        await ex.rollback(eid, RollbackInput(actor="carol", reason="latency"))

    async def reminded_then_approved(ex: Executions, eid: str) -> None:
        await ex.wait(eid)
        await asyncio.sleep(3)  # the reminder at a quarter of the 8 s wait has gone out
        await ex.decide(eid, True, ApprovalInput(actor="bob", role=Role.APPROVER))

    async def undo_fails_then_acknowledged(ex: Executions, eid: str) -> None:
        from temporalio.service import RPCError

        from domain.notifications import Acknowledgement
        from workflows.alarm import alarm_id

        await ex.wait(eid)
        await ex.rollback(eid, RollbackInput(actor="carol", reason="latency"))
        for _ in range(300):  # the alarm starts as the execution fails
            with contextlib.suppress(RPCError):
                await ex.client.get_workflow_handle(alarm_id(eid)).describe()
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)  # its first message has gone out
        await ex.acknowledge(eid, Acknowledgement(actor="olga", role=Role.OPERATOR, comment="on it"))

    async def cancel(ex: Executions, eid: str) -> None:
        await ex.wait(eid)
        await ex.cancel(eid)

    scenarios: dict[str, tuple[object, dict[str, object], Steer | None]] = {
        "stop_completed_window_closed": (
            recommendation("ec2.stop", account.instance("m5.large")), short, None),
        "rightsize_approved_by_update": (recommendation(
            "ec2.rightsize", account.instance("m5.2xlarge"),
            {"expected_instance_type": "m5.2xlarge", "target_instance_type": "m5.large"}), short, approve),
        "delete_refused_signal_then_approved": (recommendation(
            "ebs.delete", account.volume(20, "gp2"), {"expected_size_gib": 20}), short, refused_then_approved),
        "delete_rejected": (recommendation("ebs.delete", account.volume(20, "gp2")), {}, reject),
        "approval_expired": (recommendation("ec2.stop", account.instance("m5.large")),
                             {"auto_approve": False, "approval_timeout": timedelta(seconds=1)}, None),
        "production_refused": (recommendation("ec2.stop", account.instance("m5.large", env="prod")), {}, None),
        "dry_run_planned": (recommendation("ec2.stop", account.instance("m5.large")), {"dry_run": True}, None),
        "capacity_failure_compensated": (recommendation(
            "ec2.rightsize", flaky, {"expected_instance_type": "c5.2xlarge", "target_instance_type": "c5.large"}),
            {}, approve),
        "gp3_rolled_back_on_request": (recommendation("ebs.gp2_to_gp3", account.volume(100, "gp2")), {}, roll_back),
        "cancelled_awaiting_approval": (recommendation("ec2.stop", account.instance("m5.large")),
                                        {"auto_approve": False}, cancel),
        # The SCHEDULED path: waits for its maintenance window, looks again, asks the policy again.
        "scheduled_window_then_completed": (recommendation("ec2.stop", account.instance("m5.large")),
                                            {**short, "not_before": timedelta(seconds=3)},  # from its start
                                            None),
    }
    if prefix >= "v8":  # generation-2026-12-05-ahead: told ahead
        scenarios.update({
            "approval_reminded_then_approved": (
                recommendation("ec2.stop", account.instance("m5.large")),
                {**short, "auto_approve": False, "approval_timeout": timedelta(seconds=8),
                 "approval_reminders": [0.25]}, reminded_then_approved),
            "delete_owner_warned_before_window": (
                recommendation("ebs.delete", account.volume(20, "gp2"), {"expected_size_gib": 20}),
                {**short, "not_before": timedelta(seconds=6), "owner_warning_lead": timedelta(seconds=3)}, approve),
            "undo_failed_alarm_acknowledged": (
                recommendation("ec2.stop", unstartable),
                {"alarm_repeat": timedelta(minutes=1)}, undo_fails_then_acknowledged),
            "rightsize_watched_then_window_closed": (recommendation(
                "ec2.rightsize", account.instance("m5.2xlarge"),
                {"expected_instance_type": "m5.2xlarge", "target_instance_type": "m5.large"}),
                {"rollback_window": timedelta(seconds=8), "watch_period": timedelta(seconds=3)}, approve),
            "hub_risk_needs_a_human_expired": (
                recommendation("ec2.stop", account.instance("m5.large"), source="cost-optimization-hub",
                               source_id="coh-rec-1", source_details={"rollbackPossible": False}),
                {"approval_timeout": timedelta(seconds=1)}, None),
        })
    sessions = SessionFactory(endpoint_url=endpoint, session_hooks=[faults.install])
    if prefix >= "v9":  # generation-2026-12-05-launches: a drill's launch waited for on durable timers
        from tests.drs_fake import FakeDrs, server_id

        drs = FakeDrs(sessions.client(ACCOUNT, REGION, "drs"), steps=6,
                      launch=lambda sid: account.instance("t3.micro"),
                      terminate=lambda iid: account.ec2.terminate_instances(InstanceIds=[iid]))
        servers = [drs.add_server(server_id(n), {"app": "ledger"}) for n in (1, 2)]
        drs.activate()
        scenarios["drill_launch_waited_then_cleaned_up"] = (
            recommendation("drs.drill", servers[0], {"source_server_ids": servers, "poll_interval_seconds": 1},
                           savings=0),
            # A 3 s step: each apply call looks twice and hands its "not yet" back; the workflow
            # asks again after a 1 s timer until DRS has launched both servers.
            {"step_timeout": timedelta(seconds=3), "rollback_window": timedelta(seconds=1)}, approve)
    async with embedded_stack(settings, port=0, ui_port=None, sessions=sessions, persistent=False) as stack:
        ex = Executions(stack.client, settings.task_queue)
        OUT.mkdir(exist_ok=True)
        for name, (rec, options, steer) in scenarios.items():
            if isinstance(options.get("not_before"), timedelta):
                options = {**options, "not_before": datetime.now(UTC) + options["not_before"]}  # type: ignore[operator]
            started = await ex.start(request(rec, **options))  # type: ignore[arg-type]
            if steer is not None:
                await steer(ex, started.execution_id)
            handle = ex.handle(started.execution_id)
            with contextlib.suppress(WorkflowFailureError):
                await handle.result()
            history = await handle.fetch_history()
            (OUT / prefix).mkdir(exist_ok=True)
            (OUT / prefix / f"{name}.json").write_text(history.to_json())
            print(f"recorded {name}: {len(history.events)} events")
            if name == "undo_failed_alarm_acknowledged":
                from workflows.alarm import alarm_id

                alarm = stack.client.get_workflow_handle(alarm_id(started.execution_id))
                await alarm.result()
                history = await alarm.fetch_history()
                (OUT / prefix / "alarm_acknowledged.json").write_text(history.to_json())
                print(f"recorded alarm_acknowledged: {len(history.events)} events")
    moto.stop()


if __name__ == "__main__":
    import sys

    # A prefix keeps earlier recordings: histories from before a patch must keep replaying too.
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else ""))
