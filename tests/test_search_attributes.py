"""What the Web UI and `temporal workflow list` find: the search attributes an execution publishes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client

from domain.execution import ApprovalInput
from domain.policy import Role
from domain.status import ExecutionStatus as S
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation, request
from workflows import search_attributes as sa


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
