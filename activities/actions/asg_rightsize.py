"""asg.rightsize: lower an Auto Scaling group's capacity, or change its launch template's instance type."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field, model_validator

from activities.actions.base import Action, register
from activities.errors import Refused, RevertImpossible, VerificationFailed
from activities.resources.autoscaling_group import (
    AutoScalingGroup,
    GroupState,
    describe_group,
    scaling_now,
    template_version,
)
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import ec2_monthly
from domain.watch import ASG_WORKLOAD


class AsgRightsizeParams(StrictModel):
    """Exactly one mode: a capacity change, or an instance type change of the launch template."""

    expected_desired: int | None = Field(default=None, ge=0, description="Refuse when desired differs (drift).")
    target_desired: int | None = Field(default=None, ge=0)
    target_min: int | None = Field(default=None, ge=0, description="Default: the group's min is kept.")
    target_max: int | None = Field(default=None, ge=0, description="Default: the group's max is kept.")
    expected_instance_type: str | None = Field(default=None, min_length=1)
    target_instance_type: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_mode(self) -> AsgRightsizeParams:
        sizes = (self.expected_desired, self.target_desired, self.target_min, self.target_max)
        types = (self.expected_instance_type, self.target_instance_type)
        if any(v is not None for v in sizes) == any(v is not None for v in types):
            raise ValueError("give exactly one of: expected_desired/target_desired[/target_min/target_max] "
                             "(capacity) or expected_instance_type/target_instance_type (instance type)")
        if self.type_mode:
            if None in types:
                raise ValueError("an instance type change needs expected_instance_type and target_instance_type")
            if types[0] == types[1]:
                raise ValueError("target_instance_type must differ from expected_instance_type")
            return self
        desired = self.target_desired
        if self.expected_desired is None or desired is None:
            raise ValueError("a capacity change needs expected_desired and target_desired")
        if self.expected_desired == desired:
            raise ValueError("target_desired must differ from expected_desired")
        if (self.target_min is not None and self.target_min > desired) or (
                self.target_max is not None and self.target_max < desired):
            raise ValueError("target_min <= target_desired <= target_max must hold")
        return self

    @property
    def type_mode(self) -> bool:
        return self.expected_instance_type is not None or self.target_instance_type is not None


@register
class AsgRightsize(Action[AsgRightsizeParams, GroupState]):
    """Lower an Auto Scaling group's desired (and optionally min/max) capacity, or change the
    instance type of its launch template: a new version copied from the one in use (described
    `reclaim:<execution id>`) that the group then points at. Running instances keep their type
    until the group replaces them (Reclaim starts no instance refresh); revert points the group
    back to the original version and never deletes versions.

    Example recommendation::

        {"id": "rec-asg-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "asg.rightsize", "resource_id": "web-asg",
         "params": {"expected_desired": 6, "target_desired": 4, "target_min": 2},
         "estimated_monthly_savings": 140.16}
    """

    kind = "asg.rightsize"
    resource = AutoScalingGroup
    params_model = AsgRightsizeParams
    reversible = True
    base_risk = RiskLevel.MEDIUM
    watched = ASG_WORKLOAD
    watch_period = timedelta(hours=1)
    expected_duration = timedelta(minutes=30)
    volatile_state = frozenset({"busy"})
    permissions = (
        "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeScalingActivities",
        "autoscaling:DescribeLaunchConfigurations", "autoscaling:UpdateAutoScalingGroup",
        "ec2:DescribeLaunchTemplateVersions", "ec2:CreateLaunchTemplateVersion", "ec2:RunInstances",
    )

    @property
    def ec2(self) -> Any:
        """The launch templates' service: the kind's second client."""
        return self.client("ec2")

    def _group(self, missing: type[Exception] = VerificationFailed) -> dict[str, Any]:
        group = describe_group(self.aws, self.rec.resource_id)
        if group is None:
            raise missing(AutoScalingGroup.missing.format(id=self.rec.resource_id))
        return group

    def refusal(self, seen: Observation) -> str | None:
        s, p = self.state(seen), self.params
        if p.type_mode and s.instance_type != p.expected_instance_type:
            return (f"drift: the group launches {s.instance_type}, "
                    f"the recommendation assumed {p.expected_instance_type}")
        if not p.type_mode and s.desired != p.expected_desired:
            return f"drift: desired capacity is {s.desired}, the recommendation assumed {p.expected_desired}"
        if p.type_mode and not s.single_template:
            return "the group does not launch from one launch template (launch configuration or mixed instances)"
        if s.busy:
            return f"scaling activities are in progress: {'; '.join(s.busy)}"
        low = s.min if p.target_min is None else p.target_min
        high = s.max if p.target_max is None else p.target_max
        if not p.type_mode and not low <= (p.target_desired or 0) <= high:
            return f"target_desired {p.target_desired} is outside min {low} .. max {high}; set target_min/target_max"
        return None

    def _sizes(self) -> dict[str, int]:
        """The UpdateAutoScalingGroup arguments of a capacity change: only what the params set."""
        p = self.params
        sizes = {"DesiredCapacity": p.target_desired, "MinSize": p.target_min, "MaxSize": p.target_max}
        return {key: value for key, value in sizes.items() if value is not None}

    def plan(self, seen: Observation) -> list[str]:
        name, s = self.rec.resource_id, self.state(seen)
        if not self.params.type_mode:
            now = {"DesiredCapacity": s.desired, "MinSize": s.min, "MaxSize": s.max}
            return [f"update {name}: " + ", ".join(f"{k} {now[k]} -> {v}" for k, v in self._sizes().items())]
        return [f"create a version of launch template {s.launch_template_id} from version {s.version_number} "
                f"with InstanceType {self.params.target_instance_type} (reclaim:{self.execution_id})",
                f"point {name} at it (was {s.launch_template_version or '$Default'}); "
                "running instances keep their type until replaced"]

    def _new_version_args(self, template_id: str, source: int) -> dict[str, Any]:
        return {"LaunchTemplateId": template_id, "SourceVersion": str(source),
                "VersionDescription": f"reclaim:{self.execution_id}",
                "LaunchTemplateData": {"InstanceType": self.params.target_instance_type}}

    def check_permissions(self, seen: Observation) -> list[str]:
        """Auto Scaling has no DryRun: the reads are made; the template version is dry-run (EC2)."""
        self._group()
        scaling_now(self.aws, self.rec.resource_id)
        checked = ["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeScalingActivities"]
        if self.params.type_mode:
            state = self.state(seen)
            template_id, source = str(state.launch_template_id), int(state.version_number or 0)
            template_version(self.ec2, template_id, str(source))
            checked += ["ec2:DescribeLaunchTemplateVersions", self.dry_run(
                self.ec2.create_launch_template_version, "ec2:CreateLaunchTemplateVersion",
                **self._new_version_args(template_id, source))]
        return checked

    def unverified_permissions(self) -> list[str]:
        """Pointing a group at a launch template also needs ec2:RunInstances (checked by Auto Scaling)."""
        return ["autoscaling:UpdateAutoScalingGroup", *(["ec2:RunInstances"] if self.params.type_mode else [])]

    def backup(self, seen: Observation) -> BackupRecord:
        s = self.state(seen)
        data: dict[str, Any] = {"min": s.min, "max": s.max, "desired": s.desired}
        if self.params.type_mode:
            data.update(launch_template_id=s.launch_template_id, launch_template_version=s.launch_template_version,
                        version_number=s.version_number)
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id, data=data)

    def _our_version(self, template_id: str, after: int) -> int | None:
        """The version this execution created, if any (always newer than the one it copied)."""
        description, token = f"reclaim:{self.execution_id}", None
        while True:
            page = self.ec2.describe_launch_template_versions(
                LaunchTemplateId=template_id, MinVersion=str(after + 1), MaxResults=200,
                **({"NextToken": token} if token else {}))
            for version in page["LaunchTemplateVersions"]:
                if version.get("VersionDescription") == description:
                    return int(version["VersionNumber"])
            token = page.get("NextToken")
            if not token:
                return None

    def _point(self, group: dict[str, Any], template_id: str, version: str) -> bool:
        """Point the group at a template version; False when it already does."""
        template = group.get("LaunchTemplate") or {}
        if template.get("LaunchTemplateId") == template_id and (template.get("Version") or "$Default") == version:
            return False
        self.aws.update_auto_scaling_group(AutoScalingGroupName=self.rec.resource_id,
                                           LaunchTemplate={"LaunchTemplateId": template_id, "Version": version})
        return True

    def _resize(self, group: dict[str, Any], sizes: dict[str, int]) -> StepResult:
        if all(group[key] == value for key, value in sizes.items()):
            return StepResult(changed=False, message=f"{self.rec.resource_id} already has {sizes}")
        self.aws.update_auto_scaling_group(AutoScalingGroupName=self.rec.resource_id, **sizes)
        return StepResult(changed=True, message=f"{self.rec.resource_id} updated to {sizes}")

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        group, name, data = self._group(), self.rec.resource_id, backup.data
        if not self.params.type_mode:
            if group["DesiredCapacity"] not in (data["desired"], self.params.target_desired):
                raise Refused(f"desired capacity changed to {group['DesiredCapacity']} since validation; re-validate")
            return self._resize(group, self._sizes())
        template_id, source = str(data["launch_template_id"]), int(data["version_number"])
        if (group.get("LaunchTemplate") or {}).get("LaunchTemplateId") != template_id:
            raise Refused(f"{name} no longer launches from template {template_id}; re-validate")
        number = self._our_version(template_id, source) or int(self.ec2.create_launch_template_version(
            **self._new_version_args(template_id, source))["LaunchTemplateVersion"]["VersionNumber"])
        changed = self._point(group, template_id, str(number))
        return StepResult(changed=changed, message=f"{name} uses {template_id} version {number}",
                          data={"launch_template_version": number})

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        group, name = self._group(), self.rec.resource_id
        if not self.params.type_mode:
            sizes = self._sizes()
            if all(group[key] == value for key, value in sizes.items()):
                return StepResult(changed=False, message=f"{name} has {sizes}")
            raise VerificationFailed(f"{name} has desired {group['DesiredCapacity']}, min {group['MinSize']}, "
                                     f"max {group['MaxSize']}; expected {sizes}")
        template = group.get("LaunchTemplate") or {}
        number = self._our_version(str(backup.data["launch_template_id"]), int(backup.data["version_number"]))
        if number is not None and template.get("Version") == str(number):
            return StepResult(changed=False, message=f"{name} launches from version {number}")
        raise VerificationFailed(f"{name} does not use Reclaim's template version {number} (uses {template})")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        """Restores min/max/desired, or the original template version. A group that was on `$Latest` is
        pinned to the number `$Latest` meant then, since Reclaim's version is now the latest."""
        group, name, data = self._group(RevertImpossible), self.rec.resource_id, backup.data
        if not self.params.type_mode:
            return self._resize(group, {"MinSize": data["min"], "MaxSize": data["max"],
                                        "DesiredCapacity": data["desired"]})
        original = data["launch_template_version"] or "$Default"
        version = str(data["version_number"]) if original == "$Latest" else original
        changed = self._point(group, str(data["launch_template_id"]), version)
        return StepResult(changed=changed, message=f"{name} uses {data['launch_template_id']} version {version}")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        p, region = self.params, self.rec.region
        if p.type_mode:
            old, new = (ec2_monthly(region, str(t)) for t in (p.expected_instance_type, p.target_instance_type))
            if old is None or new is None:
                return self.rec.estimated_monthly_savings
            return float(self.state(seen).desired * (old - new))
        instance_type = self.state(seen).instance_type
        price = ec2_monthly(region, instance_type) if instance_type else None
        if price is None:
            return self.rec.estimated_monthly_savings
        return ((p.expected_desired or 0) - (p.target_desired or 0)) * price
