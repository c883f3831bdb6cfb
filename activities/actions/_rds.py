"""What the rds.* kinds share about changing a DB instance (not a kind itself): refusals, waits,
and rds.delete's restore recipe. Reading the instance is activities/resources/rds_instance.py.
"""

from __future__ import annotations

import re
from typing import Any

from activities.errors import InProgress
from activities.resources.rds_instance import DbInstanceState

#: Statuses AWS leaves on its own: wait (InProgress) rather than act or fail.
TRANSITIONAL = frozenset({
    "backing-up", "configuring-enhanced-monitoring", "configuring-iam-database-auth",
    "configuring-log-exports", "converting-to-vpc", "creating", "deleting", "maintenance",
    "modifying", "moving-to-vpc", "rebooting", "renaming", "resetting-master-credentials",
    "starting", "stopping", "storage-optimization", "upgrading",
})

RESTORED_FOR = "reclaim:restored-for"
AUTO_START_NOTE = "AWS starts a stopped DB instance again automatically after 7 days"


def class_drift(state: DbInstanceState, expected: str | None) -> str | None:
    if expected is not None and state.instance_class != expected:
        return f"drift: DB instance class is {state.instance_class}, the recommendation assumed {expected}"
    return None


def topology_refusal(state: DbInstanceState, doing: str) -> str | None:
    """Aurora members and replication links: changing one instance alone is the wrong change."""
    if state.cluster_id:
        return f"DB instance is a member of Aurora cluster {state.cluster_id}; {doing} the cluster instead"
    if state.read_replicas:
        return f"DB instance has read replicas ({', '.join(state.read_replicas)}); {doing} them first"
    if state.replica_source:
        return f"DB instance is a read replica of {state.replica_source}"
    return None


def wait_if_transitional(status: str, what: str) -> None:
    if status in TRANSITIONAL:
        raise InProgress(f"DB instance is {status}; {what}")


def snapshot_name(execution_id: str) -> str:
    """`reclaim-<execution id>` as an RDS identifier: letters, digits, single hyphens, ≤255."""
    cleaned = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", execution_id.lower())).strip("-")
    return f"reclaim-{cleaned}"[:255].rstrip("-")


def restored_name(db_id: str) -> str:
    """The fallback identifier when the original one is taken (DB identifiers are ≤63)."""
    return f"{db_id[:54].rstrip('-')}-restored"


#: What a restore needs, as `DbInstanceState` fields -> RestoreDBInstanceFromDBSnapshot arguments
#: (None: recorded for the operator, not an argument: the snapshot fixes the engine version).
RECIPE = {"instance_class": "DBInstanceClass", "subnet_group": "DBSubnetGroupName",
          "vpc_security_group_ids": "VpcSecurityGroupIds", "parameter_group": "DBParameterGroupName",
          "multi_az": "MultiAZ", "storage_type": "StorageType", "allocated_storage": "AllocatedStorage",
          "engine": "Engine", "engine_version": None, "port": "Port", "publicly_accessible": "PubliclyAccessible"}


def restore_recipe(state: DbInstanceState) -> dict[str, Any]:
    facts = state.model_dump(mode="json")
    return {key: facts[key] for key in RECIPE}


def recipe_tags(recipe: dict[str, Any]) -> list[dict[str, str]]:
    """The recipe as `reclaim:recipe:<field>` tags, so the snapshot alone says how to restore it."""
    return [{"Key": f"reclaim:recipe:{key.replace('_', '-')}", "Value": tag_value(value)}
            for key, value in recipe.items() if value not in (None, [], "")]


def restore_args(recipe: dict[str, Any], iops: int | None) -> dict[str, Any]:
    args = {arg: recipe[key] for key, arg in RECIPE.items() if arg and recipe.get(key) not in (None, [], "")}
    if recipe.get("storage_type") in ("io1", "io2") and iops:
        args["Iops"] = iops  # required for io1/io2; gp3 below its threshold refuses an explicit value
    return args


def tag_value(value: Any) -> str:
    """RDS tag values allow letters, digits, spaces and `_.:/=+-@`: lists are space-joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def restored_tags(tags: dict[str, str], execution_id: str, snapshot_id: str) -> list[dict[str, str]]:
    """The original tags that may be set again (aws: is reserved), and where the restore came from."""
    kept = [{"Key": k, "Value": v} for k, v in sorted(tags.items()) if not k.lower().startswith("aws:")]
    return [*kept, {"Key": RESTORED_FOR, "Value": execution_id},
            {"Key": "reclaim:restored-from-snapshot", "Value": snapshot_id}]
