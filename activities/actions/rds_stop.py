"""rds.stop: stop an idle DB instance; revert starts it again."""

from __future__ import annotations

from pydantic import Field

from activities.actions._rds import AUTO_START_NOTE, class_drift, topology_refusal, wait_if_transitional
from activities.actions.base import Action, register
from activities.errors import InProgress, Refused, RevertImpossible, VerificationFailed
from activities.resources.rds_instance import DbInstanceState, RdsInstance, describe_db
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import rds_monthly


class RdsStopParams(StrictModel):
    expected_instance_class: str | None = Field(
        default=None, min_length=1, description="Refuse on a different class (drift)."
    )


@register
class RdsStop(Action[RdsStopParams, DbInstanceState]):
    """Stop an RDS DB instance (endpoint, parameter and option groups are kept); revert starts it.

    AWS starts a stopped DB instance again automatically after 7 days: the saving lasts a week
    unless the instance is stopped again (or deleted). The saving counted is the instance hours
    (compute) only: provisioned storage, Provisioned IOPS and backup storage are still billed
    while the instance is stopped. AWS cannot stop read replicas, instances that have read
    replicas, Multi-AZ SQL Server instances or Aurora cluster members: those are refused.

    Example recommendation::

        {"id": "rec-rds-stop-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "rds.stop", "resource_id": "staging-db",
         "params": {"expected_instance_class": "db.t3.large"},
         "estimated_monthly_savings": 99.28}
    """

    kind = "rds.stop"
    resource = RdsInstance
    params_model = RdsStopParams
    reversible = True
    base_risk = RiskLevel.LOW
    permissions = ("rds:DescribeDBInstances", "rds:StopDBInstance", "rds:StartDBInstance")

    def refusal(self, seen: Observation) -> str | None:
        state = self.state(seen)
        drift = class_drift(state, self.params.expected_instance_class)
        if drift:
            return drift
        if state.status != "available":
            return f"DB instance is {state.status}, not available"
        if state.multi_az and (state.engine or "").startswith("sqlserver"):
            return "AWS cannot stop a Multi-AZ SQL Server DB instance"
        return topology_refusal(state, "stop")

    def plan(self, seen: Observation) -> list[str]:
        return [f"stop {self.rec.resource_id} ({self.state(seen).instance_class}); {AUTO_START_NOTE}"]

    def check_permissions(self, seen: Observation) -> list[str]:
        """RDS has no DryRun: only the read is proven; Stop/StartDBInstance are reported unverified."""
        describe_db(self.aws, self.rec.resource_id)
        return ["rds:DescribeDBInstances"]

    def unverified_permissions(self) -> list[str]:
        return ["rds:StopDBInstance", "rds:StartDBInstance"]

    def _status(self) -> str | None:
        db = describe_db(self.aws, self.rec.resource_id)
        return None if db is None else str(db["DBInstanceStatus"])

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        status = self._status()
        if status is None:
            raise VerificationFailed(f"DB instance {self.rec.resource_id} disappeared")
        if status in ("stopped", "stopping"):
            return StepResult(changed=False, message=f"already {status}; {AUTO_START_NOTE}")
        wait_if_transitional(status, "will stop it once available")
        if status != "available":
            raise Refused(f"DB instance is {status} since validation; re-validate")
        self.aws.stop_db_instance(DBInstanceIdentifier=self.rec.resource_id)
        return StepResult(changed=True, message=f"stop requested; {AUTO_START_NOTE}")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        status = self._status()
        if status == "stopped":
            return StepResult(changed=False, message=f"DB instance is stopped; {AUTO_START_NOTE}")
        if status == "stopping":
            raise InProgress("DB instance is stopping")
        raise VerificationFailed(f"DB instance is {status or 'gone'}, expected stopped")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        status = self._status()
        if status is None:
            raise RevertImpossible(f"DB instance {self.rec.resource_id} no longer exists")
        if status == "available":
            return StepResult(changed=False, message="DB instance is available")
        if status == "stopped":
            self.aws.start_db_instance(DBInstanceIdentifier=self.rec.resource_id)
            if self._status() == "available":
                return StepResult(changed=True, message="DB instance started and available")
            raise InProgress("start requested; waiting for available")
        wait_if_transitional(status, "will start it once it settles")
        raise RevertImpossible(f"DB instance is {status}; cannot start it")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        """Instance hours only: storage and backups are billed whether the instance runs or not."""
        state = self.state(seen)
        compute = rds_monthly(self.rec.region, state.instance_class, state.multi_az)
        return self.rec.estimated_monthly_savings if compute is None else round(compute, 2)
