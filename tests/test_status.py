"""The execution state machine: transitions, terminal states and progress."""

from __future__ import annotations

from collections import deque
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.status import ACTIVE, TERMINAL, ExecutionStatus, can_transition, progress_percent

S = ExecutionStatus
ALL = list(ExecutionStatus)
NON_TERMINAL = [s for s in ALL if s not in TERMINAL]
HAPPY_PATH = [S.PENDING, S.VALIDATING, S.AWAITING_APPROVAL, S.BACKING_UP, S.APPLYING, S.VERIFYING, S.COMPLETED]


def successors(status: ExecutionStatus) -> list[ExecutionStatus]:
    return [s for s in ALL if can_transition(status, s)]


def reachable(start: ExecutionStatus) -> set[ExecutionStatus]:
    """Every state reachable from `start` in one or more allowed transitions."""
    seen: set[ExecutionStatus] = set()
    queue = deque(successors(start))
    while queue:
        status = queue.popleft()
        if status not in seen:
            seen.add(status)
            queue.extend(successors(status))
    return seen


@pytest.mark.parametrize("status", NON_TERMINAL)
def test_every_non_terminal_state_can_finish(status: ExecutionStatus) -> None:
    assert successors(status), f"{status} is a dead end but not terminal"
    assert reachable(status) & TERMINAL, f"no terminal state is reachable from {status}"


def test_every_state_is_reachable_from_pending() -> None:
    assert reachable(S.PENDING) == set(ALL) - {S.PENDING}


#: The one loop in the graph: a change approved, then scheduled, whose resource became riskier
#: during the wait is asked about again (at most once since generation-2026-12-05-launches; an older
#: run asked again at each look after a closed change window, each passing at once on that decision).
REAPPROVAL_LOOP = {S.AWAITING_APPROVAL, S.SCHEDULED}


@pytest.mark.parametrize("status", ALL)
def test_no_state_loops_back_to_itself_except_reapproval(status: ExecutionStatus) -> None:
    if status in REAPPROVAL_LOOP:
        assert status in reachable(status)
        loop = {s for s in reachable(status) if status in reachable(s)}
        assert loop == REAPPROVAL_LOOP
    else:
        assert status not in reachable(status)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_have_no_way_out(terminal: ExecutionStatus) -> None:
    assert successors(terminal) == []


def test_completed_can_only_roll_back() -> None:
    assert S.COMPLETED not in TERMINAL
    assert successors(S.COMPLETED) == [S.ROLLING_BACK]


def test_cancellation_is_refused_once_the_change_is_being_applied() -> None:
    assert can_transition(S.BACKING_UP, S.CANCELLED)
    for status in (S.APPLYING, S.VERIFYING, S.COMPLETED):
        assert not can_transition(status, S.CANCELLED)


@pytest.mark.parametrize("status", [S.BACKING_UP, S.APPLYING, S.VERIFYING, S.COMPLETED])
def test_once_the_change_may_have_started_it_can_roll_back(status: ExecutionStatus) -> None:
    assert can_transition(status, S.ROLLING_BACK)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_any_walk_the_workflow_can_take_ends_in_a_terminal_state(data: st.DataObject) -> None:
    """What is meant: every walk ends, and nothing but the re-approval loop repeats.

    The graph has one cycle (AWAITING_APPROVAL <-> SCHEDULED), which the workflow takes at
    most once: a change approved and scheduled is asked about again only once, after its
    wait. So walks take SCHEDULED -> AWAITING_APPROVAL at most once; along them no other
    state is visited twice, the two loop states at most twice each, and the walk is over
    (terminal) within len(ALL) + 2 steps, a bound that follows from the above.
    """
    status, visits, reapproved = S.PENDING, {S.PENDING: 1}, False
    while status not in TERMINAL:
        choices = [s for s in successors(status)
                   if not (reapproved and status is S.SCHEDULED and s is S.AWAITING_APPROVAL)]
        assert choices, f"stuck in {status}"
        after = data.draw(st.sampled_from(choices), label=f"after {status}")
        reapproved |= status is S.SCHEDULED and after is S.AWAITING_APPROVAL
        status = after
        visits[status] = visits.get(status, 0) + 1
        limit = 2 if status in REAPPROVAL_LOOP else 1
        assert visits[status] <= limit, f"{status} visited {visits[status]} times"
    assert sum(visits.values()) - 1 <= len(ALL) + 2


@pytest.mark.parametrize("status", ALL)
def test_progress_is_a_percentage(status: ExecutionStatus) -> None:
    percent = progress_percent(status)
    assert isinstance(percent, int)
    assert 0 <= percent <= 100
    if status in TERMINAL or status is S.COMPLETED:
        assert percent == 100
    else:
        assert percent < 100


def test_progress_never_goes_back_on_the_happy_path() -> None:
    for before, after in pairwise(HAPPY_PATH):
        assert can_transition(before, after), f"{before} -> {after}"
        assert progress_percent(before) <= progress_percent(after), f"{before} -> {after}"
    assert progress_percent(HAPPY_PATH[0]) == 0
    assert progress_percent(HAPPY_PATH[-1]) == 100


def test_auto_approved_and_scheduled_paths_are_allowed_and_monotonic() -> None:
    for path in (
        [S.PENDING, S.VALIDATING, S.BACKING_UP],
        [S.PENDING, S.VALIDATING, S.SCHEDULED, S.BACKING_UP],
        [S.AWAITING_APPROVAL, S.SCHEDULED, S.BACKING_UP],
    ):
        for before, after in pairwise(path):
            assert can_transition(before, after), f"{before} -> {after}"
            assert progress_percent(before) <= progress_percent(after), f"{before} -> {after}"


def test_active_and_terminal_are_disjoint_and_cover_everything_but_completed() -> None:
    assert not ACTIVE & TERMINAL
    assert S.COMPLETED not in ACTIVE
    assert ACTIVE | TERMINAL | {S.COMPLETED} == set(ALL)
