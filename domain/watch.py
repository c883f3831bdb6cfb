"""The watch after a change: the resource's metrics before and after, and when that is a
regression (pure).

A kind that changes a running workload (a rightsize, Lambda memory, a table's billing
mode) names the CloudWatch metrics that would show the change hurt: CPU that climbs,
latency, errors, throttles, memory that runs out. Validation's time is the baseline;
after verification the execution looks again for a bake period, and a metric past
its limit undoes the change with the numbers in the reason. A metric with no data
after the change is said, never taken as a regression: silence is not evidence.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field

from domain.base import StrictModel


class WatchedMetric(StrictModel):
    namespace: str
    name: str
    dimension: str = Field(description="The dimension whose value is the resource id (InstanceId, ...).")
    stat: Literal["Average", "Maximum", "Sum"] = "Average"
    worse: Literal["higher", "lower"] = "higher"
    ratio: float = Field(default=1.5, gt=1, description="How far past the baseline is a regression.")
    floor: float = Field(default=0.0, ge=0, description="For `higher`: a value at or under it never is a "
                         "regression (CPU from 2% to 4% is not); for `lower`: a value at or over it never is.")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _m(namespace: str, name: str, dimension: str, **rule: object) -> WatchedMetric:
    return WatchedMetric.model_validate({"namespace": namespace, "name": name, "dimension": dimension, **rule})


EC2_WORKLOAD = (
    _m("AWS/EC2", "CPUUtilization", "InstanceId", floor=60.0),
    _m("AWS/EC2", "StatusCheckFailed", "InstanceId", stat="Maximum", floor=0.0),
)
RDS_WORKLOAD = (
    _m("AWS/RDS", "CPUUtilization", "DBInstanceIdentifier", floor=60.0),
    _m("AWS/RDS", "ReadLatency", "DBInstanceIdentifier", floor=0.02),
    _m("AWS/RDS", "WriteLatency", "DBInstanceIdentifier", floor=0.02),
    _m("AWS/RDS", "DatabaseConnections", "DBInstanceIdentifier", ratio=3.0, floor=50.0),
    _m("AWS/RDS", "FreeableMemory", "DBInstanceIdentifier", worse="lower", ratio=2.0, floor=256 * 1024 * 1024),
)
ASG_WORKLOAD = (_m("AWS/EC2", "CPUUtilization", "AutoScalingGroupName", floor=60.0),)
LAMBDA_WORKLOAD = (
    _m("AWS/Lambda", "Duration", "FunctionName", floor=100.0),
    _m("AWS/Lambda", "Errors", "FunctionName", stat="Sum", floor=0.0),
    _m("AWS/Lambda", "Throttles", "FunctionName", stat="Sum", floor=0.0),
)
DYNAMODB_WORKLOAD = (_m("AWS/DynamoDB", "ThrottledRequests", "TableName", stat="Sum", floor=0.0),)


class MetricValues(StrictModel):
    """One value per watched metric over a span (None: CloudWatch had no data point in it)."""

    start: datetime
    end: datetime
    values: dict[str, float | None] = Field(default_factory=dict)


class WatchVerdict(StrictModel):
    regressed: bool
    evidence: list[str] = Field(default_factory=list, description="Each metric past its limit, with numbers.")
    missing: list[str] = Field(default_factory=list, description="Metrics with no data after the change.")
    summary: str = ""


def judge(metrics: tuple[WatchedMetric, ...] | list[WatchedMetric], before: MetricValues,
          after: MetricValues, ratio: float | None = None) -> WatchVerdict:
    """`ratio`: the policy's, instead of each metric's own."""
    evidence, missing, seen = [], [], []
    for metric in metrics:
        now, was = after.values.get(metric.key), before.values.get(metric.key)
        if now is None:
            missing.append(metric.key)
            continue
        limit = _limit(metric, was, ratio or metric.ratio)
        seen.append(f"{metric.name} {now:g} (baseline {'none' if was is None else f'{was:g}'})")
        past = now > limit if metric.worse == "higher" else now < limit
        if past:
            relation = "over" if metric.worse == "higher" else "under"
            evidence.append(f"{metric.name} {now:g} is {relation} its limit {limit:g} "
                            f"(baseline {'none' if was is None else f'{was:g}'}, {metric.stat.lower()})")
    summary = "; ".join(seen) + (f"; no data for {', '.join(missing)}" if missing else "")
    return WatchVerdict(regressed=bool(evidence), evidence=evidence, missing=missing, summary=summary)


def _limit(metric: WatchedMetric, baseline: float | None, ratio: float) -> float:
    if metric.worse == "higher":
        return max((baseline or 0.0) * ratio, metric.floor)
    if baseline is None:
        return metric.floor
    return min(baseline / ratio, metric.floor)


def checks(period: timedelta) -> list[timedelta]:
    """When, after the change, the metrics are looked at: six times evenly over the bake
    period, the last at its end."""
    if period <= timedelta(0):
        return []
    return [period * i / 6 for i in range(1, 6)] + [period]
