"""RDS DB instances (AWS::RDS::DBInstance): the rds.* kinds' view of one, and its snapshots' lookup.

RDS has no DryRun: the kinds prove only their read calls ahead and list the mutating ones as
unverified. The describes here are the whole of what a kind knows about the live instance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from activities.resources.base import Clients, Resource, ResourceState, tags_of, unless_missing


class DbInstanceState(ResourceState):
    """What drift is checked against, refusals read and a restore rebuilds."""

    status: str
    instance_class: str
    pending_instance_class: str | None
    multi_az: bool
    engine: str | None
    engine_version: str | None
    allocated_storage: int | None
    storage_type: str | None
    iops: int | None
    storage_throughput: int | None
    deletion_protection: bool
    cluster_id: str | None
    replica_source: str | None
    read_replicas: list[str]
    dbi_resource_id: str | None
    created: str | None
    subnet_group: str | None
    vpc_security_group_ids: list[str]
    parameter_group: str | None
    port: int | None
    publicly_accessible: bool
    maintenance_window: str | None


def describe_db(rds: Any, db_id: str) -> dict[str, Any] | None:
    """The DB instance, or None when no instance has this identifier."""
    answer = unless_missing(frozenset({"DBInstanceNotFound"}), rds.describe_db_instances, DBInstanceIdentifier=db_id)
    found = (answer or {}).get("DBInstances")
    return dict(found[0]) if found else None


def pending_class(db: dict[str, Any]) -> str | None:
    """The instance class a modification has scheduled (or is applying), if any."""
    value = (db.get("PendingModifiedValues") or {}).get("DBInstanceClass")
    return str(value) if value else None


def db_state(db: dict[str, Any]) -> DbInstanceState:
    subnet_group = db.get("DBSubnetGroup") or {}
    parameter_groups = db.get("DBParameterGroups") or [{}]
    return DbInstanceState(
        status=db["DBInstanceStatus"],
        instance_class=db["DBInstanceClass"],
        pending_instance_class=pending_class(db),
        multi_az=bool(db.get("MultiAZ", False)),
        engine=db.get("Engine"),
        engine_version=db.get("EngineVersion"),
        allocated_storage=db.get("AllocatedStorage"),
        storage_type=db.get("StorageType"),
        iops=db.get("Iops"),
        storage_throughput=db.get("StorageThroughput"),
        deletion_protection=bool(db.get("DeletionProtection", False)),
        cluster_id=db.get("DBClusterIdentifier"),
        replica_source=db.get("ReadReplicaSourceDBInstanceIdentifier"),
        read_replicas=list(db.get("ReadReplicaDBInstanceIdentifiers") or []),
        dbi_resource_id=db.get("DbiResourceId"),
        created=_iso(db.get("InstanceCreateTime")),
        subnet_group=subnet_group.get("DBSubnetGroupName"),
        vpc_security_group_ids=[g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups") or []],
        parameter_group=parameter_groups[0].get("DBParameterGroupName"),
        port=(db.get("Endpoint") or {}).get("Port") or db.get("DbInstancePort"),
        publicly_accessible=bool(db.get("PubliclyAccessible", False)),
        maintenance_window=db.get("PreferredMaintenanceWindow"),
    )


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def same_instance(db: dict[str, Any], dbi_resource_id: str | None, created: str | None) -> bool:
    """Whether `db` is the instance observed with this resource id and creation time, not a newcomer
    under the same identifier: AWS gives every instance its own DbiResourceId."""
    return db.get("DbiResourceId") == dbi_resource_id and _iso(db.get("InstanceCreateTime")) == created


class RdsInstance(Resource[DbInstanceState]):
    service = "rds"
    cfn_type = "AWS::RDS::DBInstance"
    id_pattern = "[A-Za-z][A-Za-z0-9-]{0,62}"
    state_model = DbInstanceState
    missing = "DB instance {id} does not exist"

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[DbInstanceState, dict[str, str]] | None:
        db = describe_db(clients(cls.service), resource_id)
        return None if db is None else (db_state(db), tags_of(db.get("TagList")))


def describe_db_snapshot(rds: Any, snapshot_id: str) -> dict[str, Any] | None:
    """A manual DB snapshot (a backup), or None."""
    answer = unless_missing(frozenset({"DBSnapshotNotFound"}), rds.describe_db_snapshots,
                            DBSnapshotIdentifier=snapshot_id)
    found = (answer or {}).get("DBSnapshots")
    return dict(found[0]) if found else None
