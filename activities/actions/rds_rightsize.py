"""rds.rightsize: change a DB instance's class (now, or in its maintenance window); revert changes it back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field, model_validator

from activities.actions._rds import class_drift, topology_refusal, wait_if_transitional
from activities.actions.base import Action, register
from activities.errors import InProgress, Refused, RevertImpossible, VerificationFailed
from activities.resources.rds_instance import DbInstanceState, RdsInstance, describe_db, pending_class
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import rds_monthly
from domain.watch import RDS_WORKLOAD


class RdsRightsizeParams(StrictModel):
    expected_instance_class: str = Field(min_length=1, description="Refuse on a different class (drift).")
    target_instance_class: str = Field(min_length=1, description="The class to change to.")
    apply_immediately: bool = Field(
        default=True,
        description="False: AWS applies the change in the instance's next maintenance window.",
    )

    @model_validator(mode="after")
    def _classes_differ(self) -> RdsRightsizeParams:
        if self.expected_instance_class == self.target_instance_class:
            raise ValueError("target_instance_class must differ from expected_instance_class")
        return self


@register
class RdsRightsize(Action[RdsRightsizeParams, DbInstanceState]):
    """Change an RDS DB instance to a smaller class. AWS restarts the instance (a Multi-AZ
    instance fails over to its standby first), so expect a short outage. With
    `apply_immediately: false` the change is only scheduled: it happens in the instance's next
    maintenance window, and verification accepts the pending class as done. Aurora members,
    read replicas and instances that have read replicas are refused (resize the cluster or the
    whole replication set instead). Revert changes the class back, immediately.

    Example recommendation::

        {"id": "rec-rds-rightsize-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "rds.rightsize", "resource_id": "orders-db",
         "params": {"expected_instance_class": "db.m5.2xlarge", "target_instance_class": "db.m5.large",
                    "apply_immediately": true},
         "estimated_monthly_savings": 374.49}
    """

    kind = "rds.rightsize"
    resource = RdsInstance
    params_model = RdsRightsizeParams
    reversible = True
    base_risk = RiskLevel.MEDIUM
    watched = RDS_WORKLOAD
    watch_period = timedelta(hours=1)
    expected_duration = timedelta(minutes=60)
    permissions = ("rds:DescribeDBInstances", "rds:ModifyDBInstance")

    def refusal(self, seen: Observation) -> str | None:
        state, target = self.state(seen), self.params.target_instance_class
        drift = class_drift(state, self.params.expected_instance_class)
        if drift:
            return drift
        if state.status != "available":
            return f"DB instance is {state.status}, not available"
        pending = state.pending_instance_class
        if pending and pending != target:
            return f"a change to {pending} is already pending on this DB instance"
        return topology_refusal(state, "resize")

    def _when(self, seen: Observation | None = None) -> str:
        if self.params.apply_immediately:
            return "now (the instance restarts; Multi-AZ fails over first)"
        window = self.state(seen).maintenance_window if seen else None
        return f"in the next maintenance window ({window or 'as scheduled by AWS'})"

    def plan(self, seen: Observation) -> list[str]:
        return [f"change {self.rec.resource_id} from {self.state(seen).instance_class} to "
                f"{self.params.target_instance_class} {self._when(seen)}"]

    def check_permissions(self, seen: Observation) -> list[str]:
        """RDS has no DryRun: only the read is proven; ModifyDBInstance is reported unverified."""
        describe_db(self.aws, self.rec.resource_id)
        return ["rds:DescribeDBInstances"]

    def unverified_permissions(self) -> list[str]:
        return ["rds:ModifyDBInstance"]

    def backup(self, seen: Observation) -> BackupRecord:
        state = self.state(seen)
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id,
                            data={"instance_class": state.instance_class, "multi_az": state.multi_az})

    def _modify(self, instance_class: str, immediately: bool) -> None:
        self.aws.modify_db_instance(DBInstanceIdentifier=self.rec.resource_id,
                                    DBInstanceClass=instance_class, ApplyImmediately=immediately)

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        db = describe_db(self.aws, self.rec.resource_id)
        if db is None:
            raise VerificationFailed(f"DB instance {self.rec.resource_id} disappeared")
        current, status, target = db["DBInstanceClass"], db["DBInstanceStatus"], self.params.target_instance_class
        if current == target:
            return StepResult(changed=False, message=f"already {target} ({status})")
        if pending_class(db) == target:
            return StepResult(changed=False, message=f"change to {target} already requested ({status})")
        if current != backup.data["instance_class"]:
            raise Refused(f"DB instance class is {current} since validation; re-validate")
        wait_if_transitional(status, f"will change the class to {target} once available")
        if status != "available":
            raise Refused(f"DB instance is {status} since validation; re-validate")
        self._modify(target, self.params.apply_immediately)
        return StepResult(changed=True, message=f"requested {current} -> {target} {self._when(seen)}")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        db = describe_db(self.aws, self.rec.resource_id)
        if db is None:
            raise VerificationFailed(f"DB instance {self.rec.resource_id} disappeared")
        current, status, target = db["DBInstanceClass"], db["DBInstanceStatus"], self.params.target_instance_class
        if current == target and status == "available":
            return StepResult(changed=False, message=f"DB instance is {target} and available")
        if not self.params.apply_immediately and pending_class(db) == target and status == "available":
            window = db.get("PreferredMaintenanceWindow") or "as scheduled by AWS"
            return StepResult(changed=False, message=(
                f"change to {target} is pending: AWS applies it in the next maintenance window ({window}); "
                f"the instance is still {current} until then"))
        wait_if_transitional(status, f"waiting for {target}")
        raise VerificationFailed(f"DB instance is {current} and {status}, expected {target} and available")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        original = str(backup.data["instance_class"])
        db = describe_db(self.aws, self.rec.resource_id)
        if db is None:
            raise RevertImpossible(f"DB instance {self.rec.resource_id} no longer exists")
        if self._reverted(db, original):
            return StepResult(changed=False, message=f"DB instance is {original} and available")
        status = db["DBInstanceStatus"]
        wait_if_transitional(status, f"will change the class back to {original} once available")
        if status != "available":
            raise RevertImpossible(f"DB instance is {status}; make it available, then roll back again")
        if db["DBInstanceClass"] == original:
            # Only scheduled, never applied: replace the pending class with the current one, no restart.
            self._modify(original, immediately=False)
        else:
            self._modify(original, immediately=True)
        after = describe_db(self.aws, self.rec.resource_id)
        if after is not None and self._reverted(after, original):
            return StepResult(changed=True, message=f"changed back to {original}")
        raise InProgress(f"change back to {original} requested; waiting for it to be available")

    @staticmethod
    def _reverted(db: dict[str, Any], original: str) -> bool:
        return (db["DBInstanceClass"] == original and pending_class(db) in (None, original)
                and db["DBInstanceStatus"] == "available")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        multi_az = self.state(seen).multi_az
        before = rds_monthly(self.rec.region, self.params.expected_instance_class, multi_az)
        after = rds_monthly(self.rec.region, self.params.target_instance_class, multi_az)
        if before is None or after is None:
            return self.rec.estimated_monthly_savings
        return round(before - after, 2)
