"""An account's own SSM Maintenance Windows and Change Calendars, as Reclaim reads them (pure).

A windows-file entry may name an SSM maintenance window of the change's account and region
instead of a cron; the worker reads it (`activities/ssm_windows.py`) into a `MaintenanceWindow`,
which opens exactly as SSM would run it: its `cron(...)` (six fields, AWS's day-of-week 1-7
from Sunday, `?`, a year), `rate(...)` or `at(...)` schedule in its ScheduleTimezone, moved by
ScheduleOffset days, only between StartDate and EndDate, open for Duration hours, and no new
change starts in its last Cutoff hours (SSM stops scheduling tasks then; so do we).

A freeze may name an SSM Change Calendar: the worker asks its state now and at each following
transition, and the CLOSED stretches (`CalendarTimeline`) become dated freezes.

Nothing here reads AWS or the clock: the same answer for the same reads, property-tested.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from pydantic import Field, field_validator

from domain.base import StrictModel, TimeZoneName

#: Openings of one window looked at, at most (a rate of 1 minute for two months is 89,280).
MAX_OPENINGS = 100_000

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_AT = re.compile(r"^at\(\s*(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_UNITS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
#: A day-of-week number not after `/` (a step) or `#` (the nth): AWS counts 1-7 from Sunday, cron 0-6.
_DOW_NUMBER = re.compile(r"(?<![/#\d])\d+")


class Opening(NamedTuple):
    opens: datetime
    last_start: datetime
    """The latest moment a change may start in it (the close less the window's cutoff)."""
    closes: datetime


class ScheduleError(ValueError):
    """A schedule expression Reclaim cannot read: the window is refused, never taken as open."""


def rate_period(expression: str) -> timedelta | None:
    """`rate(2 hours)` -> 2 h; None when it is not a rate expression."""
    found = _RATE.match(expression.strip())
    if found is None:
        return None
    count, unit = int(found.group(1)), found.group(2).removesuffix("s")
    if count <= 0:
        raise ScheduleError(f"{expression}: a rate is at least 1 {unit}")
    return count * _UNITS[unit]


def next_rate_opening(anchor: datetime, period: timedelta, at: datetime) -> datetime:
    """The first opening of a rate schedule at or after `at`: anchor + k x period, k any integer
    (the anchor is one known run, SSM's NextExecutionTime or the window's start)."""
    steps = -((anchor - at) // period)  # ceil((at - anchor) / period), exact on timedeltas
    return anchor + steps * period


def aws_cron_to_cron(fields: str) -> tuple[str, str]:
    """An SSM cron's six fields (minutes hours day-of-month month day-of-week year) as five-field
    cron and its year field: `?` is `*`, day-of-week numbers count from 0 (Sunday) instead of 1."""
    parts = fields.split()
    if len(parts) != 6:
        raise ScheduleError(f"cron({fields}): an SSM maintenance window's cron has six fields, not {len(parts)}")
    minute, hour, dom, month, dow, year = (p.replace("?", "*") for p in parts)
    dow = _DOW_NUMBER.sub(lambda m: str(int(m.group()) - 1), dow)
    return f"{minute} {hour} {dom} {month} {dow}", year


def year_matches(field: str, year: int) -> bool:
    """AWS cron's year field: `*`, `2027`, `2026-2028`, `2026,2028`, `2026/2`, `*/2`."""
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            low, high = 1970, 2199
        elif "-" in span:
            low_text, high_text = span.split("-", 1)
            low, high = int(low_text), int(high_text)
        else:
            low = int(span)
            high = 2199 if step_text else low
        if low <= year <= high and (year - low) % step == 0:
            return True
    return False


class MaintenanceWindow(StrictModel):
    """What GetMaintenanceWindow (or DescribeMaintenanceWindows) says of when a window runs."""

    window_id: str
    name: str
    account_id: str
    region: str
    schedule: str = Field(description="cron(...), rate(...) or at(...), as SSM has it.")
    timezone: TimeZoneName = "UTC"
    offset_days: int = Field(default=0, ge=0, le=6)
    duration: timedelta = Field(gt=timedelta(0))
    cutoff: timedelta = Field(default=timedelta(0), ge=timedelta(0))
    enabled: bool = True
    start_date: datetime | None = None
    end_date: datetime | None = None
    anchor: datetime | None = Field(default=None, description=(
        "One run a rate() counts from: NextExecutionTime, else StartDate, else CreatedDate."))

    @field_validator("schedule")
    @classmethod
    def _readable(cls, value: str) -> str:
        _parse(value)
        return value

    def source(self) -> str:
        """Where the window comes from and how it runs, for a person."""
        cutoff = f", cutoff {_hours(self.cutoff)}" if self.cutoff else ""
        offset = f", offset {self.offset_days} d" if self.offset_days else ""
        active = ""
        if self.start_date or self.end_date:
            active = (f", active {self.start_date.isoformat() if self.start_date else '…'}"
                      f" to {self.end_date.isoformat() if self.end_date else '…'}")
        return (f"SSM maintenance window {self.window_id} ({self.name}) in {self.account_id}/{self.region}: "
                f"{self.schedule} {self.timezone}{offset}, {_hours(self.duration)}{cutoff}{active}")

    def openings(self, since: datetime, until: datetime) -> Iterator[Opening]:
        """Every opening from which a change could still start at `since`, opening up to `until`."""
        for opens in self._starts(since - self.duration, until):
            if self.start_date is not None and opens < self.start_date:
                continue
            if self.end_date is not None and opens > self.end_date:
                return
            closes = opens + self.duration
            opening = Opening(opens, closes - self.cutoff, closes)
            if opening.last_start >= since:
                yield opening

    def _starts(self, since: datetime, until: datetime) -> Iterator[datetime]:
        kind, value = _parse(self.schedule)
        zone = ZoneInfo(self.timezone)
        if kind == "rate":
            assert isinstance(value, timedelta)
            anchor = self.anchor or self.start_date
            if anchor is None:
                raise ScheduleError(f"{self.schedule}: SSM gave no NextExecutionTime, StartDate or CreatedDate "
                                    "to count the rate from")
            opens = next_rate_opening(anchor, value, since)
            for _ in range(MAX_OPENINGS):
                if opens > until:
                    return
                yield opens
                opens += value
        elif kind == "at":
            assert isinstance(value, datetime)
            opens = value.replace(tzinfo=zone).astimezone(UTC)
            if since <= opens <= until:
                yield opens
        else:
            assert isinstance(value, tuple)
            cron, years = value
            offset = timedelta(days=self.offset_days)
            for n, local in enumerate(CronSim(cron, (since - offset).astimezone(zone))):
                # The offset moves whole days of wall-clock time in the window's zone.
                opens = (local + offset).astimezone(UTC)
                if n >= MAX_OPENINGS or opens > until:
                    return
                if year_matches(years, local.year):
                    yield opens


def _parse(expression: str) -> tuple[str, timedelta | datetime | tuple[str, str]]:
    text = expression.strip()
    period = rate_period(text)
    if period is not None:
        return "rate", period
    at = _AT.match(text)
    if at is not None:
        return "at", datetime.fromisoformat(at.group(1))
    cron = _CRON.match(text)
    if cron is None:
        raise ScheduleError(f"{expression}: not a cron(...), rate(...) or at(...) expression")
    five, years = aws_cron_to_cron(cron.group(1))
    try:
        CronSim(five, datetime(2026, 1, 1))
        year_matches(years, 2026)
    except (CronSimError, ValueError) as exc:
        raise ScheduleError(f"{expression}: not a cron expression ({exc})") from None
    return "cron", (five, years)


class ClosedSpan(StrictModel):
    start: datetime
    end: datetime | None = Field(description="None: no transition is scheduled, closed from then on.")


class CalendarTimeline(StrictModel):
    """An SSM Change Calendar's state from `at` on, read transition by transition with GetCalendarState."""

    calendar: str
    account_id: str
    region: str
    at: datetime
    state: str = Field(description="OPEN or CLOSED at `at`.")
    next_transition: datetime | None = None
    closed: list[ClosedSpan] = Field(default_factory=list)

    def describe(self) -> str:
        until = f" until {self.next_transition.isoformat()}" if self.next_transition else " (no transition scheduled)"
        return f"SSM Change Calendar {self.calendar} in {self.account_id}/{self.region}: {self.state}{until}"


def _hours(span: timedelta) -> str:
    hours, rest = divmod(int(span.total_seconds()), 3600)
    return f"{hours} h" + (f" {rest // 60} min" if rest else "")
