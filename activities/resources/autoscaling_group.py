"""Auto Scaling groups (AWS::AutoScaling::AutoScalingGroup): capacity, what the group launches,
and whether it is scaling right now. Reads the group's launch template from EC2 too."""

from __future__ import annotations

from typing import Any

from activities.resources.base import Clients, Resource, ResourceState, tags_of

#: Scaling activity status codes after which nothing is moving any more.
_SETTLED = frozenset({"Successful", "Failed", "Cancelled"})


class GroupState(ResourceState):
    """`busy` changes on its own (the kind declares it volatile)."""

    min: int
    max: int
    desired: int
    launch_template_id: str | None
    launch_template_version: str | None
    version_number: int | None
    instance_type: str | None
    single_template: bool
    busy: list[str]


def describe_group(asg: Any, name: str) -> dict[str, Any] | None:
    found = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    return dict(found[0]) if found else None


def template_version(ec2: Any, template_id: str, version: str) -> dict[str, Any]:
    found = ec2.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=[version])
    return dict(found["LaunchTemplateVersions"][0])


def scaling_now(asg: Any, name: str) -> list[str]:
    """Scaling activities still moving, as `description (status)`."""
    found = asg.describe_scaling_activities(AutoScalingGroupName=name, MaxRecords=20)
    return [f"{a.get('Description', a['ActivityId'])} ({a['StatusCode']})"
            for a in found["Activities"] if a["StatusCode"] not in _SETTLED]


class AutoScalingGroup(Resource[GroupState]):
    service = "autoscaling"
    cfn_type = "AWS::AutoScaling::AutoScalingGroup"
    id_pattern = "[\\x21-\\x7e]{1,255}"
    state_model = GroupState
    missing = "Auto Scaling group {id} does not exist"

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[GroupState, dict[str, str]] | None:
        asg = clients(cls.service)
        group = describe_group(asg, resource_id)
        if group is None:
            return None
        template, config = group.get("LaunchTemplate"), group.get("LaunchConfigurationName")
        state: dict[str, Any] = {
            "min": group["MinSize"], "max": group["MaxSize"], "desired": group["DesiredCapacity"],
            "launch_template_id": None, "launch_template_version": None, "version_number": None,
            "instance_type": None, "single_template": bool(template), "busy": scaling_now(asg, resource_id),
        }
        if template:
            version = template_version(clients("ec2"), template["LaunchTemplateId"],
                                       template.get("Version") or "$Default")
            state.update(launch_template_id=template["LaunchTemplateId"], version_number=version["VersionNumber"],
                         launch_template_version=template.get("Version"),
                         instance_type=version["LaunchTemplateData"].get("InstanceType"))
        elif config:
            configs = asg.describe_launch_configurations(LaunchConfigurationNames=[config])
            state["instance_type"] = configs["LaunchConfigurations"][0]["InstanceType"]
        return GroupState(**state), tags_of(group.get("Tags"))
