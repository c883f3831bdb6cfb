"""ec2.stop: stop an idle instance; revert starts it again."""

from __future__ import annotations

from pydantic import Field

from activities.actions.base import Action, register
from activities.errors import InProgress, RevertImpossible, VerificationFailed
from activities.resources.ec2_instance import Ec2Instance, InstanceState, describe_instance, stop_refusal
from domain import pricing
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel


class StopParams(StrictModel):
    expected_instance_type: str | None = Field(
        default=None, description="Refuse when the instance is no longer of this type (drift)."
    )


@register
class Ec2Stop(Action[StopParams, InstanceState]):
    """Stop an idle EC2 instance. EBS volumes and the private IP are kept; compute billing stops.

    Example recommendation::

        {"id": "rec-stop-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "ec2.stop", "resource_id": "i-0123456789abcdef0",
         "params": {"expected_instance_type": "m5.large"}, "estimated_monthly_savings": 70.08}
    """

    kind = "ec2.stop"
    resource = Ec2Instance
    params_model = StopParams
    reversible = True
    base_risk = RiskLevel.LOW
    permissions = ("ec2:DescribeInstances", "ec2:StopInstances", "ec2:StartInstances")

    def refusal(self, seen: Observation) -> str | None:
        expected, s = self.params.expected_instance_type, self.state(seen)
        if expected and s.instance_type != expected:
            return f"drift: instance type is {s.instance_type}, the recommendation assumed {expected}"
        if s.state != "running":
            return f"instance is {s.state}, not running"
        return stop_refusal(s, seen.tags)

    def plan(self, seen: Observation) -> list[str]:
        return [f"stop {self.rec.resource_id} ({self.state(seen).instance_type}, running)"]

    def check_permissions(self, seen: Observation) -> list[str]:
        ids = [self.rec.resource_id]
        return [
            self.dry_run(self.aws.stop_instances, "ec2:StopInstances", InstanceIds=ids),
            self.dry_run(self.aws.start_instances, "ec2:StartInstances", InstanceIds=ids),
        ]

    def _state(self) -> str | None:
        instance = describe_instance(self.aws, self.rec.resource_id)
        return None if instance is None else str(instance["State"]["Name"])

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        state = self._state()
        if state in ("stopped", "stopping"):
            return StepResult(changed=False, message=f"already {state}")
        if state == "pending":
            raise InProgress("instance is starting; will stop it once it is running")
        if state is None:
            raise VerificationFailed(f"instance {self.rec.resource_id} disappeared")
        self.aws.stop_instances(InstanceIds=[self.rec.resource_id])
        return StepResult(changed=True, message=f"stop requested for {self.rec.resource_id}")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        state = self._state()
        if state == "stopped":
            return StepResult(changed=False, message="instance is stopped")
        if state == "stopping":
            raise InProgress("instance is stopping")
        raise VerificationFailed(f"instance is {state or 'gone'}, expected stopped")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        state = self._state()
        if state == "running":
            return StepResult(changed=False, message="instance is running")
        if state in ("pending", "stopping"):
            raise InProgress(f"instance is {state}")
        if state is None:
            raise RevertImpossible(f"instance {self.rec.resource_id} no longer exists")
        self.aws.start_instances(InstanceIds=[self.rec.resource_id])
        raise InProgress("start requested; waiting for running")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        """Compute stops billing; EBS storage does not. Unknown type: the recommender's figure."""
        monthly = pricing.ec2_monthly(self.rec.region, self.state(seen).instance_type)
        return round(monthly, 2) if monthly is not None else self.rec.estimated_monthly_savings
