"""Change windows and freezes: when a change may start (pure).

A window opens on a cron schedule in its time zone and stays open for its
duration (as AWS Compute Optimizer's automation rules and SSM Maintenance
Windows have them); a freeze is a dated range in which nothing changes,
auto-approved or not. Each names what it covers (customers, accounts, kinds,
resource tags; empty covers everything). With no window covering a change, it
may start at any time outside a freeze.

`next_start` answers the one question an execution asks before it changes
anything: the earliest moment, from now, at which the whole change (its kind's
expected duration) fits inside a covering window and touches no covering freeze.
The execution asks it through a local activity (the worker's windows file), so a
freeze added while it waits is seen when it asks again at the opening.

A window may instead name an SSM maintenance window of the change's own account and
region, and a freeze an SSM Change Calendar (`domain/ssm_schedules.py`); the activity
reads them (`Lookups`) and this answers from what it read. A window that cannot be used
(missing, disabled, no permission) opens nothing, and a calendar that cannot be read
freezes everything it covers: a named window that is not there is no window, never
"no window, so always open".
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from pydantic import Field, field_validator, model_validator

from domain.base import StrictModel, TimeZoneName
from domain.ssm_schedules import CalendarTimeline, MaintenanceWindow, Opening, ScheduleError

#: How far ahead a change looks for an opening; none within it is an answer, not a wait.
HORIZON = timedelta(days=62)
#: Openings of one window looked at, at most (a window every minute for two months is 89,280).
MAX_OPENINGS = 100_000
#: Where an unreadable Change Calendar's freeze ends: past any horizon.
FOREVER = datetime(9999, 1, 1, tzinfo=UTC)


class Covers(StrictModel):
    """What a window or a freeze applies to: every list that is given must match."""

    customers: list[str] = Field(default_factory=list)
    accounts: list[str] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict, description="The resource carries every one of them.")

    def covers(self, change: ChangeScope) -> bool:
        return ((not self.customers or change.customer_id in self.customers)
                and (not self.accounts or change.account_id in self.accounts)
                and (not self.kinds or change.kind in self.kinds)
                and all(change.tags.get(k) == v for k, v in self.tags.items()))


class ChangeWindow(Covers):
    name: str = Field(min_length=1, max_length=128)
    cron: str | None = Field(default=None, description="When the window opens, five fields, e.g. `0 22 * * MON-FRI`.")
    ssm_window: str | None = Field(default=None, min_length=1, max_length=128, description=(
        "Instead of cron, timezone and duration: an SSM maintenance window of the change's own account "
        "and region, by id (mw-...) or name; its schedule, zone, duration and cutoff count."))
    timezone: TimeZoneName = "UTC"
    duration: timedelta | None = Field(default=None, gt=timedelta(0), le=timedelta(days=7))

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            CronSim(value, datetime(2026, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"not a cron expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> ChangeWindow:
        if (self.cron is None) == (self.ssm_window is None):
            raise ValueError("a window has either a cron (with a duration) or an ssm_window")
        if self.cron is not None and self.duration is None:
            raise ValueError("a cron window needs a duration (e.g. PT4H)")
        if self.ssm_window is not None and ({"duration", "timezone"} & self.model_fields_set):
            raise ValueError("an ssm_window brings its own schedule, time zone and duration: give none here")
        return self

    def openings(self, since: datetime, until: datetime) -> Iterator[Opening]:
        """Every opening of a cron window that is still open at `since`, up to `until`."""
        assert self.cron is not None and self.duration is not None
        start = (since - self.duration).astimezone(ZoneInfo(self.timezone))
        for n, local in enumerate(CronSim(self.cron, start)):
            opens = local.astimezone(UTC)  # durations are absolute time, across a DST change too
            if n >= MAX_OPENINGS or opens > until:
                return
            closes = opens + self.duration
            if closes > since:
                yield Opening(opens, closes, closes)


class Freeze(Covers):
    name: str = Field(min_length=1, max_length=128)
    start: datetime | None = None
    end: datetime | None = None
    change_calendar: str | None = Field(default=None, min_length=1, max_length=2048, description=(
        "Instead of start and end: an SSM Change Calendar (name or ARN) of the change's account and "
        "region; frozen while it is CLOSED."))
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if self.change_calendar is not None:
            if self.start is not None or self.end is not None:
                raise ValueError("a freeze has either start and end or a change_calendar, not both")
            return self
        if self.start is None or self.end is None:
            raise ValueError("a freeze has a start and an end (or a change_calendar)")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a freeze's start and end carry a time zone (e.g. 2026-12-20T00:00:00Z)")
        if self.end <= self.start:
            raise ValueError("a freeze ends after it starts")
        return self


class Frozen(NamedTuple):
    """One dated stretch of a freeze: a dated freeze, or a CLOSED stretch of its calendar."""

    name: str
    start: datetime
    end: datetime
    reason: str


class WindowsFile(StrictModel):
    """`RECLAIM_WINDOWS_FILE`: the deployment's change windows and freezes."""

    windows: list[ChangeWindow] = Field(default_factory=list)
    freezes: list[Freeze] = Field(default_factory=list)


class ChangeScope(StrictModel):
    """The change that asks: whose, where, what, and the tags its resource carries now."""

    customer_id: str
    account_id: str
    region: str
    kind: str
    tags: dict[str, str] = Field(default_factory=dict)
    needs: timedelta = Field(default=timedelta(minutes=15), ge=timedelta(0),
                             description="The kind's expected duration: the change must fit before the close.")
    now: datetime


class WindowVerdict(StrictModel):
    open: bool
    """The change may start now."""
    start: datetime | None
    """When it may start (now when open); None when no opening is within the horizon."""
    closes: datetime | None = None
    """When the window it starts in closes (None: no window covers it)."""
    reason: str


class Lookups(StrictModel):
    """What the change's own account said when the activity asked: its SSM maintenance windows
    (by the entry's `ssm_window`) and Change Calendars (by `change_calendar`), or why not."""

    windows: dict[str, MaintenanceWindow | str] = Field(default_factory=dict)
    calendars: dict[str, CalendarTimeline | str] = Field(default_factory=dict)


def next_start(rules: WindowsFile, change: ChangeScope, lookups: Lookups | None = None) -> WindowVerdict:
    lookups = lookups or Lookups()
    now, needs = change.now, change.needs
    windows = [w for w in rules.windows if w.covers(change)]
    freezes = sorted((stretch for f in rules.freezes if f.covers(change) for stretch in frozen(f, lookups)),
                     key=lambda f: f.start)
    until = now + HORIZON
    unusable: list[str] = []
    spans: list[tuple[datetime, datetime, datetime, str]] = []
    for window in windows:
        found = window_openings(window, lookups, now, until)
        if isinstance(found, str):
            unusable.append(found)
        else:
            spans.extend((o.opens, o.last_start, o.closes, window.name) for o in found)
    if not windows:
        spans = [(now, until, until + needs, "")]
    for opens, last_start, closes, name in sorted(spans):
        start = max(opens, now)
        while start + needs <= closes and start < closes and start <= last_start and start <= until:
            blocking = [f for f in freezes if f.start < start + needs and f.end > start]
            if not blocking:
                return _verdict(start, closes if name else None, name, now, freezes)
            start = max(f.end for f in blocking)
    if windows and len(unusable) == len(windows):
        reason = f"no window to start in: {'; '.join(unusable)}"
    else:
        scope = " or ".join(w.name for w in windows) if windows else "no window"
        reason = f"no opening of {scope} fits {_human(needs)} outside the freezes within {HORIZON.days} days"
        reason += "".join(f"; {problem}" for problem in unusable)
        reason += "".join(f"; frozen by {f.name}" + (f" ({f.reason})" if f.reason else "")
                          + (f" until {f.end.isoformat()}" if f.end < FOREVER else "")
                          for f in freezes if f.start <= now < f.end and f.end > until)
    return WindowVerdict(open=False, start=None, reason=reason)


def window_openings(window: ChangeWindow, lookups: Lookups, now: datetime,
                    until: datetime) -> list[Opening] | str:
    """The window's openings from `now` to `until`, or why it has none to give (a named SSM
    window that is missing, disabled, unreadable or on a schedule Reclaim cannot read)."""
    if window.cron is not None:
        return list(window.openings(now, until))
    assert window.ssm_window is not None
    found = lookups.windows.get(window.ssm_window)
    if found is None:
        return f"window {window.name}: SSM maintenance window {window.ssm_window} was not read"
    if isinstance(found, str):
        return f"window {window.name}: {found}"
    if not found.enabled:
        return f"window {window.name}: {found.source()} is disabled"
    try:
        return list(found.openings(now, until))
    except ScheduleError as exc:
        return f"window {window.name}: {found.source()}: {exc}"


def frozen(freeze: Freeze, lookups: Lookups) -> list[Frozen]:
    """A freeze's dated stretches: its own dates, or its Change Calendar's CLOSED stretches; a
    calendar that could not be read freezes everything it covers until it can be."""
    if freeze.change_calendar is None:
        assert freeze.start is not None and freeze.end is not None
        return [Frozen(freeze.name, freeze.start, freeze.end, freeze.reason)]
    found = lookups.calendars.get(freeze.change_calendar)
    if not isinstance(found, CalendarTimeline):
        why = found or f"SSM Change Calendar {freeze.change_calendar} was not read"
        return [Frozen(freeze.name, datetime.min.replace(tzinfo=UTC), FOREVER, why)]
    reason = freeze.reason or f"SSM Change Calendar {freeze.change_calendar} is CLOSED"
    return [Frozen(freeze.name, span.start, span.end or FOREVER, reason) for span in found.closed]


def _verdict(start: datetime, closes: datetime | None, window: str, now: datetime,
             freezes: list[Frozen]) -> WindowVerdict:
    if start == now:
        where = f"inside window {window} (closes {closes.isoformat()})" if closes else "no window limits it"
        return WindowVerdict(open=True, start=start, closes=closes, reason=where)
    holding = [f for f in freezes if f.start <= now < f.end]
    if holding:
        why = f"frozen by {holding[0].name}" + (f" ({holding[0].reason})" if holding[0].reason else "")
        why += f" until {holding[0].end.isoformat()}"
    else:
        why = f"outside its window {window}" if window else "waiting"
    return WindowVerdict(open=False, start=start, closes=closes, reason=f"{why}; next start {start.isoformat()}"
                         + (f" in window {window}" if window else ""))


def _human(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
