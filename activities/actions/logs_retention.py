"""logs.retention: set a CloudWatch Logs group's retention; revert puts the previous retention back."""

from __future__ import annotations

import time

from pydantic import Field, field_validator, model_validator

from activities.actions.base import Action, register
from activities.errors import Refused, RevertImpossible, VerificationFailed
from activities.resources.log_group import LogGroup, LogGroupState, find_group
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import flat

#: The only values PutRetentionPolicy accepts.
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                  2557, 2922, 3288, 3653)
GIB = 1024**3
DAY_MS = 86_400_000


class RetentionParams(StrictModel):
    retention_days: int = Field(description=f"One of {', '.join(map(str, RETENTION_DAYS))}.")
    expected_retention_days: int | None = Field(
        default=None, description="The retention the recommender saw; None means never expire. Drift otherwise."
    )

    @field_validator("retention_days", "expected_retention_days")
    @classmethod
    def _allowed(cls, value: int | None) -> int | None:
        if value is not None and value not in RETENTION_DAYS:
            raise ValueError(f"{value} is not a retention CloudWatch Logs allows")
        return value

    @model_validator(mode="after")
    def _differ(self) -> RetentionParams:
        if self.retention_days == self.expected_retention_days:
            raise ValueError("retention_days and expected_retention_days must differ")
        return self


def describe(days: int | None) -> str:
    return "never expire" if days is None else f"{days} days"


@register
class LogsRetention(Action[RetentionParams, LogGroupState]):
    """Set the retention of a log group that keeps events longer than needed (often: forever).

    Shortening retention makes AWS delete the older events (within about 72 hours): a revert
    restores the setting, not the deleted events, so the kind declares that it destroys data.

    Example recommendation::

        {"id": "rec-logs-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "logs.retention", "resource_id": "/aws/lambda/ingest",
         "params": {"retention_days": 30, "expected_retention_days": null},
         "estimated_monthly_savings": 12.5}
    """

    kind = "logs.retention"
    resource = LogGroup
    params_model = RetentionParams
    reversible = True
    base_risk = RiskLevel.LOW
    destroys_data = True
    volatile_state = frozenset({"stored_bytes"})
    permissions = ("logs:DescribeLogGroups", "logs:ListTagsForResource", "logs:PutRetentionPolicy",
                   "logs:DeleteRetentionPolicy")

    @property
    def group(self) -> str:
        return self.rec.resource_id

    def _retention(self, missing: type[Exception]) -> int | None:
        group = find_group(self.aws, self.group)
        if group is None:
            raise missing(LogGroup.missing.format(id=self.group))
        return group.get("retentionInDays")

    def refusal(self, seen: Observation) -> str | None:
        current, expected = self.state(seen).retention_days, self.params.expected_retention_days
        if current != expected:
            return f"drift: retention is {describe(current)}, the recommendation assumed {describe(expected)}"
        return None

    def plan(self, seen: Observation) -> list[str]:
        new, old = self.params.retention_days, self.state(seen).retention_days
        step = f"set the retention of {self.group} from {describe(old)} to {new} days"
        if old is None or new < old:
            step += f" (AWS then deletes events older than {new} days; a revert does not bring them back)"
        return [step]

    def check_permissions(self, seen: Observation) -> list[str]:
        """CloudWatch Logs has no DryRun: the reads are made, the writes listed as unverified."""
        self.inspect()
        return ["logs:DescribeLogGroups", "logs:ListTagsForResource"]

    def unverified_permissions(self) -> list[str]:
        revert = "logs:DeleteRetentionPolicy" if self.params.expected_retention_days is None else None
        return ["logs:PutRetentionPolicy", *([revert] if revert else [])]

    def backup(self, seen: Observation) -> BackupRecord:
        data = {"retention_days": self._retention(Refused)}
        return BackupRecord(kind=self.kind, resource_id=self.group, data=data)

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        current, target = self._retention(Refused), self.params.retention_days
        if current == target:
            return StepResult(changed=False, message=f"retention is already {target} days")
        if current != backup.data["retention_days"]:
            raise Refused(f"drift: retention is now {describe(current)}, "
                          f"it was {describe(backup.data['retention_days'])} at backup")
        self.aws.put_retention_policy(logGroupName=self.group, retentionInDays=target)
        return StepResult(changed=True, message=f"retention set to {target} days (was {describe(current)})")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        current = self._retention(VerificationFailed)
        if current != self.params.retention_days:
            raise VerificationFailed(f"retention is {describe(current)}, expected {self.params.retention_days} days")
        return StepResult(changed=False, message=f"retention is {current} days")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        current, original = self._retention(RevertImpossible), backup.data["retention_days"]
        if current == original:
            return StepResult(changed=False, message=f"retention is {describe(original)}")
        if original is None:
            self.aws.delete_retention_policy(logGroupName=self.group)
        else:
            self.aws.put_retention_policy(logGroupName=self.group, retentionInDays=original)
        return StepResult(changed=True, message=f"retention restored to {describe(original)}")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        """Events are assumed to arrive evenly over the stored span (group age, capped by retention)."""
        s = self.state(seen)
        stored, created = s.stored_bytes, s.creation_time
        if not stored or not created:
            return self.rec.estimated_monthly_savings
        span_days = max((time.time() * 1000 - created) / DAY_MS, 1.0)
        if s.retention_days is not None:
            span_days = min(span_days, s.retention_days)
        deleted = max(0.0, 1.0 - self.params.retention_days / span_days)
        return stored * deleted / GIB * flat("logs_gb_month", self.rec.region)
