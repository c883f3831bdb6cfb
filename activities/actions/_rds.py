"""RDS DB instance helpers shared by the rds.* kinds (not a kind itself).

RDS has no DryRun: the kinds prove only their read calls ahead and list the
mutating ones as unverified. Describe calls here are the whole of what a kind
knows about the live instance; every state they return is JSON-serialisable.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from activities.actions.base import tags_of
from activities.errors import InProgress, Refused, client_error_code
from domain.execution import Observation

#: Statuses AWS leaves on its own: wait (InProgress) rather than act or fail.
TRANSITIONAL = frozenset({
    "backing-up", "configuring-enhanced-monitoring", "configuring-iam-database-auth",
    "configuring-log-exports", "converting-to-vpc", "creating", "deleting", "maintenance",
    "modifying", "moving-to-vpc", "rebooting", "renaming", "resetting-master-credentials",
    "starting", "stopping", "storage-optimization", "upgrading",
})

RESTORED_FOR = "reclaim:restored-for"
AUTO_START_NOTE = "AWS starts a stopped DB instance again automatically after 7 days"


def describe_db(rds: Any, db_id: str) -> dict[str, Any] | None:
    """The DB instance, or None when no instance has this identifier."""
    try:
        found = rds.describe_db_instances(DBInstanceIdentifier=db_id)["DBInstances"]
    except ClientError as exc:
        if client_error_code(exc) == "DBInstanceNotFound":
            return None
        raise
    return dict(found[0]) if found else None


def pending_class(db: dict[str, Any]) -> str | None:
    """The instance class a modification has scheduled (or is applying), if any."""
    value = (db.get("PendingModifiedValues") or {}).get("DBInstanceClass")
    return str(value) if value else None


def db_facts(db: dict[str, Any]) -> dict[str, Any]:
    """JSON-serialisable facts: what drift is checked against, refusals read and restores rebuild."""
    subnet_group = db.get("DBSubnetGroup") or {}
    parameter_groups = db.get("DBParameterGroups") or [{}]
    return {
        "status": db["DBInstanceStatus"],
        "instance_class": db["DBInstanceClass"],
        "pending_instance_class": pending_class(db),
        "multi_az": bool(db.get("MultiAZ", False)),
        "engine": db.get("Engine"),
        "engine_version": db.get("EngineVersion"),
        "allocated_storage": db.get("AllocatedStorage"),
        "storage_type": db.get("StorageType"),
        "iops": db.get("Iops"),
        "storage_throughput": db.get("StorageThroughput"),
        "deletion_protection": bool(db.get("DeletionProtection", False)),
        "cluster_id": db.get("DBClusterIdentifier"),
        "replica_source": db.get("ReadReplicaSourceDBInstanceIdentifier"),
        "read_replicas": list(db.get("ReadReplicaDBInstanceIdentifiers") or []),
        "dbi_resource_id": db.get("DbiResourceId"),
        "created": _iso(db.get("InstanceCreateTime")),
        "subnet_group": subnet_group.get("DBSubnetGroupName"),
        "vpc_security_group_ids": [g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups") or []],
        "parameter_group": parameter_groups[0].get("DBParameterGroupName"),
        "port": (db.get("Endpoint") or {}).get("Port") or db.get("DbInstancePort"),
        "publicly_accessible": bool(db.get("PubliclyAccessible", False)),
        "maintenance_window": db.get("PreferredMaintenanceWindow"),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def same_instance(db: dict[str, Any], facts: dict[str, Any]) -> bool:
    """Whether `db` is the instance `facts` described, not a newcomer under the same identifier.
    AWS gives every instance its own DbiResourceId; the creation time also tells them apart."""
    return (db.get("DbiResourceId") == facts.get("dbi_resource_id")
            and _iso(db.get("InstanceCreateTime")) == facts.get("created"))


def observe_db(rds: Any, db_id: str) -> Observation:
    db = describe_db(rds, db_id)
    if db is None:
        raise Refused(f"DB instance {db_id} does not exist")
    return Observation(state=db_facts(db), tags=tags_of(db.get("TagList")))


def class_drift(state: dict[str, Any], expected: str | None) -> str | None:
    if expected is not None and state["instance_class"] != expected:
        return f"drift: DB instance class is {state['instance_class']}, the recommendation assumed {expected}"
    return None


def topology_refusal(state: dict[str, Any], doing: str) -> str | None:
    """Aurora members and replication links: changing one instance alone is the wrong change."""
    if state.get("cluster_id"):
        return f"DB instance is a member of Aurora cluster {state['cluster_id']}; {doing} the cluster instead"
    if state.get("read_replicas"):
        return f"DB instance has read replicas ({', '.join(state['read_replicas'])}); {doing} them first"
    if state.get("replica_source"):
        return f"DB instance is a read replica of {state['replica_source']}"
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


def describe_snapshot(rds: Any, snapshot_id: str) -> dict[str, Any] | None:
    try:
        found = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)["DBSnapshots"]
    except ClientError as exc:
        if client_error_code(exc) == "DBSnapshotNotFound":
            return None
        raise
    return dict(found[0]) if found else None


#: What a restore needs, as `db_facts` keys -> RestoreDBInstanceFromDBSnapshot arguments
#: (None: recorded for the operator, not an argument: the snapshot fixes the engine version).
RECIPE = {"instance_class": "DBInstanceClass", "subnet_group": "DBSubnetGroupName",
          "vpc_security_group_ids": "VpcSecurityGroupIds", "parameter_group": "DBParameterGroupName",
          "multi_az": "MultiAZ", "storage_type": "StorageType", "allocated_storage": "AllocatedStorage",
          "engine": "Engine", "engine_version": None, "port": "Port", "publicly_accessible": "PubliclyAccessible"}


def restore_recipe(state: dict[str, Any]) -> dict[str, Any]:
    return {key: state.get(key) for key in RECIPE}


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
