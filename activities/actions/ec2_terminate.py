"""ec2.terminate: terminate an instance after imaging it; revert launches a replacement from the AMI."""

from __future__ import annotations

import json
import re
from typing import Any

from botocore.exceptions import ClientError
from pydantic import Field

from activities.actions.base import BACKUP_TAG, Action, may_have_made_it, register
from activities.errors import InProgress, Refused, RevertImpossible, VerificationFailed, client_error_code
from activities.resources.base import restorable_tags, tag_filters
from activities.resources.ec2_instance import (
    Ec2InstanceDetail,
    InstanceDetail,
    instance_record,
    termination_protected,
)
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import ec2_monthly

RESTORED_FOR = "reclaim:restored-for"
RECIPE = "reclaim:recipe:"
TAG_VALUE_MAX = 256
_AMI_MISSING = {"InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidAMIID.Malformed"}
_LIVE = ["pending", "running", "stopping", "stopped"]


class TerminateParams(StrictModel):
    expected_instance_type: str | None = Field(default=None, description="Refuse on a different type (drift).")


def recipe_tags(recipe: dict[str, Any]) -> list[dict[str, str]]:
    """The restore recipe as AMI tags (`reclaim:recipe:<field>`); values over 256 chars are left out."""
    fields = {k.replace("_", "-"): v for k, v in recipe.items() if isinstance(v, str)}
    fields["security-group-ids"] = ",".join(recipe["security_group_ids"])
    fields["tags"] = json.dumps(recipe["tags"], sort_keys=True, separators=(",", ":"))
    return [{"Key": RECIPE + k, "Value": v} for k, v in fields.items() if v and len(v) <= TAG_VALUE_MAX]


@register
class Ec2Terminate(Action[TerminateParams, InstanceDetail]):
    """Terminate an idle EC2 instance. A crash-consistent AMI (no reboot) tagged with the execution
    id and the restore recipe (type, subnet, security groups, key, instance profile, tags) is taken
    first; revert launches a NEW instance from it: its id and IPs differ, and user data, secondary
    network interfaces and Elastic IP associations are not restored. Cleanup deletes the AMI.

    Example recommendation::

        {"id": "rec-terminate-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "ec2.terminate", "resource_id": "i-0123456789abcdef0",
         "params": {"expected_instance_type": "m5.large"}, "estimated_monthly_savings": 70.08}
    """

    kind = "ec2.terminate"
    resource = Ec2InstanceDetail
    params_model = TerminateParams
    reversible = True
    destroys_data = True
    base_risk = RiskLevel.HIGH
    permissions = (
        "ec2:DescribeInstances", "ec2:DescribeInstanceAttribute", "ec2:DescribeImages", "ec2:CreateImage",
        "ec2:CreateTags", "ec2:TerminateInstances", "ec2:RunInstances", "iam:PassRole",
        "ec2:DeregisterImage", "ec2:DeleteSnapshot",
    )

    _unverified_launch: list[str] = []  # set by check_permissions when the source AMI is gone

    def _state(self) -> str | None:
        return None if (i := instance_record(self.aws, self.rec.resource_id)) is None else str(i["State"]["Name"])

    def refusal(self, seen: Observation) -> str | None:
        s, expected = self.state(seen), self.params.expected_instance_type
        if expected and s.instance_type != expected:
            return f"drift: instance type is {s.instance_type}, the recommendation assumed {expected}"
        if s.state not in ("running", "stopped"):
            return f"instance is {s.state}, not running or stopped"
        asg = seen.tags.get("aws:autoscaling:groupName")
        if asg:
            return f"instance is managed by Auto Scaling group {asg}; it would be replaced, change the group instead"
        if s.root_device_type != "ebs":
            return f"instance has a {s.root_device_type} root; an AMI backup needs an EBS root"
        if s.lifecycle == "spot":
            return "spot instances are not terminated by Reclaim"
        if s.termination_protection:
            return "termination protection (DisableApiTermination) is enabled on the instance"
        return None

    def plan(self, seen: Observation) -> list[str]:
        rid, s = self.rec.resource_id, self.state(seen)
        return [f"create an AMI of {rid} (no reboot), tagged with the restore recipe",
                f"terminate {rid} ({s.instance_type}, {s.state})",
                "on revert: launch a new instance from the AMI (new instance id and IPs)"]

    def _recipe(self, seen: Observation) -> dict[str, Any]:
        s = self.state(seen)
        tags = {t["Key"]: t["Value"] for t in restorable_tags(seen.tags)}
        return {"instance_type": s.instance_type, "subnet_id": s.subnet_id, "availability_zone": s.availability_zone,
                "security_group_ids": list(s.security_group_ids), "key_name": s.key_name,
                "iam_instance_profile_arn": s.iam_instance_profile_arn, "tags": tags}

    def _launch_spec(self, image_id: str, recipe: dict[str, Any]) -> dict[str, Any]:
        token = self.client_token("revert")
        tags = [*restorable_tags(recipe["tags"]), {"Key": RESTORED_FOR, "Value": self.execution_id},
                {"Key": "reclaim:restored-from-image", "Value": image_id}]
        arn, subnet, zone = recipe["iam_instance_profile_arn"], recipe["subnet_id"], recipe["availability_zone"]
        optional = {"SubnetId": subnet, "SecurityGroupIds": recipe["security_group_ids"],
                    "KeyName": recipe["key_name"], "IamInstanceProfile": {"Arn": arn} if arn else None,
                    "Placement": {"AvailabilityZone": zone} if zone and not subnet else None}
        return {"ImageId": image_id, "InstanceType": recipe["instance_type"], "MinCount": 1, "MaxCount": 1,
                "ClientToken": token, "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
                **{k: v for k, v in optional.items() if v}}

    def check_permissions(self, seen: Observation) -> list[str]:
        """RunInstances is dry-run from the instance's own source AMI (the backup does not exist yet)."""
        rid, recipe = self.rec.resource_id, self._recipe(seen)
        checked = [
            self.dry_run(self.aws.create_image, "ec2:CreateImage", InstanceId=rid, Name=self._image_name(),
                         NoReboot=True, TagSpecifications=self._image_tag_specs(recipe)),
            self.dry_run(self.aws.terminate_instances, "ec2:TerminateInstances", InstanceIds=[rid]),
        ]
        try:
            checked.append(self.dry_run(self.aws.run_instances, "ec2:RunInstances",
                                        **self._launch_spec(str(self.state(seen).image_id), recipe)))
        except ClientError as exc:
            if client_error_code(exc) not in _AMI_MISSING:
                raise
            self._unverified_launch = ["ec2:RunInstances"]
        return checked

    def unverified_permissions(self) -> list[str]:
        """The cleanup calls need the AMI to exist; RunInstances too when the source AMI is gone."""
        return [*self._unverified_launch, "ec2:DeregisterImage", "ec2:DeleteSnapshot"]

    def _image_name(self) -> str:
        """Unique per execution; AMI names allow only these characters, up to 128."""
        name = f"reclaim {self.rec.resource_id} {self.execution_id}"
        return re.sub(r"[^A-Za-z0-9()\[\] ./'@_-]", "_", name)[:128]

    def _image_tag_specs(self, recipe: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"ResourceType": "image", "Tags": [*self.backup_tags(), *recipe_tags(recipe)]}]

    def _image(self, image_id: str | None = None) -> dict[str, Any] | None:
        """The backup AMI by id, or (without one) the oldest carrying this execution's tags."""
        mine = {BACKUP_TAG: self.execution_id, "reclaim:resource-id": self.rec.resource_id}
        query = {"ImageIds": [image_id]} if image_id else {"Owners": ["self"], "Filters": tag_filters(mine)}
        try:
            images = self.aws.describe_images(**query)["Images"]
        except ClientError as exc:
            if client_error_code(exc) in _AMI_MISSING:
                return None
            raise
        live = sorted((i for i in images if i["State"] != "deregistered"), key=lambda i: str(i.get("CreationDate")))
        return dict(live[0]) if live else None

    def backup(self, seen: Observation) -> BackupRecord:
        recipe = self._recipe(seen)
        image = self._image() if may_have_made_it() else None  # a first attempt has made nothing yet
        if image is None:
            created = self.aws.create_image(
                InstanceId=self.rec.resource_id, Name=self._image_name(), NoReboot=True,
                Description=f"Reclaim backup of {self.rec.resource_id} before {self.kind} ({self.execution_id})",
                TagSpecifications=self._image_tag_specs(recipe))
            image = self._image(created["ImageId"])
            if image is None:
                raise InProgress(f"AMI {created['ImageId']} requested; not visible yet")
        ami, state = image["ImageId"], image["State"]
        if state in ("failed", "error", "invalid"):
            self.aws.deregister_image(ImageId=ami)
            raise InProgress(f"AMI {ami} is {state}; deregistered it, a retry takes a new one")
        if state != "available":
            raise InProgress(f"AMI {ami} is {state}")
        snapshots = [b["Ebs"]["SnapshotId"] for b in image.get("BlockDeviceMappings") or []
                     if b.get("Ebs", {}).get("SnapshotId")]
        if snapshots:  # tagged here: TagSpecifications for the snapshots is not something moto implements
            self.aws.create_tags(Resources=snapshots, Tags=self.backup_tags())
        tags_in_ami = any(t["Key"] == RECIPE + "tags" for t in recipe_tags(recipe))
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id, backup_id=ami, data={
            "image_id": ami, "snapshot_ids": snapshots, "recipe": recipe, "tags_in_ami_tags": tags_in_ami})

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        state = self._state()
        if state in (None, "shutting-down", "terminated"):
            return StepResult(changed=False, message=f"instance {self.rec.resource_id} already {state or 'gone'}")
        image = self._image(backup.backup_id)
        if image is None or image["State"] != "available":
            raise Refused(f"backup AMI {backup.backup_id} is missing or not available; not terminating")
        if termination_protected(self.aws, self.rec.resource_id):
            raise Refused("termination protection was enabled since validation")
        self.aws.terminate_instances(InstanceIds=[self.rec.resource_id])
        return StepResult(changed=True, message=f"terminating {self.rec.resource_id}; backup {image['ImageId']}")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        state = self._state()
        if state in (None, "terminated"):
            return StepResult(changed=False, message=f"instance {self.rec.resource_id} is terminated")
        if state == "shutting-down":
            raise InProgress("instance is shutting down")
        raise VerificationFailed(f"instance {self.rec.resource_id} is {state}, expected terminated")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        state = self._state()
        if state == "shutting-down":
            raise InProgress("original instance is still shutting down; will restore once it is terminated")
        if state not in (None, "terminated"):
            return StepResult(changed=False, message=f"original instance {self.rec.resource_id} is {state}")
        mine = [*tag_filters({RESTORED_FOR: self.execution_id}), {"Name": "instance-state-name", "Values": _LIVE}]
        found = [i for r in self.aws.describe_instances(Filters=mine)["Reservations"] for i in r["Instances"]]
        replacement, created = (dict(found[0]) if found else None), False
        if replacement is None:
            if (image := self._image(backup.backup_id)) is None:
                raise RevertImpossible(f"backup AMI {backup.backup_id} no longer exists")
            spec = self._launch_spec(image["ImageId"], backup.data["recipe"])
            replacement, created = dict(self.aws.run_instances(**spec)["Instances"][0]), True
        iid, istate = replacement["InstanceId"], replacement["State"]["Name"]
        if istate == "pending":
            raise InProgress(f"replacement instance {iid} is pending")
        if istate != "running":
            raise RevertImpossible(f"replacement instance {iid} is {istate}")
        note = f"restored as a new instance {iid} from AMI {backup.backup_id}; its id and IPs differ"
        return StepResult(changed=created, message=note, data={"replacement_instance_id": iid, "note": note})

    def cleanup(self, backup: BackupRecord) -> StepResult:
        done = []
        if (image := self._image(backup.backup_id)) is not None:
            self.aws.deregister_image(ImageId=image["ImageId"])
            done.append(f"deregistered {image['ImageId']}")
        for sid in backup.data.get("snapshot_ids") or []:
            try:
                self.aws.delete_snapshot(SnapshotId=sid)
                done.append(f"deleted {sid}")
            except ClientError as exc:
                if client_error_code(exc) != "InvalidSnapshot.NotFound":
                    raise
        return StepResult(changed=bool(done), message="; ".join(done) or "AMI and snapshots already gone")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        """A running instance's compute price; a stopped one costs only its volumes (not priced here)."""
        s = self.state(seen)
        monthly, running = ec2_monthly(self.rec.region, s.instance_type), s.state == "running"
        return round(monthly, 2) if running and monthly is not None else self.rec.estimated_monthly_savings
