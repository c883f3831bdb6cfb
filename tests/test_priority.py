"""Priority and fairness (workflows/priority.py): what Temporal is told about each workflow, as
the server records it. Whether the server then serves customers in turn is Temporal's
(`matching.enableFairness`); what Reclaim owes it is the right keys on every workflow."""

from __future__ import annotations

from datetime import timedelta

from domain.execution import ExecutionOptions, ExecutionRequest
from domain.plan import PlanSpec
from domain.status import ExecutionStatus as S
from starter.plans import Plans
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation
from workflows.priority import BULK, BY_HAND


async def _priority(stack: Stack, workflow_id: str) -> tuple[int, str]:
    info = (await stack.client.get_workflow_handle(workflow_id).describe()).raw_description.workflow_execution_info
    return info.priority.priority_key, info.priority.fairness_key


async def test_an_execution_by_hand_goes_before_a_plans_items_each_keyed_by_its_customer(
    stack: Stack, aws: AwsAccount,
) -> None:
    alone = recommendation("ec2.stop", aws.instance(), customer_id="globex")
    started = await stack.executions.start(ExecutionRequest(
        recommendation=alone, requested_by="alice", options=ExecutionOptions(rollback_window=timedelta(0))))
    assert await _priority(stack, started.execution_id) == (BY_HAND, "globex")

    item = recommendation("ec2.stop", aws.instance(), customer_id="acme")
    spec = PlanSpec.model_validate({"recommendations": [item.model_dump(mode="json")], "strategy": "parallel",
                                    "options": {"rollback_window": timedelta(0)}})
    plans = Plans(stack.client, stack.task_queue, stack.store)
    view = await plans.submit(spec, requested_by="alice")
    assert await _priority(stack, f"plan:{view.plan_id}") == (BULK, "acme")
    done = await plans.wait(view.plan_id, timeout=120)
    assert done.counts == {S.COMPLETED.value: 1}
    (line,) = (await plans.report(view.plan_id)).items
    assert line.execution_id is not None
    assert await _priority(stack, line.execution_id) == (BULK, "acme")  # the item inherits its plan's
