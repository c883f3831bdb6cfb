"""ec2.rightsize: change an instance's type (stop, modify, start); revert changes it back."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, model_validator

from activities.actions.base import Action, register
from activities.errors import InProgress, Refused, RevertImpossible, VerificationFailed
from activities.resources.ec2_instance import Ec2Instance, InstanceState, describe_instance, stop_refusal
from domain import pricing
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.watch import EC2_WORKLOAD


class RightsizeParams(StrictModel):
    expected_instance_type: str = Field(
        min_length=1, description="Refuse when the instance is no longer of this type (drift)."
    )
    target_instance_type: str = Field(min_length=1, description="The type to change to.")

    @model_validator(mode="after")
    def _types_differ(self) -> RightsizeParams:
        if self.expected_instance_type == self.target_instance_type:
            raise ValueError("target_instance_type must differ from expected_instance_type")
        return self


@register
class Ec2Rightsize(Action[RightsizeParams, InstanceState]):
    """Change an EC2 instance to a smaller type. A running instance is stopped, modified and
    started again (a short outage; the private IP and EBS volumes are kept).

    Example recommendation::

        {"id": "rec-rightsize-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "ec2.rightsize", "resource_id": "i-0123456789abcdef0",
         "params": {"expected_instance_type": "m5.2xlarge", "target_instance_type": "m5.large"},
         "estimated_monthly_savings": 210.24}
    """

    kind = "ec2.rightsize"
    resource = Ec2Instance
    params_model = RightsizeParams
    reversible = True
    base_risk = RiskLevel.MEDIUM
    watched = EC2_WORKLOAD
    watch_period = timedelta(hours=1)
    expected_duration = timedelta(minutes=20)
    permissions = (
        "ec2:DescribeInstances",
        "ec2:StopInstances",
        "ec2:ModifyInstanceAttribute",
        "ec2:StartInstances",
    )

    def refusal(self, seen: Observation) -> str | None:
        expected, s = self.params.expected_instance_type, self.state(seen)
        if s.instance_type != expected:
            return f"drift: instance type is {s.instance_type}, the recommendation assumed {expected}"
        if s.state not in ("running", "stopped"):
            return f"instance is {s.state}, not running or stopped"
        return stop_refusal(s, seen.tags)

    def plan(self, seen: Observation) -> list[str]:
        rid, target, s = self.rec.resource_id, self.params.target_instance_type, self.state(seen)
        steps = [f"stop {rid}"] if s.state == "running" else []
        steps.append(f"change {rid} from {s.instance_type} to {target}")
        if s.state == "running":
            steps.append(f"start {rid}")
        return steps

    def check_permissions(self, seen: Observation) -> list[str]:
        ids = [self.rec.resource_id]
        return [
            self.dry_run(self.aws.stop_instances, "ec2:StopInstances", InstanceIds=ids),
            self.dry_run(
                self.aws.modify_instance_attribute,
                "ec2:ModifyInstanceAttribute",
                InstanceId=self.rec.resource_id,
                InstanceType={"Value": self.params.target_instance_type},
            ),
            self.dry_run(self.aws.start_instances, "ec2:StartInstances", InstanceIds=ids),
        ]

    def backup(self, seen: Observation) -> BackupRecord:
        s = self.state(seen)
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id,
                            data={"instance_type": s.instance_type, "was_running": s.state == "running"})

    def _live(self) -> tuple[str, str] | None:
        instance = describe_instance(self.aws, self.rec.resource_id)
        return None if instance is None else (str(instance["State"]["Name"]), str(instance["InstanceType"]))

    def _converge_type(self, state: str, current: str, wanted: str) -> bool:
        """Take the instance to `wanted` type; True once modified here, InProgress while stopping."""
        if current == wanted:
            return False
        if state == "running":
            self.aws.stop_instances(InstanceIds=[self.rec.resource_id])
            raise InProgress(f"stop requested; will change the type to {wanted} once stopped")
        if state in ("pending", "stopping"):
            raise InProgress(f"instance is {state}; will change the type to {wanted} once stopped")
        if state != "stopped":
            raise VerificationFailed(f"instance is {state}; cannot change its type")
        self.aws.modify_instance_attribute(InstanceId=self.rec.resource_id, InstanceType={"Value": wanted})
        return True

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        live = self._live()
        if live is None:
            raise VerificationFailed(f"instance {self.rec.resource_id} disappeared")
        state, current = live
        target, was_running = self.params.target_instance_type, bool(backup.data["was_running"])
        if not was_running and state in ("running", "pending") and current != target:
            raise Refused(f"instance was stopped when validated but is now {state}; re-validate")
        changed = self._converge_type(state, current, target)
        if changed:
            state = "stopped"
        if was_running and state == "stopped":
            self.aws.start_instances(InstanceIds=[self.rec.resource_id])
            return StepResult(changed=True, message=f"changed to {target}; start requested")
        if changed:
            return StepResult(changed=True, message=f"changed to {target}; left stopped")
        return StepResult(changed=False, message=f"already {target} ({state})")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        live = self._live()
        wanted = "running" if backup.data["was_running"] else "stopped"
        target = self.params.target_instance_type
        if live == (wanted, target):
            return StepResult(changed=False, message=f"instance is {target} and {wanted}")
        if live is not None and live[0] in ("pending", "stopping"):
            raise InProgress(f"instance is {live[0]}")
        shown = f"{live[1]} and {live[0]}" if live else "gone"
        raise VerificationFailed(f"instance is {shown}, expected {target} and {wanted}")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        live = self._live()
        if live is None:
            raise RevertImpossible(f"instance {self.rec.resource_id} no longer exists")
        state, current = live
        original, was_running = str(backup.data["instance_type"]), bool(backup.data["was_running"])
        changed = self._converge_type(state, current, original)
        if changed:
            state = "stopped"
        if state in ("pending", "stopping"):
            raise InProgress(f"instance is {state}")
        if was_running and state == "stopped":
            self.aws.start_instances(InstanceIds=[self.rec.resource_id])
            raise InProgress(f"back to {original}; start requested, waiting for running")
        if not was_running and state == "running":
            self.aws.stop_instances(InstanceIds=[self.rec.resource_id])
            raise InProgress(f"back to {original}; stop requested, waiting for stopped")
        return StepResult(changed=changed, message=f"instance is {original} and {state}")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        now = pricing.ec2_monthly(self.rec.region, self.state(seen).instance_type)
        then = pricing.ec2_monthly(self.rec.region, self.params.target_instance_type)
        if now is None or then is None:
            return self.rec.estimated_monthly_savings
        return round(now - then, 2)
