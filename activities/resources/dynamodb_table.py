"""DynamoDB tables (AWS::DynamoDB::Table): billing mode, capacities, and each GSI's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from activities.resources.base import Clients, Resource, ResourceState, tags_of, unless_missing


class IndexState(ResourceState):
    status: str
    read: int
    write: int


class TableState(ResourceState):
    """`status` changes on its own (the kind declares it volatile); on-demand tables read 0/0."""

    arn: str
    status: str
    mode: str
    read: int
    write: int
    gsis: dict[str, IndexState]
    last_switch_to_on_demand: str | None


def table_state(dynamodb: Any, name: str) -> TableState | None:
    """The table as the kind reads it, or None when there is no such table."""
    found = unless_missing(frozenset({"ResourceNotFoundException"}), dynamodb.describe_table, TableName=name)
    if found is None:
        return None
    table = found["Table"]
    summary, pt = table.get("BillingModeSummary") or {}, table.get("ProvisionedThroughput") or {}
    last = summary.get("LastUpdateToPayPerRequestDateTime")
    return TableState(
        arn=table["TableArn"], status=table["TableStatus"], mode=summary.get("BillingMode", "PROVISIONED"),
        read=pt.get("ReadCapacityUnits", 0), write=pt.get("WriteCapacityUnits", 0),
        gsis={g["IndexName"]: IndexState(status=g.get("IndexStatus", "ACTIVE"),
                                         read=(g.get("ProvisionedThroughput") or {}).get("ReadCapacityUnits", 0),
                                         write=(g.get("ProvisionedThroughput") or {}).get("WriteCapacityUnits", 0))
              for g in table.get("GlobalSecondaryIndexes") or []},
        last_switch_to_on_demand=last.isoformat() if isinstance(last, datetime) else last,
    )


def table_tags(dynamodb: Any, arn: str) -> dict[str, str]:
    tags, token = [], None
    while True:
        page = dynamodb.list_tags_of_resource(ResourceArn=arn, **({"NextToken": token} if token else {}))
        tags += page.get("Tags", [])
        token = page.get("NextToken")
        if not token:
            return tags_of(tags)


class DynamodbTable(Resource[TableState]):
    service = "dynamodb"
    cfn_type = "AWS::DynamoDB::Table"
    id_pattern = "[A-Za-z0-9_.-]{3,255}"
    state_model = TableState
    missing = "DynamoDB table {id} does not exist"

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[TableState, dict[str, str]] | None:
        dynamodb = clients(cls.service)
        state = table_state(dynamodb, resource_id)
        return None if state is None else (state, table_tags(dynamodb, state.arn))
