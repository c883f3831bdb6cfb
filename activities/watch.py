"""The watch's two reads: the resource's metrics before the change and after it.

Thin: which metrics is the kind's (`watched`), what a regression is is `domain/watch.py`;
here is only the GetMetricData call, one per span for all of a kind's metrics, over the
span the workflow names (its own clock, so the history says exactly what was looked at).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field
from temporalio import activity

from activities.actions.base import action_class
from activities.aws import SessionFactory
from activities.errors import to_application_error
from domain.base import StrictModel
from domain.recommendation import Recommendation
from domain.watch import MetricValues, WatchedMetric, WatchVerdict, judge

#: CloudWatch's finest period for standard metrics: each span is averaged over per-minute values,
#: so a Sum (errors, throttles) over a 3-hour baseline compares with one over 10 minutes.
PERIOD_SECONDS = 60


class MetricsInput(StrictModel):
    """One span of one resource's watched metrics."""

    recommendation: Recommendation
    start: datetime
    end: datetime


class CheckInput(StrictModel):
    """The metrics since the change, judged against the baseline read before it."""

    recommendation: Recommendation
    baseline: MetricValues
    start: datetime
    end: datetime
    ratio: float | None = Field(default=None, gt=1, description="The policy's, instead of each metric's own.")


def watched(kind: str) -> tuple[WatchedMetric, ...]:
    return tuple(action_class(kind).watched)


class WatchActivities:
    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions

    def all(self) -> list[Any]:
        return [self.read_metrics, self.check_metrics]

    @activity.defn(name="check_metrics")
    def check_metrics(self, check: CheckInput) -> WatchVerdict:
        """Judged here, not in the workflow: a kind's thresholds may change between releases, and
        the verdict a history recorded must not change with them on replay."""
        after = self.read_metrics(MetricsInput(recommendation=check.recommendation, start=check.start, end=check.end))
        return judge(watched(check.recommendation.kind), check.baseline, after, check.ratio)

    @activity.defn(name="read_metrics")
    def read_metrics(self, span: MetricsInput) -> MetricValues:
        rec = span.recommendation
        metrics = watched(rec.kind)
        values: dict[str, float | None] = {m.key: None for m in metrics}
        if not metrics:
            return MetricValues(start=span.start, end=span.end, values=values)
        queries = [{
            "Id": f"m{i}",
            "MetricStat": {"Metric": {"Namespace": m.namespace, "MetricName": m.name,
                                      "Dimensions": [{"Name": m.dimension, "Value": rec.resource_id}]},
                           "Period": PERIOD_SECONDS, "Stat": m.stat},
            "ReturnData": True,
        } for i, m in enumerate(metrics)]
        try:
            cloudwatch = self.sessions.client(rec.account_id, rec.region, "cloudwatch")
            found: dict[str, list[float]] = {}
            kwargs: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": span.start, "EndTime": span.end}
            while True:
                page = cloudwatch.get_metric_data(**kwargs)
                for result in page.get("MetricDataResults", []):
                    found.setdefault(result["Id"], []).extend(float(v) for v in result.get("Values", []))
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        except Exception as exc:
            raise to_application_error(exc) from exc
        for i, metric in enumerate(metrics):
            points = found.get(f"m{i}") or []
            if points:
                values[metric.key] = max(points) if metric.stat == "Maximum" else sum(points) / len(points)
        return MetricValues(start=span.start, end=span.end, values=values)
