"""Property tests on the real PlanWorkflow: generated plans run on the dev server against moto.

Each example is a whole plan of fast ec2.stop items; an item meant to fail names
an instance that does not exist (refused at validation, nothing changed). The
properties are checked on what the executions themselves recorded (their start
and finish times) and on what the plan recorded (wave times, statuses).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from activities.faults import FaultInjector
from domain.plan import PLAN_TERMINAL, PlanControl, PlanSpec, PlanStatus, WaveState, transitive_dependents
from domain.policy import Role
from starter.plans import Plans
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation
from tests.test_plans import failing_instance

FAST = {"step_timeout": timedelta(seconds=20), "verify_timeout": timedelta(seconds=20),
        "rollback_window": timedelta(0)}
TOLERANCE = timedelta(seconds=5)


@dataclass
class WaveDraft:
    items: list[bool]  # True: the item fails
    mode: str
    wait_seconds: float
    depends_on: list[int]


@st.composite
def plans_(draw: st.DrawFn) -> tuple[list[WaveDraft], dict[str, Any]]:
    n = draw(st.integers(1, 3))
    waves = []
    for i in range(n):
        waves.append(WaveDraft(
            items=draw(st.lists(st.integers(0, 2).map(lambda n: n == 0), min_size=1, max_size=3)),
            mode=draw(st.sampled_from(["parallel", "ordered"])),
            wait_seconds=draw(st.sampled_from([0.0, 0.0, 1.0])),
            depends_on=sorted(draw(st.sets(st.integers(0, i - 1), max_size=i))) if i else [],
        ))
    rate: dict[str, Any] = {"max_concurrency": draw(st.integers(1, 3)), "ramp_up": draw(st.booleans())}
    if draw(st.booleans()):
        rate["error_threshold"] = draw(st.integers(1, 2))
    return waves, rate


@pytest.fixture
def plans(stack: Stack) -> Plans:
    return Plans(stack.client, stack.task_queue, stack.store)


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(drawn=plans_())
# Cases that must be in every run, whatever the generator draws.
@example(drawn=([WaveDraft([True, False, False], "ordered", 0.0, [])], {"max_concurrency": 1, "ramp_up": False,
                                                                        "error_threshold": 1}))
@example(drawn=([WaveDraft([True, True, False], "parallel", 0.0, []), WaveDraft([False], "parallel", 0.0, [])],
                {"max_concurrency": 2, "ramp_up": False, "error_threshold": 2}))
@example(drawn=([WaveDraft([True], "parallel", 0.0, []), WaveDraft([False], "parallel", 1.0, [0]),
                 WaveDraft([False], "ordered", 0.0, [1]), WaveDraft([False, False], "parallel", 1.0, [])],
                {"max_concurrency": 3, "ramp_up": False}))
async def test_generated_plans_keep_their_order_dependencies_waits_and_threshold(
    drawn: tuple[list[WaveDraft], dict[str, Any]], plans: Plans, stack: Stack, aws: AwsAccount,
    faults: FaultInjector,
) -> None:
    drafts, rate = drawn
    failing: set[str] = set()
    waves, recs = [], []
    for index, draft in enumerate(drafts):
        ids = []
        for fails in draft.items:
            resource = failing_instance(aws, faults) if fails else aws.instance("m5.large")
            rec = recommendation("ec2.stop", resource, {"expected_instance_type": "m5.large"})
            if fails:
                failing.add(rec.id)
            recs.append(rec)
            ids.append(rec.id)
        waves.append({"name": f"w{index}", "items": ids, "mode": draft.mode, "wait_seconds": draft.wait_seconds,
                      "depends_on": [f"w{d}" for d in draft.depends_on]})
    spec = PlanSpec.model_validate({
        "recommendations": [r.model_dump(mode="json") for r in recs], "strategy": "waves", "waves": waves,
        "rate": rate, "options": FAST,
    })
    plan_id = (await plans.submit(spec, requested_by="alice")).plan_id
    view = await plans.wait(plan_id, timeout=180)
    if view.status is PlanStatus.PAUSED:  # the error threshold held the plan: end it
        await plans.control(plan_id, "abort", PlanControl(actor="olga", role=Role.OPERATOR))
        view = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    items = {i.recommendation.id: i for i in await stack.store.plans.items(plan_id)}
    runs = {}
    for rec_id, item in items.items():
        if item.execution_id and item.status not in ("NOT_STARTED", "SKIPPED"):
            runs[rec_id] = await stack.store.get_execution(item.execution_id)
            assert runs[rec_id] is not None

    def started(rec_id: str) -> datetime:
        run = runs[rec_id]
        assert run is not None
        return run.started_at

    def finished(rec_id: str) -> datetime:
        run = runs[rec_id]
        assert run is not None and run.finished_at is not None
        return run.finished_at

    ran = [w for w in view.waves if w.state in (WaveState.SUCCEEDED, WaveState.FAILED)]
    # Waves run in order, one after the other; a wave starts after all it depends on finished.
    for earlier, later in itertools.pairwise(ran):
        assert earlier.finished_at and later.started_at and earlier.finished_at <= later.started_at
    for wave in ran:
        for dep in wave.depends_on:
            dep_wave = view.waves[dep]
            assert dep_wave.state is WaveState.SUCCEEDED
            for rec_id in waves[dep]["items"]:
                assert finished(rec_id) <= started_of_wave(waves[wave.index]["items"], runs, started)
    # wait_seconds: from the previous wave's end (or the plan's start) to this wave's start.
    previous_end = view.started_at
    for wave in view.waves:
        if wave.state in (WaveState.SUCCEEDED, WaveState.FAILED):
            assert wave.started_at is not None
            gap = wave.started_at - previous_end
            assert timedelta(seconds=wave.wait_seconds) <= gap + timedelta(milliseconds=1)
            assert gap <= timedelta(seconds=wave.wait_seconds) + TOLERANCE
        if wave.finished_at is not None:
            previous_end = wave.finished_at
    # Ordered items never overlap; parallel items of a wave that fits its limit start together.
    for wave in ran:
        ids = [i for i in waves[wave.index]["items"] if i in runs]
        if wave.mode.value == "ordered":
            for a, b in itertools.pairwise(ids):
                assert finished(a) <= started(b)
        elif not rate["ramp_up"] and len(ids) <= rate["max_concurrency"] and "error_threshold" not in rate:
            starts = [started(i) for i in ids]
            assert max(starts) - min(starts) <= TOLERANCE
    # A wave fails exactly when one of its items failed; failure skips exactly the transitive dependents.
    failed = {w.index for w in view.waves if w.state is WaveState.FAILED}
    for wave in ran:
        assert (wave.index in failed) == any(i in failing for i in waves[wave.index]["items"])
    if view.status is not PlanStatus.ABORTED:
        skipped = {w.index for w in view.waves if w.state is WaveState.SKIPPED}
        assert skipped == transitive_dependents([_plan(w) for w in view.waves], failed), view.model_dump_json(
            indent=1, include={"waves", "events", "counts"})
        assert view.status in (PlanStatus.COMPLETED, PlanStatus.COMPLETED_WITH_FAILURES, PlanStatus.FAILED)
        assert (view.status is PlanStatus.COMPLETED) == (not failed)
    # The threshold: once reached (as the plan saw it), nothing more starts, so failures
    # never exceed it by more than the items already running then.
    threshold = rate.get("error_threshold")
    seen_failures = sorted(_at(items[i].finished_at) for i in runs if i in failing)
    if threshold is not None and len(seen_failures) >= threshold:
        reached = seen_failures[threshold - 1]
        late = [i for i in runs if _at(items[i].started_at) > reached]
        assert late == [], f"started after the threshold was reached at {reached}: {late}"
        assert len(seen_failures) <= threshold - 1 + rate["max_concurrency"]
        # Paused, then aborted by this test; unless nothing was left that could start.
        assert view.status is PlanStatus.ABORTED or "PENDING" not in view.counts
    # Nothing failing changed; everything that completed is stopped in moto.
    for rec_id, item in items.items():
        if item.status == "COMPLETED":
            assert aws.instance_state(item.recommendation.resource_id)[0] == "stopped"
        elif rec_id not in failing:
            assert aws.instance_state(item.recommendation.resource_id)[0] == "running"


def started_of_wave(ids: list[str], runs: dict[str, Any], started: Any) -> datetime:
    return min(started(i) for i in ids if i in runs)


def _plan(wave: Any) -> Any:
    from domain.plan import WavePlan

    return WavePlan(index=wave.index, name=wave.name, size=wave.size, depends_on=wave.depends_on)


def _at(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment
