"""EC2 instances (AWS::EC2::Instance): the instance kinds' view of one, and its lookups."""

from __future__ import annotations

from typing import Any

from activities.resources.base import HEX_ID, Clients, Resource, ResourceState, S, tags_of, unless_missing

_MISSING = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
GONE = ("shutting-down", "terminated")


class InstanceState(ResourceState):
    """What ec2.stop and ec2.rightsize check before they stop an instance."""

    state: str
    instance_type: str
    root_device_type: str
    lifecycle: str


class InstanceDetail(ResourceState):
    """What ec2.terminate records to launch a replacement (the restore recipe) and to refuse."""

    state: str
    instance_type: str
    image_id: str | None
    root_device_type: str
    lifecycle: str
    subnet_id: str | None
    availability_zone: str | None
    security_group_ids: list[str]
    key_name: str | None
    iam_instance_profile_arn: str | None
    termination_protection: bool


def instance_record(ec2: Any, instance_id: str) -> dict[str, Any] | None:
    """The instance in any state (terminated included), or None once AWS forgot it."""
    answer = unless_missing(_MISSING, ec2.describe_instances, InstanceIds=[instance_id]) or {}
    found = [i for r in answer.get("Reservations", []) for i in r["Instances"]]
    return dict(found[0]) if found else None


def describe_instance(ec2: Any, instance_id: str) -> dict[str, Any] | None:
    """The instance, or None when it does not exist or is terminated (or on its way there)."""
    instance = instance_record(ec2, instance_id)
    return None if instance is None or instance["State"]["Name"] in GONE else instance


def termination_protected(ec2: Any, instance_id: str) -> bool:
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="disableApiTermination")
    return bool(attr.get("DisableApiTermination", {}).get("Value"))


class _Instances(Resource[S]):
    """What both views of an instance share: a terminated instance counts as missing."""

    service = "ec2"
    cfn_type = "AWS::EC2::Instance"
    id_pattern = f"i-{HEX_ID}"
    missing = "instance {id} does not exist (or is terminated)"


class Ec2Instance(_Instances[InstanceState]):
    state_model = InstanceState

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[InstanceState, dict[str, str]] | None:
        i = describe_instance(clients(cls.service), resource_id)
        if i is None:
            return None
        return InstanceState(state=i["State"]["Name"], instance_type=i["InstanceType"],
                             root_device_type=i.get("RootDeviceType", "ebs"),
                             lifecycle=i.get("InstanceLifecycle", "on-demand")), tags_of(i.get("Tags"))


class Ec2InstanceDetail(_Instances[InstanceDetail]):
    """The same instances, seen with what a replacement launch needs (one more call)."""

    state_model = InstanceDetail

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[InstanceDetail, dict[str, str]] | None:
        ec2 = clients(cls.service)
        i = describe_instance(ec2, resource_id)
        if i is None:
            return None
        return InstanceDetail(
            state=i["State"]["Name"], instance_type=i["InstanceType"], image_id=i.get("ImageId"),
            root_device_type=i.get("RootDeviceType", "ebs"), lifecycle=i.get("InstanceLifecycle", "on-demand"),
            subnet_id=i.get("SubnetId") or None, availability_zone=i.get("Placement", {}).get("AvailabilityZone"),
            security_group_ids=[g["GroupId"] for g in i.get("SecurityGroups") or []],
            key_name=i.get("KeyName") or None,
            iam_instance_profile_arn=(i.get("IamInstanceProfile") or {}).get("Arn"),
            termination_protection=termination_protected(ec2, resource_id),
        ), tags_of(i.get("Tags"))


def stop_refusal(state: InstanceState, tags: dict[str, str]) -> str | None:
    """Instances that cannot be stopped safely, whatever the kind wants to do after."""
    asg = tags.get("aws:autoscaling:groupName")
    if asg:
        return f"instance is managed by Auto Scaling group {asg}; it would be replaced, change the group instead"
    if state.root_device_type == "instance-store":
        return "instance-store backed instances cannot be stopped"
    if state.lifecycle == "spot":
        return "spot instances are not stopped by Reclaim"
    return None
