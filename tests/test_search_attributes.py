"""What the Web UI and `temporal workflow list` find: the search attributes an execution publishes.

They are upserted at most once per workflow task, with the values the task ends
with (each upsert is a history event and a visibility write on the server).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client, WorkflowHistory

from domain.execution import ApprovalInput
from domain.policy import Role
from domain.status import ExecutionStatus as S
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation, request
from workflows import search_attributes as sa


def upserts_per_task(history: WorkflowHistory) -> list[int]:
    """Upserts of our attributes after each completed workflow task (the commands that task produced).

    The SDK's own upsert of TemporalChangeVersion, one per `workflow.patched`, is not ours to count.
    """
    ours = {key.name for key in sa.ALL}
    counts: list[int] = []
    for event in history.events:
        if event.HasField("workflow_task_completed_event_attributes"):
            counts.append(0)
        elif event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            counts[-1] += bool(ours & set(fields))
    return counts


async def found(client: Client, query: str) -> list[str]:
    """Visibility is eventually consistent: the ids the query finds once it finds any."""
    for _ in range(100):
        ids = [e.id async for e in client.list_workflows(query)]
        if ids:
            return ids
        await asyncio.sleep(0.1)
    return []


async def test_a_completed_change_is_findable_by_everything_it_did(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    rec = recommendation("ec2.stop", instance, customer_id="acme-sa")
    started = await stack.executions.start(request(rec, rollback_window=timedelta(0)))
    handle = stack.executions.handle(started.execution_id)
    view = await handle.result()
    assert view.status is S.COMPLETED, view.reason

    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(sa.CUSTOMER_ID) == "acme-sa"
    assert attributes.get(sa.RESOURCE_ID) == instance
    assert attributes.get(sa.ACTION_KIND) == "ec2.stop"
    assert attributes.get(sa.RISK_LEVEL) == view.risk.value
    assert attributes.get(sa.EXECUTION_STATUS) == "COMPLETED"

    per_task = upserts_per_task(await handle.fetch_history())
    assert max(per_task) == 1, per_task  # VALIDATING, risk, BACKING_UP... of one task: one upsert
    assert sum(per_task) <= 6, per_task
    assert await found(stack.client, f"ResourceId = '{instance}' AND ReclaimStatus = 'COMPLETED' "
                                     "AND CustomerId = 'acme-sa'") == [started.execution_id]


async def test_each_resting_state_is_published_while_the_execution_rests_in_it(
    stack: Stack, aws: AwsAccount
) -> None:
    instance = aws.instance()
    started = await stack.executions.start(request(recommendation("ec2.stop", instance), auto_approve=False))
    assert (await stack.executions.wait(started.execution_id)).status is S.AWAITING_APPROVAL
    waiting = f"ResourceId = '{instance}' AND ReclaimStatus = 'AWAITING_APPROVAL'"
    assert await found(stack.client, waiting) == [started.execution_id]

    await stack.executions.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    view = await stack.executions.wait(started.execution_id)
    assert view.status is S.COMPLETED, view.reason  # open for its rollback window
    assert await found(stack.client, f"ResourceId = '{instance}' AND ReclaimStatus = 'COMPLETED'") == [
        started.execution_id
    ]
    assert max(upserts_per_task(await stack.executions.handle(started.execution_id).fetch_history())) == 1
