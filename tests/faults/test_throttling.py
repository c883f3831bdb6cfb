"""Throttling on 30% of AWS calls: every execution still completes, and retries stay cheap.

The same fleet of executions runs twice in this test, on real parts (dev server,
moto server, worker): once without faults, which gives the minimum number of
AWS calls, and once with the product's FaultInjector answering
`RequestLimitExceeded` / `Throttling` to 30% of calls (seeded).

"AWS calls" are the requests AWS served (counted by the moto server): what a
retry costs beyond the throttled request itself. The throttled requests are
printed too but not bounded here: with 30% refused, even a perfect per-call
retry makes 1 / 0.7 = 1.43x the calls, so a 1.5x bound on them would measure luck.

Both runs go without the gateway's coalescing (`coalesce_window=0`): what it saves depends on
which executions happen to overlap, so with it the minimum itself varied from 44 to 51 calls
between identical calm runs, and the bound measured that luck (1.34x-1.70x served in
back-to-back runs of the same code). Without it the minimum is what the executions ask, and
what the throttled run serves beyond it is what retries cost. The gateway under throttling
has tests of its own (tests/test_gateway.py: a throttled batch answers every caller, who
retries; the per-bucket budget across two worker processes).
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from temporalio.client import Client

from activities.aws import SessionFactory
from activities.faults import FaultInjector, FaultRule
from store.repository import Store
from tests.fault_support import (
    CountingMotoServer,
    Fleet,
    Planned,
    describe,
    drive,
    mutations_on,
    wrong_outcomes,
)
from worker import build_worker

EXECUTIONS_PER_KIND = 5
THROTTLED_SHARE = 0.3



def throttling(seed: int) -> FaultInjector:
    """30% of calls refused, half of them each way: EC2's code and the other services' one.
    (The second rule sees only the calls the first let through: 0.15 + 0.85 * p2 = 0.3.)"""
    first = THROTTLED_SHARE / 2
    second = (THROTTLED_SHARE - first) / (1 - first)
    return FaultInjector([FaultRule("*", "RequestLimitExceeded", message="Request limit exceeded.",
                                    probability=first),
                          FaultRule("*", "Throttling", message="Rate exceeded", probability=second)], seed=seed)


def fleet(moto: CountingMotoServer) -> list[Planned]:
    seed = Fleet(moto.endpoint)
    made: list[Planned] = []
    for _ in range(EXECUTIONS_PER_KIND):
        made += [seed.stop(), seed.delete(), seed.rightsize(), seed.gp3()]
    return made


async def run_fleet(client: Client, moto: CountingMotoServer, store: Store, executor: ThreadPoolExecutor,
                    faults: FaultInjector) -> tuple[list[Planned], list[str]]:
    planned = fleet(moto)
    moto.forget()
    task_queue = f"throttle-{uuid.uuid4()}"
    sessions = SessionFactory(endpoint_url=moto.endpoint, session_hooks=[faults.install], coalesce_window=0)
    worker = build_worker(client, task_queue=task_queue, sessions=sessions, store=store, executor=executor,
                          max_concurrent_activities=16)
    run = f"thr-{uuid.uuid4().hex[:8]}"
    async with worker:
        outcomes = await asyncio.wait_for(asyncio.gather(
            *(drive(client, task_queue, p, run, n, step_timeout=10) for n, p in enumerate(planned))), 240)
    return planned, list(outcomes)


@pytest.mark.timeout(600)
async def test_throttled_executions_all_complete_within_one_and_a_half_times_the_minimum_calls(
    client: Client, counting_moto: CountingMotoServer, store: Store, activity_executor: ThreadPoolExecutor,
) -> None:
    calm = FaultInjector([])
    planned, outcomes = await run_fleet(client, counting_moto, store, activity_executor, calm)
    assert not wrong_outcomes(planned, outcomes), wrong_outcomes(planned, outcomes)
    minimum = len(counting_moto.calls())
    assert minimum == sum(calm.calls.values())  # nothing lost on the way: the counts agree

    throttled = throttling(seed=6)
    planned, outcomes = await run_fleet(client, counting_moto, store, activity_executor, throttled)
    received = counting_moto.calls()
    made = sum(throttled.calls.values())
    refused = sum(rule.fired for rule in throttled.rules)
    print(f"\nAWS calls without faults: {minimum}; with 30% throttled: {len(received)} served "
          f"({len(received) / minimum:.2f}x), {refused} throttled, {made} made in all ({made / minimum:.2f}x)"
          f"\nserved in the throttled run, by operation: {describe(received)}")

    assert not wrong_outcomes(planned, outcomes), wrong_outcomes(planned, outcomes)
    assert refused >= 0.25 * made, "the faults were not injected"
    for p in planned:  # throttling never made a mutation happen twice
        assert sorted(op for op, _ in mutations_on(received, p.resource_id).elements()) == sorted(p.mutations)
    assert len(received) <= 1.5 * minimum, (
        f"AWS served {len(received)} calls for what {minimum} calls do without throttling")
