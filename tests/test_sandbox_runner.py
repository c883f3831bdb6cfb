"""The worker's sandbox runner: still a sandbox, and its entry snippets compiled once.

`workflows.sandbox.CompiledSandboxRunner` reaches into temporalio's private
sandbox instance; these tests fail if an SDK change makes it lose the sandbox's
restrictions or stop caching.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from worker import workflow_runner
from workflows.sandbox import _compiled


@workflow.defn(name="SandboxProbe")
class SandboxProbe:
    @workflow.run
    async def run(self, touch_the_clock: bool) -> str:
        if touch_the_clock:
            return datetime.now().isoformat()  # not deterministic: the sandbox must refuse it
        await workflow.sleep(timedelta(milliseconds=10))
        return "ran"


async def _probe(client: Client, touch_the_clock: bool) -> str:
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[SandboxProbe], workflow_runner=workflow_runner(),
                      workflow_failure_exception_types=[Exception]):
        result: str = await client.execute_workflow(
            SandboxProbe.run, touch_the_clock, id=f"probe-{uuid.uuid4().hex[:8]}", task_queue=queue,
            execution_timeout=timedelta(seconds=60),
        )
        return result


async def test_the_runner_still_refuses_what_the_sandbox_restricts(client: Client) -> None:
    with pytest.raises(WorkflowFailureError) as failure:
        await _probe(client, touch_the_clock=True)
    assert "datetime.datetime.now" in str(failure.value.cause), failure.value.cause


async def test_the_runner_compiles_its_entry_snippets_once(client: Client) -> None:
    _compiled.cache_clear()
    assert await _probe(client, touch_the_clock=False) == "ran"
    assert await _probe(client, touch_the_clock=False) == "ran"
    info = _compiled.cache_info()
    # Two runs, each entered many times (creation, activations, payload passes), from a few snippets.
    assert 0 < info.currsize <= 8 and info.hits > 2 * info.misses, info
