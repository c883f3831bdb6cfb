"""Change windows and freezes: the pure answer (`domain/windows.py`), the file, and executions
that wait for their window on the time-skipping server (a freeze added while one waits holds it)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.testing import WorkflowEnvironment

from activities.aws import SessionFactory
from activities.windows import WindowActivities, WindowsFileError, parse_windows_file
from domain.execution import ApprovalInput, ExecutionOptions, ExecutionRequest, Refusal
from domain.policy import Policy, Role
from domain.status import ExecutionStatus as S
from domain.windows import ChangeScope, ChangeWindow, Freeze, WindowsFile, next_start
from starter.executions import Executions
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import recommendation
from worker import build_worker

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # a Monday

hours = st.integers(min_value=0, max_value=23)
windows_st = st.lists(st.builds(
    lambda h, length, days: ChangeWindow(name=f"w{h}", cron=f"0 {h} * * {days}", duration=timedelta(hours=length)),
    hours, st.integers(min_value=1, max_value=8), st.sampled_from(["*", "MON-FRI", "SAT,SUN", "WED"])), max_size=3)
freezes_st = st.lists(st.builds(
    lambda start, length: Freeze(name="f", start=T0 + timedelta(hours=start), end=T0 + timedelta(hours=start + length)),
    st.integers(min_value=-24, max_value=24 * 10), st.integers(min_value=1, max_value=72)), max_size=3)


def scope(now: datetime, needs: timedelta, **extra: object) -> ChangeScope:
    return ChangeScope(customer_id="acme", account_id="123456789012", region="us-east-1", kind="ec2.stop",
                       now=now, needs=needs, **extra)  # type: ignore[arg-type]


def _fits(rules: WindowsFile, start: datetime, needs: timedelta) -> bool:
    inside = not rules.windows or any(
        opens <= start and start + needs <= closes
        for w in rules.windows for opens, _, closes in w.openings(start, start + timedelta(days=1)))
    frozen = any(f.start < start + needs and f.end > start for f in rules.freezes)
    return inside and not frozen


@settings(max_examples=60, deadline=None)
@given(windows_st, freezes_st, st.integers(min_value=0, max_value=24 * 14), st.integers(min_value=0, max_value=180))
def test_the_answer_fits_a_window_touches_no_freeze_and_nothing_earlier_does(
    windows: list[ChangeWindow], freezes: list[Freeze], offset_h: int, needs_min: int,
) -> None:
    rules, now, needs = WindowsFile(windows=windows, freezes=freezes), T0 + timedelta(hours=offset_h), timedelta(minutes=needs_min)
    verdict = next_start(rules, scope(now, needs))
    if verdict.start is None:
        assert not verdict.open and "no opening" in verdict.reason
        return
    assert verdict.start >= now
    assert verdict.open is (verdict.start == now)
    assert _fits(rules, verdict.start, needs)
    # Windows open on the hour and freezes end on the hour: an earlier start would be a whole hour, or now.
    candidates = [now] + [now.replace(minute=0) + timedelta(hours=h) for h in range(1, 24 * 70)]
    earlier = [c for c in candidates if now <= c < verdict.start and _fits(rules, c, needs)]
    assert not earlier, f"{earlier[0]} fits before {verdict.start}"


def test_a_window_closing_before_the_change_could_finish_is_not_an_opening() -> None:
    rules = WindowsFile(windows=[ChangeWindow(name="short", cron="0 22 * * *", duration=timedelta(minutes=10))])
    verdict = next_start(rules, scope(T0, timedelta(minutes=15)))
    assert verdict.start is None and "short" in verdict.reason and "15 min" in verdict.reason


def test_windows_and_freezes_cover_only_what_they_name() -> None:
    rules = WindowsFile(
        windows=[ChangeWindow(name="other", cron="0 22 * * *", duration=timedelta(hours=2), accounts=["999999999999"])],
        freezes=[Freeze(name="prod", start=T0 - timedelta(hours=1), end=T0 + timedelta(days=2), tags={"env": "prod"})])
    assert next_start(rules, scope(T0, timedelta(minutes=15))).open  # neither covers it
    held = next_start(rules, scope(T0, timedelta(minutes=15), tags={"env": "prod"}))
    assert held.start == T0 + timedelta(days=2) and "frozen by prod" in held.reason


def test_a_malformed_windows_file_names_its_line_and_field() -> None:
    text = "windows:\n  - name: nightly\n    cron: '0 22 * * *'\n    duration: PT2H\n  - name: bad\n    cron: 'every day'\n" \
           "    duration: PT1H\nfreezes:\n  - name: f\n    start: 2026-12-20T00:00:00\n    end: 2026-12-21T00:00:00Z\n"
    with pytest.raises(WindowsFileError) as caught:
        parse_windows_file(text, "windows.yaml")
    assert any(p.startswith("windows.yaml:6: windows[1].cron: not a cron expression") for p in caught.value.problems)
    assert any(p.startswith("windows.yaml:9: freezes[0]") and "time zone" in p for p in caught.value.problems)


# ---- executions wait for their window --------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def windowed(skipping_env: WorkflowEnvironment, sessions: SessionFactory, store: Store, tmp_path: Path,
                   activity_executor: ThreadPoolExecutor) -> AsyncIterator[tuple[Executions, Path]]:
    path = tmp_path / "windows.yaml"
    path.write_text("windows: []\n")
    queue = f"windows-{uuid.uuid4()}"
    async with build_worker(skipping_env.client, task_queue=queue, sessions=sessions, store=store,
                            executor=activity_executor, max_concurrent_activities=16,
                            windows=WindowActivities(path)):
        yield Executions(skipping_env.client, queue), path


def _write(path: Path, windows: str, freezes: str = "") -> None:
    path.write_text(f"windows:\n{windows}\nfreezes:\n{freezes or '  []'}\n")


async def test_an_approved_change_waits_for_its_window_and_a_freeze_added_meanwhile_holds_it(
    skipping_env: WorkflowEnvironment, windowed: tuple[Executions, Path], aws: AwsAccount,
) -> None:
    executions, path = windowed
    now = await skipping_env.get_current_time()
    opens = (now + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    _write(path, f"  - name: nightly\n    cron: '0 {opens.hour} * * *'\n    duration: PT2H")
    instance = aws.instance()
    started = await executions.start(ExecutionRequest(
        recommendation=recommendation("ec2.stop", instance), requested_by="alice",
        options=ExecutionOptions(rollback_window=timedelta(0))))
    view = await executions.wait(started.execution_id, until=frozenset({S.SCHEDULED}))
    assert "outside its window nightly" in (view.step or "") and opens.isoformat() in (view.step or "")
    assert aws.instance_state(instance)[0] == "running"
    # A freeze over tonight's window, written while the execution waits: seen when it asks again.
    freeze_end = opens + timedelta(days=1)
    _write(path, f"  - name: nightly\n    cron: '0 {opens.hour} * * *'\n    duration: PT2H",
           f"  - name: launch\n    start: '{(opens - timedelta(minutes=30)).isoformat()}'\n"
           f"    end: '{freeze_end.isoformat()}'\n    reason: release day")
    await skipping_env.sleep(opens - now + timedelta(hours=3))
    view = await executions.status(started.execution_id)
    assert view.status is S.SCHEDULED and "frozen by launch (release day)" in (view.step or "")
    assert aws.instance_state(instance)[0] == "running"
    await skipping_env.sleep(freeze_end - opens + timedelta(hours=1))  # to the next night's window, open
    final = await executions.handle(started.execution_id).result()
    assert final.status is S.COMPLETED
    stopped_at = next(e.at for e in final.log if e.status is S.APPLYING)
    assert stopped_at >= freeze_end  # the next night's window, after the freeze
    assert aws.instance_state(instance)[0] in ("stopping", "stopped")


async def test_a_change_no_window_can_hold_is_refused_with_the_reason(
    windowed: tuple[Executions, Path], aws: AwsAccount,
) -> None:
    executions, path = windowed
    _write(path, "  - name: blink\n    cron: '0 3 * * *'\n    duration: PT5M")
    started = await executions.start(ExecutionRequest(
        recommendation=recommendation("ec2.stop", aws.instance()), requested_by="alice"))
    final = await executions.handle(started.execution_id).result()
    assert final.status is S.REJECTED_BY_VALIDATION and final.refusal is Refusal.NO_WINDOW
    assert "no opening of blink fits 15 min" in (final.reason or "")


async def test_one_approval_covers_a_maintenance_wait_and_a_window_wait_after_it(
    skipping_env: WorkflowEnvironment, windowed: tuple[Executions, Path], aws: AwsAccount,
) -> None:
    """Auto-approved, then tagged production during its maintenance wait: bob approves once at
    not_before; the change window is still closed then, and at its opening that one approval
    covers the change (no second AWAITING_APPROVAL; generation-2026-12-05-launches)."""
    executions, path = windowed
    now = await skipping_env.get_current_time()
    opens = (now + timedelta(hours=4)).replace(minute=0, second=0, microsecond=0)
    _write(path, f"  - name: nightly\n    cron: '0 {opens.hour} * * *'\n    duration: PT2H")
    instance = aws.instance()
    started = await executions.start(ExecutionRequest(
        recommendation=recommendation("ec2.stop", instance), requested_by="alice",
        policy=Policy(refuse_production=False),
        options=ExecutionOptions(not_before=now + timedelta(hours=1), rollback_window=timedelta(0))))
    await executions.wait(started.execution_id, until=frozenset({S.SCHEDULED}))
    aws.ec2.create_tags(Resources=[instance], Tags=[{"Key": "env", "Value": "production"}])
    await skipping_env.sleep(timedelta(hours=1, minutes=5))
    view = await executions.wait(started.execution_id, until=frozenset({S.AWAITING_APPROVAL}))
    await executions.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    view = await executions.wait(started.execution_id, until=frozenset({S.SCHEDULED}))
    assert "outside its window nightly" in (view.step or "")
    await skipping_env.sleep(opens - now)
    final = await executions.handle(started.execution_id).result()
    assert final.status is S.COMPLETED, final.reason
    entered = [b.status for a, b in zip(final.log, final.log[1:], strict=False) if a.status is not b.status]
    assert entered.count(S.AWAITING_APPROVAL) == 1, "\n".join(f"{e.at} {e.status} {e.message}" for e in final.log)
    assert aws.instance_state(instance)[0] in ("stopping", "stopped")
