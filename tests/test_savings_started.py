"""A change that stands has its savings measured later: since generation-2026-12-05-ahead an
execution whose rollback window ends without a rollback starts `SavingsCheck` (abandoned, it
outlives the execution), which measures after `measure_savings_after`; on the real dev server
with seconds instead of the default 30 days. A change rolled back in its window is not measured."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from temporalio.service import RPCError

from domain.execution import ExecutionOptions, ExecutionRequest, RollbackInput
from domain.status import ExecutionStatus as S
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation
from workflows.savings import savings_check_id


async def test_a_change_that_stands_has_its_savings_measured_when_its_option_says(
    stack: Stack, aws: AwsAccount,
) -> None:
    volume = aws.volume(size=100, volume_type="gp2")
    started = await stack.executions.start(ExecutionRequest(
        recommendation=recommendation("ebs.gp2_to_gp3", volume), requested_by="alice",
        options=ExecutionOptions(rollback_window=timedelta(seconds=1), measure_savings_after=timedelta(seconds=2))))
    view = await asyncio.wait_for(stack.executions.handle(started.execution_id).result(), 120)
    assert view.status is S.COMPLETED
    assert any("savings to be measured 0:00:02 after the change" in e.message for e in view.log)
    check = stack.client.get_workflow_handle(savings_check_id(started.execution_id))
    measured = await asyncio.wait_for(check.result(), 120)
    assert measured["execution_id"] == started.execution_id and measured["kind"] == "ebs.gp2_to_gp3"
    assert measured["method"] in ("cost-explorer", "price-table")
    assert datetime.fromisoformat(measured["period_end"]) - datetime.fromisoformat(measured["period_start"]) \
        >= timedelta(seconds=2)


async def test_a_change_rolled_back_in_its_window_is_not_measured(stack: Stack, aws: AwsAccount) -> None:
    volume = aws.volume(size=100, volume_type="gp2")
    started = await stack.executions.start(ExecutionRequest(
        recommendation=recommendation("ebs.gp2_to_gp3", volume), requested_by="alice",
        options=ExecutionOptions(rollback_window=timedelta(hours=1))))
    await stack.executions.wait(started.execution_id, until=frozenset({S.COMPLETED}))
    await stack.executions.rollback(started.execution_id, RollbackInput(actor="carol", reason="io latency"))
    view = await asyncio.wait_for(stack.executions.handle(started.execution_id).result(), 120)
    assert view.status is S.ROLLED_BACK
    with pytest.raises(RPCError):
        await stack.client.get_workflow_handle(savings_check_id(started.execution_id)).describe()
