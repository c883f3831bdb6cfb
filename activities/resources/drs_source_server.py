"""AWS Elastic Disaster Recovery source servers (AWS::DRS::SourceServer): what a drill reads of them.

CloudFormation has no DRS source server type; the name follows its pattern so the resource layer
and the edge check (`id_pattern`) treat a source server like any other resource. A drill item may
name several servers: `observe_servers` reads them in one call, the resource's `describe` one.
"""

from __future__ import annotations

from typing import Any

from activities.errors import Refused
from activities.resources.base import Clients, Resource, ResourceState
from domain.execution import Observation

SOURCE_SERVER_ID = "s-[0-9a-zA-Z]{17}"
_PAGE = 200  # DescribeSourceServers' maximum page


class SourceServerState(ResourceState):
    """One source server as a drill checks it before launching."""

    source_server_id: str
    hostname: str | None
    replication_state: str | None
    replication_direction: str | None
    last_launch_result: str | None
    last_launch_job_id: str | None
    recovery_instance_id: str | None


class DrillServers(ResourceState):
    """The source servers of one drill item, in the item's order."""

    servers: list[SourceServerState]


def source_servers(aws: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The DRS records of these source servers by id (paged); absent ids are not in the answer."""
    found: dict[str, dict[str, Any]] = {}
    query: dict[str, Any] = {"filters": {"sourceServerIDs": list(ids)}, "maxResults": _PAGE}
    while True:
        page = aws.describe_source_servers(**query)
        for item in page.get("items") or []:
            found[item["sourceServerID"]] = dict(item)
        token = page.get("nextToken")
        if not token:
            return found
        query["nextToken"] = token


def server_state(item: dict[str, Any]) -> SourceServerState:
    replication = item.get("dataReplicationInfo") or {}
    last_launch = (item.get("lifeCycle") or {}).get("lastLaunch") or {}
    hints = (item.get("sourceProperties") or {}).get("identificationHints") or {}
    return SourceServerState(
        source_server_id=item["sourceServerID"], hostname=hints.get("hostname") or hints.get("fqdn"),
        replication_state=replication.get("dataReplicationState"),
        replication_direction=item.get("replicationDirection"), last_launch_result=item.get("lastLaunchResult"),
        last_launch_job_id=(last_launch.get("initiated") or {}).get("jobID"),
        recovery_instance_id=item.get("recoveryInstanceId"),
    )


def observe_servers(clients: Clients, ids: list[str]) -> Observation:
    """Every server of a drill item, or Refused naming the ones DRS does not know. The tags are
    the union of the servers' DRS tags; servers that disagree on a tag's value are refused (a
    union would hide one of the values from the protection and production checks)."""
    found = source_servers(clients(DrsSourceServer.service), ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise Refused(f"DRS source server(s) {', '.join(missing)} do not exist in this account and region")
    values: dict[str, set[str]] = {}
    for server_id in ids:
        for key, value in (found[server_id].get("tags") or {}).items():
            values.setdefault(key, set()).add(value)
    conflicts = sorted(f"{key} ({', '.join(sorted(seen))})" for key, seen in values.items() if len(seen) > 1)
    if conflicts:
        raise Refused(f"the servers of this drill item disagree on tags {'; '.join(conflicts)}: "
                      "protection is judged on one set of tags, so split them into items")
    tags = {key: next(iter(seen)) for key, seen in values.items()}
    state = DrillServers(servers=[server_state(found[i]) for i in ids])
    return Observation(state=state.model_dump(mode="json"), tags=tags)


class DrsSourceServer(Resource[DrillServers]):
    service = "drs"
    cfn_type = "AWS::DRS::SourceServer"
    id_pattern = SOURCE_SERVER_ID
    state_model = DrillServers
    missing = "DRS source server {id} does not exist in this account and region"

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[DrillServers, dict[str, str]] | None:
        aws = clients(cls.service)
        item = source_servers(aws, [resource_id]).get(resource_id)
        if item is None:
            return None
        return DrillServers(servers=[server_state(item)]), dict(item.get("tags") or {})
