"""Local activities that outlast a workflow task still replay (issue 10, defect 0).

A loaded `make demo` once wrote a history whose `validate` marker landed in a workflow
task of its own and the `cooldown` patch marker in the next; replayed, the patch call
came before the SDK had seen its marker and the run failed with a nondeterminism error
(`tests/histories/v3/demo_rightsize_flaky_nondeterministic.json`, replayed by
tests/test_replay.py). Since generation-2026-12-02 a run asks its one patch in its first
activation, before any local activity (`workflows/versions.py`).

This forces local activities across workflow-task boundaries instead of waiting for a
loaded machine: the workflow task timeout is 1 s, so sdk-core completes a workflow task
(a heartbeat, no commands) while a local activity is still running after 0.8 s, and every
local activity is held 1.5 s: validate, the cooldown's last change, the window, the
notification routing, the read-model writes (every point a local activity is called).
The histories must show such heartbeats, replay, and hold their one patch marker in the
first workflow task (where no local activity can come before it).

What it does not prove: a heartbeat carries the local activity's marker and the commands
issued on its result together, so it does not reproduce the demo's split (marker in one
task, commands in the next). Tried on 2026-12-05 with a lazy `workflow.patched` call put
after `validate`: the heartbeat histories still replayed, and only the marker assertion
caught it. The first-task assertion is what guards against the old cause here; the
demo's own history (v3) proves the split pattern replays.

Plans ask their patches lazily but run no local activity, so no timing can move their
markers; their recorded histories replay in tests/test_replay.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor, Replayer

from activities.faults import FaultInjector, FaultRule
from domain.execution import ApprovalInput, ExecutionRequest, execution_id_for
from domain.policy import Role
from domain.status import ExecutionStatus as S
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation, request
from workflows import versions
from workflows.execution import ExecutionWorkflow

#: sdk-core heartbeats a workflow task at 80% of this while a local activity runs.
TASK_TIMEOUT = timedelta(seconds=1)
#: Each local activity is held this long: past the heartbeat, within the read-model write's 5 s.
HOLD = 1.5
CLOSE_TIMEOUT = 180.0  # s; some 20 held local activities each, on a loaded machine


class _HoldLocal(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if activity.info().is_local:
            await asyncio.sleep(HOLD)  # the delay under test: longer than the workflow task may run
        return await self.next.execute_activity(input)


class HoldLocalActivities(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _HoldLocal(next)


@pytest.fixture
def interceptors() -> list[Interceptor]:
    return [HoldLocalActivities()]


async def start(stack: Stack, req: ExecutionRequest) -> str:
    """Start as `Executions.start` does, with a 1 s workflow task timeout."""
    execution_id = execution_id_for(req.recommendation.id)
    await stack.client.start_workflow(ExecutionWorkflow.run, req, id=execution_id, task_queue=stack.task_queue,
                                      task_timeout=TASK_TIMEOUT)
    return execution_id


async def closed_history(client: Client, execution_id: str) -> WorkflowHistory:
    handle = client.get_workflow_handle(execution_id)
    async with asyncio.timeout(CLOSE_TIMEOUT):
        while (await handle.describe()).close_time is None:
            await asyncio.sleep(0.2)
    return await handle.fetch_history()


def heartbeats(history: WorkflowHistory) -> int:
    """Workflow tasks completed with no command and a new one asked at once: sdk-core's heartbeat
    while a local activity outlived the task (the only source of such pairs in these runs)."""
    types = [e.event_type for e in history.events]
    return sum(1 for a, b in itertools.pairwise(types)
               if (a, b) == (EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED))


def patch_markers(history: WorkflowHistory) -> list[tuple[int, str]]:
    """(workflow task number, patch id) of every patch marker."""
    found, task = [], 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            task += 1
        if event.HasField("marker_recorded_event_attributes"):
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_patch":
                found.append((task, json.loads(marker.details["patch-data"].payloads[0].data)["id"]))
    return found


async def replay_failure(history: WorkflowHistory) -> Exception | None:
    from worker import WORKFLOWS, workflow_runner

    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner())
    return (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure


async def test_executions_whose_local_activities_outlast_their_workflow_task_replay(
    stack: Stack, aws: AwsAccount, faults: FaultInjector
) -> None:
    # A change that stands (its rollback window closes), the demo's compensated rightsize, and one
    # approved by a person between two held validations.
    stopped = recommendation("ec2.stop", aws.instance())
    flaky = aws.instance("c5.2xlarge")
    faults.rules.append(FaultRule("StartInstances", "InsufficientInstanceCapacity", resource=flaky, times=1))
    rightsized = recommendation("ec2.rightsize", flaky, {"expected_instance_type": "c5.2xlarge",
                                                         "target_instance_type": "c5.large"})
    approved = recommendation("ec2.stop", aws.instance())
    ids = await asyncio.gather(
        start(stack, request(stopped, rollback_window=timedelta(seconds=1))),
        start(stack, request(rightsized, auto_approve=True)),
        start(stack, request(approved, auto_approve=False, rollback_window=timedelta(seconds=1))),
    )
    for rightsize_or_approval in ids[1:]:
        view = await stack.executions.wait(rightsize_or_approval, timeout=CLOSE_TIMEOUT)
        if view.status is S.AWAITING_APPROVAL:  # the rightsize may be scored above auto-approval
            await stack.executions.decide(rightsize_or_approval, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    histories = await asyncio.gather(*(closed_history(stack.client, i) for i in ids))

    outcomes = [(await stack.executions.status(i)).status for i in ids]
    assert outcomes == [S.COMPLETED, S.ROLLED_BACK, S.COMPLETED], outcomes
    for execution_id, history in zip(ids, histories, strict=True):
        assert heartbeats(history) >= 3, f"{execution_id}: no local activity crossed a workflow task"
        assert patch_markers(history) == [(1, versions.GENERATIONS[0])], patch_markers(history)
        failure = await replay_failure(history)
        assert failure is None, f"{execution_id}: {failure}"
