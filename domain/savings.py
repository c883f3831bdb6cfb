"""Savings checked: what a completed change saved, measured a while after it (issue 15).

A `SavingsCheckWorkflow` (workflows/savings.py) waits `after` (30 days by default) from
the change and then measures the resource's monthly savings one of two ways:

- **cost-explorer**: Cost Explorer's daily cost of the resource (its `RESOURCE_ID`) in a
  window before the change against the same window at the end of the period;
- **price-table**: when Cost Explorer has no resource-level cost for it (opt-in data that
  reaches back 14 days, or access denied), the price table applied to the resource as it
  was before the change and as it is now (still stopped, still gp3, still deleted...).

Pure: the parsing of Cost Explorer's answers, the price-table arithmetic and the
accuracy table live here; the AWS calls in activities/savings.py, the rows in store/.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import Field

from domain import pricing
from domain.base import StrictModel
from domain.execution import Observation, drift

DEFAULT_AFTER = timedelta(days=30)
DEFAULT_WINDOW = timedelta(days=7)
#: Cost metrics read from Cost Explorer's answers, the first present wins (UnblendedCost is asked for).
COST_METRICS = ("UnblendedCost", "NetUnblendedCost", "BlendedCost", "AmortizedCost", "NetAmortizedCost")


class MeasureMethod(StrEnum):
    COST_EXPLORER = "cost-explorer"
    PRICE_TABLE = "price-table"


class SavingsCheckInput(StrictModel):
    """The single input of SavingsCheckWorkflow: one completed change, and when to check it."""

    execution_id: str = Field(min_length=1, max_length=256)
    customer_id: str
    account_id: str = Field(pattern=r"^[0-9]{12}$")
    region: str
    kind: str
    resource_id: str
    estimated_monthly_savings: float = Field(ge=0)
    verified_monthly_savings: float | None = Field(
        default=None, description="The execution's actual_monthly_savings (the ledger's figure).")
    observed_before: Observation | None = Field(
        default=None, description="The resource as validation saw it, before the change.")
    observed_after: Observation | None = Field(
        default=None, description="The resource as it should stay after the change (what a hold is checked on).")
    changed_at: datetime | None = Field(
        default=None, description="When the change was verified; None: when this check started.")
    after: timedelta = Field(default=DEFAULT_AFTER, gt=timedelta(0), le=timedelta(days=366),
                             description="How long after the change the savings are measured.")
    window: timedelta = Field(default=DEFAULT_WINDOW, ge=timedelta(days=1), le=timedelta(days=31),
                              description="Days of Cost Explorer cost compared on each side of the change.")


class MeasureInput(StrictModel):
    """What `measure_savings` gets: the check and the period as the workflow's clock saw it."""

    check: SavingsCheckInput
    period_start: datetime
    period_end: datetime


class SavingsMeasurement(StrictModel):
    """One measured change: the figures side by side, how it was measured and the evidence."""

    execution_id: str
    customer_id: str
    account_id: str
    region: str
    kind: str
    resource_id: str
    estimated_monthly_savings: float
    verified_monthly_savings: float | None = None
    measured_monthly_savings: float | None = Field(
        default=None, description="None: nothing could be measured (the evidence says why).")
    method: MeasureMethod
    evidence: list[str] = Field(default_factory=list)
    period_start: datetime
    period_end: datetime

    @property
    def accuracy(self) -> float | None:
        """measured / estimated, or None when either is missing or the estimate is 0."""
        return ratio(self.measured_monthly_savings, self.estimated_monthly_savings)


def ratio(measured: float | None, estimated: float | None) -> float | None:
    if measured is None or not estimated:
        return None
    return round(measured / estimated, 4)


def days_per_month() -> float:
    return pricing.hours_per_month() / 24


# -- Cost Explorer ----------------------------------------------------------------------------


class Window(StrictModel):
    """Whole UTC days [start, end): Cost Explorer's TimePeriod (its End is exclusive)."""

    start: date
    end: date

    def period(self) -> dict[str, str]:
        return {"Start": self.start.isoformat(), "End": self.end.isoformat()}

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{(self.end - timedelta(days=1)).isoformat()}"


def windows(period_start: datetime, period_end: datetime, window: timedelta) -> tuple[Window, Window] | None:
    """The days before the change and the last whole days of the period, `window` each, the
    days of the change itself and of the measurement left out (both are partial). None when
    the period is too short to hold a whole window after the change."""
    days = max(1, window.days)
    changed, ended = period_start.date(), period_end.date()
    before = Window(start=changed - timedelta(days=days), end=changed)
    after = Window(start=ended - timedelta(days=days), end=ended)
    if after.start <= changed:
        return None
    return before, after


def resource_filter(resource_id: str, account_id: str) -> dict[str, Any]:
    return {"And": [{"Dimensions": {"Key": "RESOURCE_ID", "Values": [resource_id]}},
                    {"Dimensions": {"Key": "LINKED_ACCOUNT", "Values": [account_id]}}]}


class DailyCost(StrictModel):
    day: str
    amount: float
    estimated: bool = False


def _amount(metrics: Mapping[str, Any]) -> float | None:
    for name in COST_METRICS:
        if name in metrics and metrics[name].get("Amount") is not None:
            return float(metrics[name]["Amount"])
    return None


def daily_costs(results: Iterable[Mapping[str, Any]], resource_id: str) -> list[DailyCost]:
    """One cost per day of `ResultsByTime`, in either shape Cost Explorer answers with.

    Filtered on the resource and not grouped (moto, and AWS without a GroupBy) the day's cost
    is its `Total`; grouped (by RESOURCE_ID, AWS's resource-level answers) `Total` is empty
    and the day's cost is the sum of the groups naming the resource. A day without any cost
    metric is left out (no data), a day with "0" is a day that cost nothing.
    """
    days: list[DailyCost] = []
    for entry in results:
        groups = entry.get("Groups") or []
        amount: float | None
        if groups:
            mine = [g for g in groups if resource_id in (g.get("Keys") or [])] or list(groups)
            found = [a for g in mine if (a := _amount(g.get("Metrics") or {})) is not None]
            amount = sum(found) if found else None
        else:
            amount = _amount(entry.get("Total") or {})
        if amount is not None:
            day = str((entry.get("TimePeriod") or {}).get("Start", ""))
            days.append(DailyCost(day=day, amount=amount, estimated=bool(entry.get("Estimated"))))
    return days


def mean_daily(days: list[DailyCost]) -> float:
    return sum(d.amount for d in days) / len(days) if days else 0.0


# -- the price table --------------------------------------------------------------------------


def monthly_cost(resource_type: str, region: str, state: Mapping[str, Any] | None) -> float | None:
    """What the resource costs a month at list prices in this state; 0 when it is gone (None
    state); None when the price table cannot price this type (usage-billed) or this size."""
    if state is None:
        return 0.0
    pricer = _PRICERS.get(resource_type)
    return None if pricer is None else pricer(region, state)


def _instance(region: str, s: Mapping[str, Any]) -> float | None:
    if s.get("state") in ("stopped", "stopping", "shutting-down", "terminated"):
        return 0.0
    return pricing.ec2_monthly(region, str(s.get("instance_type")))


def _volume(region: str, s: Mapping[str, Any]) -> float | None:
    if s.get("state") == "deleted":
        return 0.0
    return pricing.ebs_monthly(region, str(s.get("volume_type")), int(s.get("size") or 0),
                               int(s.get("iops") or 0), int(s.get("throughput") or 0))


def _address(region: str, s: Mapping[str, Any]) -> float | None:
    return 0.0 if s.get("associated_with") else pricing.flat("eip_idle_hourly", region) * pricing.hours_per_month()


def _db_instance(region: str, s: Mapping[str, Any]) -> float | None:
    multi_az = bool(s.get("multi_az"))
    storage = pricing.flat("rds_storage_gb_month", region) * float(s.get("allocated_storage") or 0) * (
        2 if multi_az else 1)
    if s.get("status") in ("stopped", "stopping"):
        return storage
    compute = pricing.rds_monthly(region, str(s.get("instance_class")), multi_az)
    return None if compute is None else compute + storage


def _snapshot(region: str, s: Mapping[str, Any]) -> float | None:
    return pricing.snapshot_monthly(region, int(s.get("volume_size") or 0))


_PRICERS = {
    "AWS::EC2::Instance": _instance,
    "AWS::EC2::Volume": _volume,
    "AWS::EC2::EIP": _address,
    "AWS::RDS::DBInstance": _db_instance,
    "AWS::EC2::Snapshot": _snapshot,
}


def describe_state(resource_type: str, state: Mapping[str, Any] | None) -> str:
    """A few words for the evidence: "m5.large stopped", "gp3 100 GiB", "gone"."""
    if state is None:
        return "gone"
    keys = {"AWS::EC2::Instance": ("instance_type", "state"), "AWS::EC2::Volume": ("volume_type", "size", "state"),
            "AWS::EC2::EIP": ("public_ip", "associated_with"), "AWS::EC2::Snapshot": ("volume_size", "state"),
            "AWS::RDS::DBInstance": ("instance_class", "status")}.get(resource_type, ())
    shown = [f"{state[k]}" + (" GiB" if k in ("size", "volume_size") else "") for k in keys if state.get(k) is not None]
    return " ".join(shown) or "present"


def price_table_measure(check: SavingsCheckInput, resource_type: str, now: Observation | None,
                        volatile: frozenset[str] = frozenset()) -> tuple[float | None, list[str]]:
    """The monthly savings from the price table: the resource before the change against the
    resource now (`now` None: it is gone), and why, in words.

    Observed at the change and now, not in between: a change undone and done again in the
    period looks held. A resource as it was before the change measures 0 ("changed back").
    Usage-billed types (Lambda, S3, DynamoDB, logs, Auto Scaling) have no state price: for
    them a change that still holds keeps the verified figure, and the evidence says so.
    """
    region = check.region
    before = check.observed_before
    evidence: list[str] = []
    back = before is not None and now is not None and not _state_drift(before, now, volatile)
    if check.observed_after is not None:
        since = ["the resource is gone"] if now is None else _state_drift(check.observed_after, now, volatile)
        if since:
            evidence.append("changed since the change: " + "; ".join(since))
    cost_before = None if before is None else monthly_cost(resource_type, region, before.state)
    cost_now = monthly_cost(resource_type, region, None if now is None else now.state)
    if back:
        evidence.insert(0, "the change no longer holds: the resource is as it was before the change "
                           f"({describe_state(resource_type, now.state if now else None)}), so it saves nothing")
    if cost_before is not None and cost_now is not None and before is not None:
        evidence.append(f"price table ({pricing.price_source()}): before the change "
                        f"{describe_state(resource_type, before.state)} ${cost_before:,.2f}/month; now "
                        f"{describe_state(resource_type, None if now is None else now.state)} ${cost_now:,.2f}/month")
        return (0.0 if back else round(cost_before - cost_now, 2)), evidence
    if back:
        return 0.0, evidence
    figure = check.verified_monthly_savings if check.verified_monthly_savings is not None \
        else check.estimated_monthly_savings
    if before is None and check.observed_after is None:
        return None, [*evidence, "nothing observed at the change to compare the resource with"]
    if any(e.startswith("changed since") for e in evidence) and now is not None:
        return 0.0, [*evidence, "the price table cannot price this resource's usage; the change does not hold"]
    state = "gone" if now is None else "still changed"
    return figure, [*evidence, f"the resource is {state}; the price table cannot price its usage, so the "
                               f"{'verified' if check.verified_monthly_savings is not None else 'estimated'} "
                               f"figure ${figure:,.2f}/month stands"]


def _state_drift(expected: Observation, seen: Observation, volatile: frozenset[str]) -> list[str]:
    """What changed in the state (tags are not the change's business here)."""
    return drift(Observation(state=expected.state), Observation(state=seen.state), volatile)


# -- accuracy per kind and account --------------------------------------------------------------


class SavingsCheckRow(StrictModel):
    """One completed change as the ledger and its measurement (if any) know it."""

    execution_id: str
    customer_id: str
    account_id: str
    kind: str
    estimated_monthly_savings: float
    verified_monthly_savings: float | None = None
    measured_monthly_savings: float | None = None
    method: MeasureMethod | None = None
    reversed: bool = False
    completed_at: datetime


class AccuracyLine(StrictModel):
    """Totals of one kind in one account (`*` for all): estimated and verified over every
    completed change, measured and its accuracy over the measured ones."""

    kind: str
    account_id: str
    executions: int = 0
    reversed: int = Field(default=0, description="Rolled back since (still counted: they were promised).")
    measured: int = Field(default=0, description="Changes with a measured figure.")
    estimated_monthly: float = 0.0
    verified_monthly: float = 0.0
    measured_monthly: float = 0.0
    estimated_measured_monthly: float = Field(default=0.0, description="The estimates of the measured changes.")
    accuracy: float | None = Field(default=None, description="measured / estimated over the measured changes.")
    methods: dict[str, int] = Field(default_factory=dict, description="Measured changes per method.")

    def add(self, row: SavingsCheckRow) -> None:
        self.executions += 1
        self.reversed += int(row.reversed)
        self.estimated_monthly = round(self.estimated_monthly + row.estimated_monthly_savings, 2)
        self.verified_monthly = round(self.verified_monthly + (row.verified_monthly_savings or 0.0), 2)
        if row.measured_monthly_savings is not None and row.method is not None:
            self.measured += 1
            self.measured_monthly = round(self.measured_monthly + row.measured_monthly_savings, 2)
            self.estimated_measured_monthly = round(self.estimated_measured_monthly + row.estimated_monthly_savings, 2)
            self.methods[row.method.value] = self.methods.get(row.method.value, 0) + 1
        self.accuracy = ratio(self.measured_monthly if self.measured else None, self.estimated_measured_monthly)


class SavingsAccuracy(StrictModel):
    """Estimated vs verified vs measured savings per kind and account, and in all."""

    customer_id: str | None = None
    since: datetime | None = None
    lines: list[AccuracyLine] = Field(default_factory=list)
    total: AccuracyLine = Field(default_factory=lambda: AccuracyLine(kind="*", account_id="*"))


def accuracy(rows: Iterable[SavingsCheckRow], *, customer_id: str | None = None,
             since: datetime | None = None) -> SavingsAccuracy:
    lines: dict[tuple[str, str], AccuracyLine] = {}
    result = SavingsAccuracy(customer_id=customer_id, since=since)
    for row in rows:
        key = (row.kind, row.account_id)
        lines.setdefault(key, AccuracyLine(kind=row.kind, account_id=row.account_id)).add(row)
        result.total.add(row)
    result.lines = [lines[key] for key in sorted(lines)]
    return result
