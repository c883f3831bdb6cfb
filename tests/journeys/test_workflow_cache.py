"""Executions keep moving when the worker's workflow cache is far smaller than the runs in flight.

A worker sized for 10,000 parked executions keeps a few hundred in cache; when many of
them move at once, each workflow task may find its run evicted and replay it from history.
A run must then go on exactly as it would have with a cache for everyone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest_asyncio
from temporalio.client import Client

from activities.aws import SessionFactory
from domain.execution import ExecutionOptions, ExecutionRequest
from domain.status import ExecutionStatus as Status
from starter.executions import Executions
from starter.polling import poll
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import recommendation
from worker import build_worker

RUNS = 20


@pytest_asyncio.fixture
async def tiny_cache(client: Client, sessions: SessionFactory, store: Store,
                     activity_executor: ThreadPoolExecutor) -> AsyncIterator[Executions]:
    task_queue = f"tq-cache-{uuid.uuid4()}"
    async with build_worker(client, task_queue=task_queue, sessions=sessions, store=store,
                            executor=activity_executor, max_concurrent_activities=16, max_cached_workflows=2):
        yield Executions(client, task_queue)


async def test_twenty_executions_all_reach_approval_through_a_cache_of_two(
        tiny_cache: Executions, aws: AwsAccount) -> None:
    recs = [recommendation("ec2.stop", aws.instance()) for _ in range(RUNS)]
    started = await asyncio.gather(*(tiny_cache.start(ExecutionRequest(
        recommendation=rec, requested_by="alice", options=ExecutionOptions(auto_approve=False)))
        for rec in recs))
    # Visibility, not status queries: a query loads the run into the cache too and would
    # change what is measured. A healthy worker parks all of them in seconds; a stuck run
    # never parks, and the deadline only bounds how long the test waits to say so.
    query = (f'WorkflowType="ExecutionWorkflow" AND ExecutionStatus="Running" '
             f'AND ReclaimStatus="AWAITING_APPROVAL" AND TaskQueue="{tiny_cache.task_queue}"')
    parked = await poll(lambda: count(tiny_cache.client, query), lambda n: n >= RUNS,
                        interval=0.2, backoff=1.5, max_interval=2.0, timeout=180,
                        too_long=lambda n: AssertionError(f"only {n} of {RUNS} parked"))
    assert parked == RUNS
    views = [await tiny_cache.status(s.execution_id) for s in started]
    assert {v.status for v in views} == {Status.AWAITING_APPROVAL}


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count
