"""Read-model writes: local activities while the store answers, the durable way when it does not.

Either way the store ends with exactly what the workflow holds, and no AWS step waits for it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from domain.status import ExecutionStatus as S
from tests.conftest import AwsAccount, Stack
from tests.helpers import activity_names, eventually, recommendation, request


class _StoreAway(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, state: StoreAway) -> None:
        super().__init__(next)
        self.state = state

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.activity_type == "record_execution" and info.is_local and self.state.away:
            self.state.refused += 1
            raise ApplicationError("read model unavailable: injected", type="StoreUnavailable")
        return await self.next.execute_activity(input)


class StoreAway(Interceptor):
    """While `away`, every local read-model write fails as if the database did not answer."""

    def __init__(self) -> None:
        self.away = False
        self.refused = 0

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _StoreAway(next, self)


@pytest.fixture
def store_away() -> StoreAway:
    return StoreAway()


@pytest.fixture
def interceptors(store_away: StoreAway) -> list[Interceptor]:
    return [store_away]


async def _final(stack: Stack, aws: AwsAccount) -> tuple[Any, Any]:
    started = await stack.executions.start(request(recommendation("ec2.stop", aws.instance("m5.large")),
                                                    rollback_window=timedelta(0)))
    handle = stack.executions.handle(started.execution_id)
    view = await handle.result()  # closes only once every write has landed
    return view, await handle.fetch_history()


async def test_writes_are_local_activities_and_the_store_matches_the_workflow(
    stack: Stack, aws: AwsAccount, store_away: StoreAway
) -> None:
    view, history = await _final(stack, aws)
    assert view.status is S.COMPLETED
    assert "record_execution" not in activity_names(history)  # markers, not activity tasks
    stored = await stack.store.get_execution(view.execution_id)
    assert stored is not None and (stored.status, stored.sequence) == (view.status, view.sequence)


async def test_when_the_store_does_not_answer_the_newest_view_goes_the_durable_way(
    stack: Stack, aws: AwsAccount, store_away: StoreAway
) -> None:
    store_away.away = True
    view, history = await _final(stack, aws)
    assert view.status is S.COMPLETED  # nothing waited for the store
    assert store_away.refused >= 5
    assert activity_names(history).count("record_execution") == store_away.refused

    async def caught_up() -> bool:
        stored = await stack.store.get_execution(view.execution_id)
        return stored is not None and (stored.status, stored.sequence) == (view.status, view.sequence)

    await eventually(caught_up)
