"""An account's SSM maintenance windows as its change windows and SSM Change Calendars as freezes:
the pure schedule (property tests), `ask_window` reading moto's maintenance windows through the
SessionFactory (cron and rate, time zone, cutoff, start and end dates, missing, by name, cached),
botocore's Stubber where moto has nothing (a disabled window; GetCalendarState), `reclaim windows
next`, the IAM policy, and an execution on the time-skipping server waiting for the SSM window."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_asyncio
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from typer.testing import CliRunner

import starter.windows_cli as windows_cli
from activities.aws import SessionFactory
from activities.iam import policy_document
from activities.ssm_windows import SsmReader
from activities.windows import WindowActivities, WindowsFileError, parse_windows_file
from domain.execution import ExecutionOptions, ExecutionRequest
from domain.ssm_schedules import MaintenanceWindow, next_rate_opening
from domain.status import ExecutionStatus as S
from domain.windows import ChangeScope, ChangeWindow, Lookups, WindowsFile, WindowVerdict, next_start
from starter.executions import Executions
from store.repository import Store
from tests.conftest import ACCOUNT, REGION, AwsAccount
from tests.helpers import recommendation
from worker import build_worker

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # a Monday; Paris is UTC+1 in December
QUARTER = timedelta(minutes=15)


def scope(now: datetime, needs: timedelta = QUARTER) -> ChangeScope:
    return ChangeScope(customer_id="acme", account_id=ACCOUNT, region=REGION, kind="ec2.stop", now=now, needs=needs)


# ---- the pure schedule -----------------------------------------------------------------------

moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
periods = st.integers(min_value=1, max_value=7 * 24 * 60).map(lambda m: timedelta(minutes=m))


@given(moments, periods, moments)
def test_a_rate_opens_at_the_first_run_at_or_after_the_moment(anchor: datetime, period: timedelta,
                                                              at: datetime) -> None:
    opens = next_rate_opening(anchor, period, at)
    assert at <= opens < at + period
    assert (opens - anchor) % period == timedelta(0)


@given(st.integers(min_value=1, max_value=7), st.integers(min_value=0, max_value=23),
       st.sampled_from(["UTC", "Europe/Paris", "America/Los_Angeles", "Asia/Tokyo"]))
def test_aws_day_of_week_counts_from_sunday_as_one(day: int, hour: int, zone: str) -> None:
    window = MaintenanceWindow(window_id="mw-0", name="w", account_id=ACCOUNT, region=REGION,
                               schedule=f"cron(0 {hour} ? * {day} *)", timezone=zone, duration=timedelta(hours=1))
    from zoneinfo import ZoneInfo

    opened = [o.opens.astimezone(ZoneInfo(zone)) for o in window.openings(T0, T0 + timedelta(days=21))]
    assert 3 <= len(opened) <= 4  # three weeks, from a moment inside one
    assert all(o.isoweekday() % 7 == day - 1 and o.hour == hour for o in opened)


def test_an_offset_moves_whole_days_and_at_runs_once() -> None:
    # The third Tuesday of December 2026 is the 15th; two days later, 23:30 in Los Angeles.
    offset = MaintenanceWindow(window_id="mw-0", name="w", account_id=ACCOUNT, region=REGION,
                               schedule="cron(30 23 ? * TUE#3 *)", timezone="America/Los_Angeles", offset_days=2,
                               duration=timedelta(hours=4), cutoff=timedelta(hours=1))
    first = next(offset.openings(T0, T0 + timedelta(days=40)))
    assert first.opens == datetime(2026, 12, 18, 7, 30, tzinfo=UTC)  # Thursday 17th, 23:30 PST
    assert first.last_start == first.opens + timedelta(hours=3) and first.closes == first.opens + timedelta(hours=4)
    once = MaintenanceWindow(window_id="mw-0", name="w", account_id=ACCOUNT, region=REGION,
                             schedule="at(2026-12-20T02:00:00)", duration=timedelta(hours=2))
    assert [o.opens for o in once.openings(T0, T0 + timedelta(days=60))] == [datetime(2026, 12, 20, 2, tzinfo=UTC)]
    with pytest.raises(ValueError, match="six fields"):
        MaintenanceWindow(window_id="mw-0", name="w", account_id=ACCOUNT, region=REGION,
                          schedule="cron(0 22 * * *)", duration=timedelta(hours=2))


ssm_windows = st.builds(
    lambda schedule, duration, cutoff: MaintenanceWindow(
        window_id="mw-0", name="w", account_id=ACCOUNT, region=REGION, schedule=schedule,
        duration=timedelta(hours=duration), cutoff=timedelta(hours=min(cutoff, duration - 1)),
        anchor=T0 - timedelta(hours=5)),
    st.sampled_from(["cron(0 22 ? * MON-FRI *)", "cron(0 3 ? * SAT,SUN *)", "rate(6 hours)", "rate(2 days)",
                     "cron(30 23 ? * TUE#1 *)", "rate(90 minutes)"]),
    st.integers(min_value=1, max_value=8), st.integers(min_value=0, max_value=4))


@settings(max_examples=60, deadline=None)
@given(ssm_windows, st.integers(min_value=0, max_value=24 * 14 * 4), st.integers(min_value=0, max_value=180))
def test_a_change_starts_inside_an_ssm_opening_before_its_cutoff_and_never_earlier(
    window: MaintenanceWindow, offset_quarters: int, needs_min: int,
) -> None:
    now, needs = T0 + offset_quarters * QUARTER, timedelta(minutes=needs_min)
    rules = WindowsFile(windows=[ChangeWindow(name="ssm", ssm_window="w")])
    verdict = next_start(rules, scope(now, needs), Lookups(windows={"w": window}))

    def fits(start: datetime) -> bool:
        return any(o.opens <= start <= o.last_start and start + needs <= o.closes and start < o.closes
                   for o in window.openings(start, start + timedelta(days=1)))

    if verdict.start is None:
        assert not verdict.open
        return
    assert verdict.start >= now and fits(verdict.start)
    # Openings fall on whole quarters of an hour: an earlier start would be one, or now.
    candidates = [now] + [now + k * QUARTER for k in range(1, 4 * 24 * 8)]
    assert not [c for c in candidates if c < verdict.start and fits(c)]


def test_an_entry_names_either_a_cron_or_an_ssm_window_and_a_freeze_dates_or_a_calendar() -> None:
    text = ("windows:\n  - name: both\n    cron: '0 22 * * *'\n    duration: PT2H\n    ssm_window: patch-nights\n"
            "  - name: zoned\n    ssm_window: patch-nights\n    timezone: Europe/Paris\n"
            "freezes:\n  - name: mixed\n    change_calendar: prod\n    start: 2026-12-20T00:00:00Z\n")
    with pytest.raises(WindowsFileError) as caught:
        parse_windows_file(text, "windows.yaml")
    assert caught.value.problems == [
        "windows.yaml:2: windows[0]: a window has either a cron (with a duration) or an ssm_window",
        "windows.yaml:6: windows[1]: an ssm_window brings its own schedule, time zone and duration: give none here",
        "windows.yaml:10: freezes[0]: a freeze has either start and end or a change_calendar, not both",
    ]
    good = parse_windows_file("windows:\n  - {name: patching, ssm_window: patch-nights}\n"
                              "freezes:\n  - {name: launch, change_calendar: 'arn:aws:ssm:us-east-1:123456789012:document/prod'}\n")
    assert good.windows[0].ssm_window == "patch-nights" and good.freezes[0].change_calendar


# ---- ask_window on moto's maintenance windows --------------------------------------------------


@pytest.fixture
def ssm(aws: AwsAccount) -> Any:
    return boto3.client("ssm", region_name=REGION, endpoint_url=aws.endpoint)


def _window(ssm: Any, name: str, schedule: str, duration: int, cutoff: int = 0, **extra: Any) -> str:
    return str(ssm.create_maintenance_window(Name=name, Schedule=schedule, Duration=duration, Cutoff=cutoff,
                                             AllowUnassociatedTargets=True, **extra)["WindowId"])


def _file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / f"windows-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(body)
    return path


async def _ask(windows: WindowActivities, now: datetime, needs: timedelta = QUARTER) -> WindowVerdict:
    verdict: WindowVerdict = await ActivityEnvironment().run(windows.ask, scope(now, needs))
    return verdict


async def test_an_ssm_cron_window_opens_in_its_time_zone_and_no_change_starts_in_its_cutoff(
    ssm: Any, sessions: SessionFactory, tmp_path: Path,
) -> None:
    window_id = _window(ssm, "patch-nights", "cron(0 22 ? * MON-FRI *)", duration=4, cutoff=1,
                        ScheduleTimezone="Europe/Paris")
    by_id = WindowActivities(_file(tmp_path, f"windows:\n  - name: patching\n    ssm_window: {window_id}\n"),
                             sessions=sessions)
    waiting = await _ask(by_id, T0)
    monday_22_paris = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
    assert not waiting.open and waiting.start == monday_22_paris
    assert waiting.closes == monday_22_paris + timedelta(hours=4)
    assert "outside its window patching" in waiting.reason
    inside = await _ask(by_id, datetime(2026, 12, 7, 23, 30, tzinfo=UTC))
    assert inside.open and inside.closes == datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    # 00:30 UTC: 30 minutes before the close, room for 15, but inside the last hour (the cutoff).
    cut_off = await _ask(by_id, datetime(2026, 12, 8, 0, 30, tzinfo=UTC))
    assert not cut_off.open and cut_off.start == datetime(2026, 12, 8, 21, 0, tzinfo=UTC)
    # Friday's window runs into Saturday; Saturday and Sunday have none.
    friday = await _ask(by_id, datetime(2026, 12, 12, 8, 0, tzinfo=UTC))
    assert friday.start == datetime(2026, 12, 14, 21, 0, tzinfo=UTC)

    by_name = WindowActivities(_file(tmp_path, "windows:\n  - name: patching\n    ssm_window: patch-nights\n"),
                               sessions=sessions)
    assert (await _ask(by_name, T0)).start == monday_22_paris


async def test_aws_numbered_days_and_a_rate_window_between_its_start_and_end_dates(
    ssm: Any, sessions: SessionFactory, tmp_path: Path,
) -> None:
    monday = _window(ssm, "mondays", "cron(0 22 ? * 2 *)", duration=2)  # 2 is Monday in AWS's cron
    rate = _window(ssm, "every-six", "rate(6 hours)", duration=1, StartDate="2026-12-07T03:00:00Z",
                   EndDate="2026-12-08T00:00:00Z")
    windows = WindowActivities(_file(tmp_path, f"windows:\n  - name: weekly\n    ssm_window: {monday}\n"
                                               "    kinds: [ec2.stop]\n  - name: six\n    ssm_window: every-six\n"
                                               "    kinds: [ebs.gp2_to_gp3]\n"), sessions=sessions)
    tuesday = datetime(2026, 12, 8, 8, 0, tzinfo=UTC)
    assert (await _ask(windows, tuesday)).start == datetime(2026, 12, 14, 22, 0, tzinfo=UTC)

    rules = windows.rules()

    def ebs(now: datetime) -> ChangeScope:
        return scope(now).model_copy(update={"kind": "ebs.gp2_to_gp3"})

    def verdict(now: datetime) -> WindowVerdict:
        return next_start(rules, ebs(now), windows.lookups(rules, ebs(now)))

    assert verdict(T0).start == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # 03, 09, 15, 21 from its start date
    assert verdict(T0 + timedelta(hours=1, minutes=30)).open  # 09:30, the 09:00 run is open until 10:00
    assert verdict(T0 - timedelta(days=2)).start == datetime(2026, 12, 7, 3, 0, tzinfo=UTC)  # not before it starts
    ended = verdict(datetime(2026, 12, 7, 21, 50, tzinfo=UTC))  # the last run (21:00) is past; it ends at midnight
    assert ended.start is None and "six" in ended.reason
    assert rate.startswith("mw-")


async def test_a_missing_window_refuses_with_the_reason_never_always_open(
    ssm: Any, sessions: SessionFactory, tmp_path: Path,
) -> None:
    for ref in ("mw-0123456789abcdef0", "no-such-window"):
        windows = WindowActivities(_file(tmp_path, f"windows:\n  - name: patching\n    ssm_window: {ref}\n"),
                                   sessions=sessions)
        verdict = await _ask(windows, T0)
        assert not verdict.open and verdict.start is None
        assert verdict.reason == (f"no window to start in: window patching: SSM maintenance window {ref} "
                                  f"does not exist in {ACCOUNT}/{REGION}")
    # Without a way into the account, a named window is no window either.
    unread = WindowActivities(_file(tmp_path, "windows:\n  - name: patching\n    ssm_window: patch-nights\n"))
    verdict = await _ask(unread, T0)
    assert verdict.start is None and "cannot be read" in verdict.reason


async def test_reads_are_kept_for_minutes_not_repeated_per_execution(
    ssm: Any, sessions: SessionFactory, tmp_path: Path,
) -> None:
    _window(ssm, "patch-nights", "cron(0 22 ? * * *)", duration=4)
    path = _file(tmp_path, "windows:\n  - name: patching\n    ssm_window: patch-nights\n")
    windows = WindowActivities(path, sessions=sessions)
    for hour in range(5):
        await _ask(windows, T0 + timedelta(hours=hour))
    assert windows.ssm.reads == 1
    clock = [0.0]
    reader = SsmReader(sessions, ttl=timedelta(minutes=5), clock=lambda: clock[0])
    rules = windows.rules()
    reader.lookups(rules, scope(T0))
    clock[0] = 299.0
    reader.lookups(rules, scope(T0))
    assert reader.reads == 1
    clock[0] = 300.0
    reader.lookups(rules, scope(T0))
    assert reader.reads == 2


def test_every_ssm_call_the_reader_makes_is_in_the_generated_policy(ssm: Any, moto_endpoint: str,
                                                                    tmp_path: Path) -> None:
    called: list[str] = []

    def record(session: boto3.Session) -> None:
        session.events.register("before-call", lambda model, **_: called.append(
            f"{model.service_model.signing_name}:{model.name}"))

    sessions = SessionFactory(endpoint_url=moto_endpoint, session_hooks=[record])
    window_id = _window(ssm, "patch-nights", "cron(0 22 ? * * *)", duration=4)
    reader = SsmReader(sessions)
    assert isinstance(reader.window(ACCOUNT, REGION, window_id), MaintenanceWindow)
    assert isinstance(reader.window(ACCOUNT, REGION, "patch-nights"), MaintenanceWindow)
    allowed = {a for s in policy_document(["ec2.stop"])["Statement"]
               for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert set(called) == {"ssm:GetMaintenanceWindow", "ssm:DescribeMaintenanceWindows"}
    assert set(called) | {"ssm:GetCalendarState", "ce:GetCostAndUsage", "ce:GetCostAndUsageWithResources",
                          "cloudwatch:GetMetricData"} <= allowed


# ---- botocore's Stubber: what moto lacks (a disabled window, GetCalendarState) -----------------


@pytest.fixture
def stubbed() -> Iterator[tuple[SessionFactory, Stubber]]:
    """A SessionFactory whose account's SSM client answers from the Stubber (responses the service
    model validates), the same client the activity gets."""
    sessions = SessionFactory()
    stubber = Stubber(sessions.client(ACCOUNT, REGION, "ssm"))
    with stubber:
        yield sessions, stubber
        stubber.assert_no_pending_responses()


def _state(stubber: Stubber, calendar: str, at: datetime, state: str, upcoming: datetime | None) -> None:
    answer: dict[str, Any] = {"State": state, "AtTime": at.isoformat()}
    if upcoming is not None:
        answer["NextTransitionTime"] = upcoming.isoformat()
    stubber.add_response("get_calendar_state", answer, {"CalendarNames": [calendar], "AtTime": at.isoformat()})


async def test_a_disabled_window_refuses_with_the_reason(stubbed: tuple[SessionFactory, Stubber],
                                                        tmp_path: Path) -> None:
    sessions, stubber = stubbed
    window_id = "mw-0123456789abcdef0"
    stubber.add_response("get_maintenance_window", {
        "WindowId": window_id, "Name": "patch-nights", "Schedule": "cron(0 22 ? * * *)", "Duration": 4,
        "Cutoff": 1, "Enabled": False}, {"WindowId": window_id})
    windows = WindowActivities(_file(tmp_path, f"windows:\n  - name: patching\n    ssm_window: {window_id}\n"),
                               sessions=sessions)
    verdict = await _ask(windows, T0)
    assert not verdict.open and verdict.start is None
    assert verdict.reason.startswith("no window to start in: window patching: SSM maintenance window "
                                     f"{window_id} (patch-nights) in {ACCOUNT}/{REGION}")
    assert verdict.reason.endswith("is disabled")


CALENDAR_FREEZE = "freezes:\n  - name: launch\n    change_calendar: prod-calendar\n"


async def test_a_change_calendar_freezes_while_closed_and_the_change_fits_between_its_transitions(
    stubbed: tuple[SessionFactory, Stubber], tmp_path: Path,
) -> None:
    sessions, stubber = stubbed
    closes, reopens = T0 + timedelta(hours=2), T0 + timedelta(hours=26)
    _state(stubber, "prod-calendar", T0, "OPEN", closes)
    _state(stubber, "prod-calendar", closes, "CLOSED", reopens)
    _state(stubber, "prod-calendar", reopens, "OPEN", None)
    windows = WindowActivities(_file(tmp_path, CALENDAR_FREEZE), sessions=sessions)
    assert (await _ask(windows, T0)).open  # 15 minutes fit before it closes
    long = await _ask(windows, T0, needs=timedelta(hours=3))  # 3 hours do not: after it opens again
    assert long.start == reopens and not long.open
    assert windows.ssm.reads == 3  # the second ask was answered from what the first read

    frozen = WindowActivities(_file(tmp_path, CALENDAR_FREEZE), sessions=sessions)
    now = T0 + timedelta(days=3)
    _state(stubber, "prod-calendar", now, "CLOSED", now + timedelta(hours=5))
    _state(stubber, "prod-calendar", now + timedelta(hours=5), "OPEN", None)
    held = await _ask(frozen, now)
    assert not held.open and held.start == now + timedelta(hours=5)
    assert held.reason.startswith("frozen by launch (SSM Change Calendar prod-calendar is CLOSED) until ")


async def test_a_calendar_that_cannot_be_read_freezes_with_the_reason(stubbed: tuple[SessionFactory, Stubber],
                                                                     tmp_path: Path) -> None:
    sessions, stubber = stubbed
    stubber.add_client_error("get_calendar_state", service_error_code="InvalidDocument",
                             service_message="The specified document does not exist.")
    windows = WindowActivities(_file(tmp_path, CALENDAR_FREEZE), sessions=sessions)
    verdict = await _ask(windows, T0)
    assert verdict.start is None and not verdict.open
    assert (f"frozen by launch (SSM Change Calendar prod-calendar in {ACCOUNT}/{REGION} cannot be read: "
            "InvalidDocument)") in verdict.reason


# ---- reclaim windows next ------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> Any:
    from starter.cli import app

    return CliRunner().invoke(app, ["windows", "next", *args], env=env)


def test_windows_next_shows_the_ssm_windows_next_opening_and_its_source(ssm: Any, tmp_path: Path) -> None:
    window_id = _window(ssm, "patch-nights", "cron(0 22 ? * * *)", duration=4, cutoff=1,
                        ScheduleTimezone="Europe/Paris")
    path = _file(tmp_path, "windows:\n  - name: patching\n    ssm_window: patch-nights\n")
    result = _cli("--account", ACCOUNT, "--file", str(path), env={"AWS_ENDPOINT_URL": ssm.meta.endpoint_url})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (f"window patching: SSM maintenance window {window_id} (patch-nights) in {ACCOUNT}/{REGION}: "
            "cron(0 22 ? * * *) Europe/Paris, 4 h, cutoff 1 h; next opening ") in text
    missing = _cli("--account", ACCOUNT, "--file", str(_file(tmp_path, "windows:\n  - name: p\n    ssm_window: nope\n")),
                   env={"AWS_ENDPOINT_URL": ssm.meta.endpoint_url})
    assert missing.exit_code == 0 and "never: no window to start in: window p: SSM maintenance window nope does " \
                                      "not exist" in " ".join(missing.output.split())


def test_windows_next_shows_the_calendars_state(stubbed: tuple[SessionFactory, Stubber], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sessions, stubber = stubbed
    stubber.add_response("get_calendar_state", {"State": "CLOSED", "NextTransitionTime": "2099-01-01T00:00:00Z"})
    monkeypatch.setattr(windows_cli, "_sessions", lambda: sessions)
    result = _cli("--account", ACCOUNT, "--file", str(_file(tmp_path, CALENDAR_FREEZE)), env={})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert text.startswith("never: ") and "frozen by launch" in text
    assert (f"freeze launch: SSM Change Calendar prod-calendar in {ACCOUNT}/{REGION}: CLOSED until "
            "2099-01-01T00:00:00+00:00") in text


# ---- an execution waits in SCHEDULED for the account's SSM window ------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def ssm_windowed(skipping_env: WorkflowEnvironment, sessions: SessionFactory, store: Store, tmp_path: Path,
                       activity_executor: ThreadPoolExecutor) -> AsyncIterator[tuple[Executions, Path]]:
    path = tmp_path / "windows.yaml"
    path.write_text("windows:\n  - name: patching\n    ssm_window: patch-nights\n")
    queue = f"ssm-windows-{uuid.uuid4()}"
    async with build_worker(skipping_env.client, task_queue=queue, sessions=sessions, store=store,
                            executor=activity_executor, max_concurrent_activities=16,
                            windows=WindowActivities(path, sessions=sessions)):
        yield Executions(skipping_env.client, queue), path


async def test_an_execution_waits_in_scheduled_for_the_accounts_ssm_window_then_runs(
    skipping_env: WorkflowEnvironment, ssm_windowed: tuple[Executions, Path], aws: AwsAccount, ssm: Any,
) -> None:
    executions, _ = ssm_windowed
    now = await skipping_env.get_current_time()
    opens = (now + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    _window(ssm, "patch-nights", f"cron(0 {opens.hour} ? * * *)", duration=2, cutoff=1)
    instance = aws.instance()
    started = await executions.start(ExecutionRequest(
        recommendation=recommendation("ec2.stop", instance), requested_by="alice",
        options=ExecutionOptions(rollback_window=timedelta(0))))
    view = await executions.wait(started.execution_id, until=frozenset({S.SCHEDULED}))
    assert "outside its window patching" in (view.step or "") and opens.isoformat() in (view.step or "")
    assert aws.instance_state(instance)[0] == "running"
    await skipping_env.sleep(opens - now + timedelta(minutes=30))  # into the window (the test server skips)
    final = await executions.handle(started.execution_id).result()
    assert final.status is S.COMPLETED
    stopped_at = next(e.at for e in final.log if e.status is S.APPLYING)
    assert opens <= stopped_at <= opens + timedelta(hours=1)  # inside the window, before its cutoff
    assert aws.instance_state(instance)[0] in ("stopping", "stopped")
