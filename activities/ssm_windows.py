"""Reading an account's SSM maintenance windows and Change Calendars for `ask_window`.

Through the account's session (the accounts file's role, the same `SessionFactory` every
activity uses), so a window is read where the change happens. Each read is kept for a
bounded time (`ttl`, 5 minutes): a thousand executions waiting on one account's window
read it once per account, region and window in that time, not once each. What cannot be
used (no such window, AccessDenied, a calendar that does not exist) is an answer too, kept
as its reason: the window opens nothing and the calendar freezes (`domain/windows.py`).
A throttle or a network fault is raised instead, so the local activity retries.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from activities.aws import SessionFactory
from domain.ssm_schedules import CalendarTimeline, ClosedSpan, MaintenanceWindow
from domain.windows import HORIZON, ChangeScope, Lookups, WindowsFile

#: How long a read is kept.
DEFAULT_TTL = timedelta(minutes=5)
#: Reads kept at most; the least recently read go first.
MAX_CACHED = 4096
#: GetCalendarState calls to follow a calendar's transitions over the horizon, at most.
MAX_TRANSITIONS = 12
#: Error codes that are the account's answer, not a passing fault: kept and said, never retried.
ANSWERS = frozenset({
    "DoesNotExistException", "AccessDeniedException", "AccessDenied", "UnauthorizedOperation",
    "ValidationException", "InvalidDocument", "InvalidDocumentType", "UnsupportedCalendarException",
    "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException",
})
_WINDOW_ID = re.compile(r"^mw-[0-9a-f]{17}$")

Clock = Callable[[], float]


class SsmReader:
    """`sessions` None: no account can be read (every named window or calendar says so)."""

    def __init__(self, sessions: SessionFactory | None, ttl: timedelta = DEFAULT_TTL,
                 clock: Clock = time.monotonic) -> None:
        self._sessions = sessions
        self._ttl = ttl.total_seconds()
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, ...], tuple[float, Any]] = OrderedDict()
        self.reads = 0
        """AWS calls made (tests hold the cache to it)."""

    def lookups(self, rules: WindowsFile, change: ChangeScope) -> Lookups:
        """What the change's account and region say of the SSM windows and calendars that cover it."""
        windows = {w.ssm_window: self.window(change.account_id, change.region, w.ssm_window)
                   for w in rules.windows if w.ssm_window is not None and w.covers(change)}
        calendars = {f.change_calendar: self.calendar(change.account_id, change.region, f.change_calendar, change.now)
                     for f in rules.freezes if f.change_calendar is not None and f.covers(change)}
        return Lookups(windows=windows, calendars=calendars)

    def window(self, account_id: str, region: str, ref: str) -> MaintenanceWindow | str:
        """The maintenance window `ref` (its id, mw-..., or its name) of the account and region."""
        key = ("window", account_id, region, ref)
        cached = self._cached(key, None)
        if cached is not None:
            return cached
        found = self._read_window(account_id, region, ref)
        self._keep(key, found)
        return found

    def calendar(self, account_id: str, region: str, ref: str, at: datetime) -> CalendarTimeline | str:
        """The Change Calendar `ref` (name or ARN) from `at` on: its CLOSED stretches over the horizon."""
        key = ("calendar", account_id, region, ref)
        cached = self._cached(key, at)
        if cached is not None:
            return cached
        found = self._read_calendar(account_id, region, ref, at)
        self._keep(key, found)
        return found

    # ---- the cache -------------------------------------------------------------------------

    def _cached(self, key: tuple[str, ...], at: datetime | None) -> Any:
        with self._lock:
            hit = self._cache.get(key)
            if hit is None or self._clock() - hit[0] >= self._ttl:
                return None
            value = hit[1]
            # A calendar's timeline runs from the moment it was asked about; an earlier moment is not in it.
            if at is not None and isinstance(value, CalendarTimeline) and at < value.at:
                return None
            self._cache.move_to_end(key)
            return value

    def _keep(self, key: tuple[str, ...], value: Any) -> None:
        with self._lock:
            self._cache[key] = (self._clock(), value)
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)

    # ---- the reads -------------------------------------------------------------------------

    def _ssm(self, account_id: str, region: str) -> Any:
        if self._sessions is None:
            raise LookupError("this process reads no AWS account")
        return self._sessions.client(account_id, region, "ssm")

    def _read_window(self, account_id: str, region: str, ref: str) -> MaintenanceWindow | str:
        where = f"{account_id}/{region}"
        try:
            ssm = self._ssm(account_id, region)
            if _WINDOW_ID.match(ref):
                self.reads += 1
                identity = ssm.get_maintenance_window(WindowId=ref)
            else:
                found = []
                for page in ssm.get_paginator("describe_maintenance_windows").paginate(
                        Filters=[{"Key": "Name", "Values": [ref]}]):
                    self.reads += 1
                    found += [w for w in page.get("WindowIdentities", []) if w.get("Name") == ref]
                if len(found) != 1:
                    return (f"SSM maintenance window {ref} does not exist in {where}" if not found else
                            f"{len(found)} SSM maintenance windows are named {ref} in {where}: name one by its id")
                identity = found[0]
        except LookupError as exc:
            return f"SSM maintenance window {ref} in {where} cannot be read: {exc}"
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "DoesNotExistException":
                return f"SSM maintenance window {ref} does not exist in {where}"
            if code in ANSWERS:
                return (f"SSM maintenance window {ref} in {where} cannot be read: {code} (the role needs "
                        "ssm:GetMaintenanceWindow and ssm:DescribeMaintenanceWindows)")
            raise
        return maintenance_window(identity, account_id, region)

    def _read_calendar(self, account_id: str, region: str, ref: str, at: datetime) -> CalendarTimeline | str:
        where = f"{account_id}/{region}"
        try:
            ssm = self._ssm(account_id, region)
            state, upcoming = self._state(ssm, ref, at)
            timeline = CalendarTimeline(calendar=ref, account_id=account_id, region=region, at=at, state=state,
                                        next_transition=upcoming)
            moment, reads = at, 1
            while True:
                if state == "CLOSED":
                    timeline.closed.append(ClosedSpan(start=moment, end=upcoming))
                if upcoming is None or upcoming > at + HORIZON:
                    break
                if reads >= MAX_TRANSITIONS:  # not followed further: assume it may close again then
                    if state != "CLOSED":
                        timeline.closed.append(ClosedSpan(start=upcoming, end=None))
                    break
                moment = upcoming
                state, upcoming = self._state(ssm, ref, moment)
                reads += 1
        except (LookupError, ValueError) as exc:  # no way into the account; a time that is not ISO 8601
            return f"SSM Change Calendar {ref} in {where} cannot be read: {exc}"
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ANSWERS:
                return f"SSM Change Calendar {ref} in {where} cannot be read: {code}"
            raise
        return timeline

    def _state(self, ssm: Any, ref: str, at: datetime) -> tuple[str, datetime | None]:
        self.reads += 1
        answer = ssm.get_calendar_state(CalendarNames=[ref], AtTime=at.astimezone(UTC).isoformat())
        return str(answer["State"]), _when(answer.get("NextTransitionTime"))


def maintenance_window(identity: dict[str, Any], account_id: str, region: str) -> MaintenanceWindow | str:
    """GetMaintenanceWindow's (or a DescribeMaintenanceWindows identity's) fields as a window, or
    why it cannot be one. A missing Enabled is taken as disabled: no window, no change."""
    ref = identity.get("WindowId") or identity.get("Name") or "?"
    try:
        return MaintenanceWindow(
            window_id=str(identity.get("WindowId", "")), name=str(identity.get("Name", "")),
            account_id=account_id, region=region, schedule=str(identity.get("Schedule", "")),
            timezone=identity.get("ScheduleTimezone") or "UTC", offset_days=identity.get("ScheduleOffset") or 0,
            duration=timedelta(hours=int(identity.get("Duration") or 0)),
            cutoff=timedelta(hours=int(identity.get("Cutoff") or 0)),
            enabled=bool(identity.get("Enabled", False)),
            start_date=_when(identity.get("StartDate")), end_date=_when(identity.get("EndDate")),
            anchor=(_when(identity.get("NextExecutionTime")) or _when(identity.get("StartDate"))
                    or _when(identity.get("CreatedDate"))),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors(include_input=False, include_url=False))
        return f"SSM maintenance window {ref} in {account_id}/{region} cannot be used: {problems}"
    except ValueError as exc:  # a date that is not ISO 8601
        return f"SSM maintenance window {ref} in {account_id}/{region} cannot be used: {exc}"


def _when(value: Any) -> datetime | None:
    """An AWS time (a datetime, or an ISO-8601 string; without an offset, UTC)."""
    if value in (None, ""):
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
