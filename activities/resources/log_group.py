"""CloudWatch Logs log groups (AWS::Logs::LogGroup): retention and stored bytes."""

from __future__ import annotations

from typing import Any

from activities.resources.base import Clients, Resource, ResourceState


class LogGroupState(ResourceState):
    """`stored_bytes` grows on its own (the kind declares it volatile); retention None: never expire."""

    retention_days: int | None
    stored_bytes: int | None
    creation_time: int | None
    arn: str


def find_group(logs: Any, name: str) -> dict[str, Any] | None:
    """The group named exactly so (the API matches by prefix: page until found)."""
    token: dict[str, str] = {}
    while True:
        page = logs.describe_log_groups(logGroupNamePrefix=name, **token)
        for group in page["logGroups"]:
            if group["logGroupName"] == name:
                return dict(group)
        if not page.get("nextToken"):
            return None
        token = {"nextToken": page["nextToken"]}


class LogGroup(Resource[LogGroupState]):
    service = "logs"
    cfn_type = "AWS::Logs::LogGroup"
    id_pattern = "[A-Za-z0-9_./#-]{1,512}"
    state_model = LogGroupState
    missing = "log group {id} does not exist"

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[LogGroupState, dict[str, str]] | None:
        logs = clients(cls.service)
        group = find_group(logs, resource_id)
        if group is None:
            return None
        arn = group.get("logGroupArn") or str(group["arn"]).removesuffix(":*")
        tags = logs.list_tags_for_resource(resourceArn=arn).get("tags") or {}
        return LogGroupState(retention_days=group.get("retentionInDays"), stored_bytes=group.get("storedBytes"),
                             creation_time=group.get("creationTime"), arn=arn), dict(tags)
