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
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from pydantic import Field, field_validator, model_validator

from domain.base import StrictModel, TimeZoneName

#: How far ahead a change looks for an opening; none within it is an answer, not a wait.
HORIZON = timedelta(days=62)
#: Openings of one window looked at, at most (a window every minute for two months is 89,280).
MAX_OPENINGS = 100_000


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
    cron: str = Field(description="When the window opens, five fields, e.g. `0 22 * * MON-FRI`.")
    timezone: TimeZoneName = "UTC"
    duration: timedelta = Field(gt=timedelta(0), le=timedelta(days=7))

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            CronSim(value, datetime(2026, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"not a cron expression ({exc})") from None
        return value

    def openings(self, since: datetime, until: datetime) -> Iterator[tuple[datetime, datetime]]:
        """(opens, closes) of every opening that is still open at `since`, up to `until`."""
        start = (since - self.duration).astimezone(ZoneInfo(self.timezone))
        for n, local in enumerate(CronSim(self.cron, start)):
            opens = local.astimezone(UTC)  # durations are absolute time, across a DST change too
            if n >= MAX_OPENINGS or opens > until:
                return
            closes = opens + self.duration
            if closes > since:
                yield opens, closes


class Freeze(Covers):
    name: str = Field(min_length=1, max_length=128)
    start: datetime
    end: datetime
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a freeze's start and end carry a time zone (e.g. 2026-12-20T00:00:00Z)")
        if self.end <= self.start:
            raise ValueError("a freeze ends after it starts")
        return self


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


def next_start(rules: WindowsFile, change: ChangeScope) -> WindowVerdict:
    now, needs = change.now, change.needs
    windows = [w for w in rules.windows if w.covers(change)]
    freezes = sorted((f for f in rules.freezes if f.covers(change)), key=lambda f: f.start)
    until = now + HORIZON
    if windows:
        spans = sorted((opens, closes, w.name) for w in windows for opens, closes in w.openings(now, until))
    else:
        spans = [(now, until + needs, "")]
    for opens, closes, name in spans:
        start = max(opens, now)
        while start + needs <= closes and start <= until:
            blocking = [f for f in freezes if f.start < start + needs and f.end > start]
            if not blocking:
                return _verdict(start, closes if name else None, name, now, freezes)
            start = max(f.end for f in blocking)
    scope = " or ".join(w.name for w in windows) if windows else "no window"
    return WindowVerdict(open=False, start=None, reason=(
        f"no opening of {scope} fits {_human(needs)} outside the freezes within {HORIZON.days} days"))


def _verdict(start: datetime, closes: datetime | None, window: str, now: datetime,
             freezes: list[Freeze]) -> WindowVerdict:
    if start == now:
        where = f"inside window {window} (closes {closes.isoformat()})" if closes else "no window limits it"
        return WindowVerdict(open=True, start=start, closes=closes, reason=where)
    frozen = [f for f in freezes if f.start <= now < f.end]
    if frozen:
        why = f"frozen by {frozen[0].name}" + (f" ({frozen[0].reason})" if frozen[0].reason else "")
        why += f" until {frozen[0].end.isoformat()}"
    else:
        why = f"outside its window {window}" if window else "waiting"
    return WindowVerdict(open=False, start=start, closes=closes, reason=f"{why}; next start {start.isoformat()}"
                         + (f" in window {window}" if window else ""))


def _human(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
