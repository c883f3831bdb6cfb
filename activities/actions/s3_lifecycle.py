"""s3.lifecycle: add a transition rule to a bucket's lifecycle configuration; revert restores it exactly."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from activities.actions.base import Action, register
from activities.errors import InProgress, Refused, RevertImpossible, VerificationFailed
from activities.resources.s3_bucket import NONE, BucketState, S3Bucket, bucket_tags, jsonable, lifecycle
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import region_factor, section

MAX_RULES = 1000  # AWS's limit per lifecycle configuration
GIB = 1024**3
MIN_SIZE = "TransitionDefaultMinimumObjectSize"


class LifecycleParams(StrictModel):
    storage_class: Literal["STANDARD_IA", "GLACIER_IR"]
    transition_days: int = Field(ge=0, description="Days after creation; at least 30 for STANDARD_IA (AWS rule).")
    prefix: str = Field(default="", max_length=1024, description="Only objects under this key prefix.")
    rule_id: str = Field(default="reclaim-transition", min_length=1, max_length=255)
    expected_rule_count: int | None = Field(
        default=None, ge=0, description="Refuse when the bucket no longer has this many other rules (drift)."
    )
    expected_bytes: int | None = Field(default=None, ge=0, description="STANDARD bytes the rule will move.")

    @model_validator(mode="after")
    def _aws_minimum(self) -> LifecycleParams:
        if self.storage_class == "STANDARD_IA" and self.transition_days < 30:
            raise ValueError("transition_days must be at least 30 for STANDARD_IA")
        return self


def _rules(config: dict[str, Any] | str) -> list[dict[str, Any]]:
    return list(config["Rules"]) if isinstance(config, dict) else []


def _canonical(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule without its ID, the legacy top-level Prefix and an empty filter spelled as Filter.Prefix."""
    shape = {k: v for k, v in jsonable(rule).items() if k not in ("ID", "Prefix", "Filter")}
    shape["Filter"] = rule.get("Filter") or {"Prefix": rule.get("Prefix", "")}
    return shape


@register
class S3Lifecycle(Action[LifecycleParams, BucketState]):
    """Add a lifecycle rule moving objects to a cheaper storage class after N days, keeping every
    other rule. Objects already transitioned stay where they are after a revert (the revert only
    restores the configuration); STANDARD_IA and GLACIER_IR bill at least 30 / 90 days and 128 KiB
    per object, and charge per GB retrieved.

    Example recommendation::

        {"id": "rec-s3lc-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "s3.lifecycle", "resource_id": "acme-logs-archive",
         "params": {"storage_class": "STANDARD_IA", "transition_days": 30, "prefix": "logs/",
                    "expected_bytes": 5497558138880}, "estimated_monthly_savings": 54.0}
    """

    kind = "s3.lifecycle"
    resource = S3Bucket
    params_model = LifecycleParams
    reversible = True
    base_risk = RiskLevel.LOW
    permissions = ("s3:GetBucketLocation", "s3:GetBucketTagging", "s3:GetLifecycleConfiguration",
                   "s3:PutLifecycleConfiguration")

    @property
    def bucket(self) -> str:
        return self.rec.resource_id

    def our_rule(self) -> dict[str, Any]:
        p = self.params
        return {"ID": p.rule_id, "Filter": {"Prefix": p.prefix}, "Status": "Enabled",
                "Transitions": [{"Days": p.transition_days, "StorageClass": p.storage_class}]}

    def _lifecycle(self) -> dict[str, Any] | str:
        return lifecycle(self.aws, self.bucket)

    def _ours_in(self, config: dict[str, Any] | str) -> dict[str, Any] | None:
        return next((r for r in _rules(config) if r.get("ID") == self.params.rule_id), None)

    def refusal(self, seen: Observation) -> str | None:
        state = self.state(seen)
        if state.region != self.rec.region:
            return f"bucket {self.bucket} is in {state.region}, the recommendation is for {self.rec.region}"
        config = state.lifecycle
        ours = self._ours_in(config)
        if ours is not None and _canonical(ours) != _canonical(self.our_rule()):
            return f"drift: the bucket already has a different lifecycle rule with id {self.params.rule_id}"
        others = len(_rules(config)) - (ours is not None)
        expected = self.params.expected_rule_count
        if expected is not None and others != expected:
            return f"drift: the bucket has {others} other lifecycle rules, the recommendation assumed {expected}"
        if ours is None and others >= MAX_RULES:
            return f"the bucket already has {MAX_RULES} lifecycle rules, the most AWS allows"
        return None

    def plan(self, seen: Observation) -> list[str]:
        p = self.params
        where = f"objects under {p.prefix!r}" if p.prefix else "all objects"
        kept = len(_rules(self.state(seen).lifecycle))
        return [f"add lifecycle rule {p.rule_id} to s3://{self.bucket}: {where} -> {p.storage_class} "
                f"after {p.transition_days} days (keeping the {kept} existing rules)"]

    def check_permissions(self, seen: Observation) -> list[str]:
        """S3 has no DryRun: the reads are made, the mutating call is listed as unverified."""
        self._lifecycle()
        bucket_tags(self.aws, self.bucket)
        return ["s3:GetLifecycleConfiguration", "s3:GetBucketTagging"]

    def unverified_permissions(self) -> list[str]:
        return ["s3:PutLifecycleConfiguration"]  # DeleteBucketLifecycle is authorised by it too

    def backup(self, seen: Observation) -> BackupRecord:
        data = {"lifecycle": jsonable(self._lifecycle())}
        return BackupRecord(kind=self.kind, resource_id=self.bucket, data=data)

    def _put(self, rules: list[dict[str, Any]], config: dict[str, Any] | str) -> None:
        """Keeps the bucket's TransitionDefaultMinimumObjectSize (a put without it resets it)."""
        extra = {k: config[k] for k in (MIN_SIZE,) if isinstance(config, dict) and k in config}
        self.aws.put_bucket_lifecycle_configuration(Bucket=self.bucket, LifecycleConfiguration={"Rules": rules},
                                                   **extra)

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        config = self._lifecycle()
        ours, target = self._ours_in(config), self.our_rule()
        if ours is not None and _canonical(ours) == _canonical(target):
            return StepResult(changed=False, message=f"rule {target['ID']} is already in place")
        rules = [r for r in _rules(config) if r.get("ID") != target["ID"]] + [target]
        self._put(rules, config)
        verb = "replaced" if ours is not None else "added"
        return StepResult(changed=True, message=f"{verb} lifecycle rule {target['ID']} ({len(rules)} rules)")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        """AWS documents a propagation lag for lifecycle changes: a missing rule is not yet a failure."""
        try:
            ours = self._ours_in(self._lifecycle())
        except Refused as exc:
            raise VerificationFailed(str(exc)) from exc
        if ours is None:
            raise InProgress(f"rule {self.params.rule_id} is not visible yet")
        if _canonical(ours) != _canonical(self.our_rule()):
            raise VerificationFailed(f"rule {self.params.rule_id} differs from the one applied")
        return StepResult(changed=False, message=f"rule {self.params.rule_id} is in place")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        saved = backup.data["lifecycle"]
        try:
            live = self._lifecycle()
        except Refused as exc:
            raise RevertImpossible(str(exc)) from exc
        if jsonable(live) == saved:
            return StepResult(changed=False, message="lifecycle configuration is as it was")
        if saved == NONE:
            self.aws.delete_bucket_lifecycle(Bucket=self.bucket)
            return StepResult(changed=True, message="lifecycle configuration deleted (there was none)")
        self._put(list(saved["Rules"]), saved)
        return StepResult(changed=True, message=f"lifecycle configuration restored ({len(saved['Rules'])} rules)")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        if self.params.expected_bytes is None:
            return self.rec.estimated_monthly_savings
        prices = section("s3_gb_month")
        per_gib = prices["STANDARD"] - prices[self.params.storage_class]
        return self.params.expected_bytes / GIB * per_gib * region_factor(self.rec.region)
