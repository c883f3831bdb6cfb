"""EC2 instance helpers shared by the instance kinds (not a kind itself)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from activities.actions.base import tags_of
from activities.errors import Refused, client_error_code
from domain.execution import Observation

_MISSING = {"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"}


def describe_instance(ec2: Any, instance_id: str) -> dict[str, Any] | None:
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as exc:
        if client_error_code(exc) in _MISSING:
            return None
        raise
    for reservation in reservations:
        for instance in reservation["Instances"]:
            if instance["State"]["Name"] not in ("terminated", "shutting-down"):
                return dict(instance)
    return None


def observe_instance(ec2: Any, instance_id: str) -> Observation:
    instance = describe_instance(ec2, instance_id)
    if instance is None:
        raise Refused(f"instance {instance_id} does not exist (or is terminated)")
    return Observation(
        state={
            "state": instance["State"]["Name"],
            "instance_type": instance["InstanceType"],
            "root_device_type": instance.get("RootDeviceType", "ebs"),
            "lifecycle": instance.get("InstanceLifecycle", "on-demand"),
        },
        tags=tags_of(instance.get("Tags")),
    )


def stoppability_refusal(seen: Observation) -> str | None:
    """Instances that cannot be stopped safely, whatever the kind wants to do after."""
    asg = seen.tags.get("aws:autoscaling:groupName")
    if asg:
        return f"instance is managed by Auto Scaling group {asg}; it would be replaced, change the group instead"
    if seen.state.get("root_device_type") == "instance-store":
        return "instance-store backed instances cannot be stopped"
    if seen.state.get("lifecycle") == "spot":
        return "spot instances are not stopped by Reclaim"
    return None
