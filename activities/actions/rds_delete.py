"""rds.delete: delete an idle DB instance after a manual snapshot; revert restores it from that snapshot."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pydantic import Field

from activities.actions._rds import (
    RESTORED_FOR,
    class_drift,
    recipe_tags,
    restore_args,
    restore_recipe,
    restored_name,
    restored_tags,
    snapshot_name,
    topology_refusal,
    wait_if_transitional,
)
from activities.actions.base import BACKUP_TAG, Action, register
from activities.errors import InProgress, Refused, RevertImpossible, VerificationFailed, client_error_code
from activities.resources.base import tags_of
from activities.resources.rds_instance import (
    DbInstanceState,
    RdsInstance,
    describe_db,
    describe_db_snapshot,
    same_instance,
)
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import flat, rds_monthly

_FAILED = ("failed", "incompatible-restore", "incompatible-parameters", "incompatible-network", "restore-error")


class RdsDeleteParams(StrictModel):
    expected_instance_class: str | None = Field(
        default=None, min_length=1, description="Refuse on a different class (drift)."
    )


@register
class RdsDelete(Action[RdsDeleteParams, DbInstanceState]):
    """Delete an idle RDS DB instance (available or stopped). Backup takes a manual snapshot
    `reclaim-<execution id>`, tagged with the execution id and the restore recipe
    (`reclaim:recipe:<field>`: class, subnet group, security groups, parameter group, Multi-AZ,
    storage, engine, port, public access). Delete then uses SkipFinalSnapshot=True because that
    backup *is* the final snapshot: it is confirmed available before anything is destroyed,
    whereas a DeleteDBInstance final snapshot would appear only once deletion has begun,
    untagged, under a name a retried delete could not reuse. Writes made between backup and
    delete are not in it: the kind is for idle instances. Revert restores the snapshot under the
    same identifier when free (same endpoint), else `<id>-restored`. Read replicas, instances with
    replicas and Aurora members are refused (a restore would not bring replication back).
    Savings: compute (a stopped instance too: AWS starts it again after 7 days) plus storage,
    minus the kept snapshot's storage.

    Example recommendation::

        {"id": "rec-rds-delete-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "rds.delete", "resource_id": "legacy-reports-db",
         "params": {"expected_instance_class": "db.t3.medium"},
         "estimated_monthly_savings": 51.64}
    """

    kind = "rds.delete"
    resource = RdsInstance
    params_model = RdsDeleteParams
    reversible = True
    destroys_data = True
    base_risk = RiskLevel.HIGH
    permissions = ("rds:DescribeDBInstances", "rds:DescribeDBSnapshots", "rds:CreateDBSnapshot",
                   "rds:AddTagsToResource", "rds:DeleteDBInstance", "rds:RestoreDBInstanceFromDBSnapshot",
                   "rds:DeleteDBSnapshot")

    def refusal(self, seen: Observation) -> str | None:
        state = self.state(seen)
        drift = class_drift(state, self.params.expected_instance_class)
        if drift:
            return drift
        if state.deletion_protection:
            return "deletion protection is enabled on this DB instance"
        if state.status not in ("available", "stopped"):
            return f"DB instance is {state.status}, not available or stopped"
        return topology_refusal(state, "delete")

    def plan(self, seen: Observation) -> list[str]:
        rid, name = self.rec.resource_id, snapshot_name(self.execution_id)
        return [f"snapshot {rid} as {name} ({self.state(seen).allocated_storage} GiB)",
                f"delete {rid} without a further final snapshot ({name} is the final snapshot)"]

    def check_permissions(self, seen: Observation) -> list[str]:
        """RDS has no DryRun: only the reads are proven; the mutating calls are reported unverified."""
        describe_db(self.aws, self.rec.resource_id)
        describe_db_snapshot(self.aws, snapshot_name(self.execution_id))
        return ["rds:DescribeDBInstances", "rds:DescribeDBSnapshots"]

    def unverified_permissions(self) -> list[str]:
        return [p for p in self.permissions if not p.startswith("rds:Describe")]

    def _snapshot(self, name: str | None) -> dict[str, Any] | None:
        """Our snapshot by name; a snapshot of that name without our tag is never ours to use."""
        snapshot = describe_db_snapshot(self.aws, name) if name else None
        if snapshot is not None and tags_of(snapshot.get("TagList")).get(BACKUP_TAG) != self.execution_id:
            raise Refused(f"snapshot {name} exists but was not taken by execution {self.execution_id}")
        return snapshot

    def backup(self, seen: Observation) -> BackupRecord:
        name = snapshot_name(self.execution_id)
        snapshot = self._snapshot(name)
        state = self.state(seen)
        recipe = restore_recipe(state)
        if snapshot is None:
            snapshot = self.aws.create_db_snapshot(DBInstanceIdentifier=self.rec.resource_id,
                                                   DBSnapshotIdentifier=name,
                                                   Tags=self.backup_tags() + recipe_tags(recipe))["DBSnapshot"]
        status = snapshot["Status"]
        if status == "failed":
            self.aws.delete_db_snapshot(DBSnapshotIdentifier=name)
            raise InProgress(f"snapshot {name} failed; deleted it, a retry takes a new one")
        if status != "available":
            raise InProgress(f"snapshot {name} is {status} ({snapshot.get('PercentProgress', 0)}%)")
        data = {"recipe": recipe, "iops": state.iops, "tags": dict(seen.tags),
                "dbi_resource_id": state.dbi_resource_id, "created": state.created, "status": state.status}
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id, backup_id=name, data=data)

    def _is_original(self, db: dict[str, Any], backup: BackupRecord) -> bool:
        return not self._is_restored(db) and same_instance(db, backup.data.get("dbi_resource_id"), backup.data.get("created"))

    def _is_restored(self, db: dict[str, Any] | None) -> bool:
        return db is not None and tags_of(db.get("TagList")).get(RESTORED_FOR) == self.execution_id

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        rid = self.rec.resource_id
        db = describe_db(self.aws, rid)
        if db is None or (self._is_original(db, backup) and db["DBInstanceStatus"] == "deleting"):
            return StepResult(changed=False, message=f"DB instance {rid} already deleted")
        if not self._is_original(db, backup):
            raise Refused(f"{rid} now names a different DB instance than the one validated; not deleting it")
        if db.get("DeletionProtection"):
            raise Refused("deletion protection was enabled since validation")
        wait_if_transitional(db["DBInstanceStatus"], "will delete it once available or stopped")
        if db["DBInstanceStatus"] not in ("available", "stopped"):
            raise Refused(f"DB instance is {db['DBInstanceStatus']} since validation; re-validate")
        snapshot = self._snapshot(backup.backup_id)
        if snapshot is None or snapshot["Status"] != "available":
            raise Refused(f"backup snapshot {backup.backup_id} is missing or incomplete; not deleting")
        try:
            self.aws.delete_db_instance(DBInstanceIdentifier=rid, SkipFinalSnapshot=True,
                                        DeleteAutomatedBackups=True)
        except ClientError as exc:
            if client_error_code(exc) == "DBInstanceNotFound":
                return StepResult(changed=False, message=f"DB instance {rid} already deleted")
            raise
        return StepResult(changed=True, message=f"deleting {rid}; final snapshot {backup.backup_id}")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        db = describe_db(self.aws, self.rec.resource_id)
        if db is None or not self._is_original(db, backup):
            return StepResult(changed=False, message=f"DB instance {self.rec.resource_id} is gone")
        if db["DBInstanceStatus"] == "deleting":
            raise InProgress("DB instance is deleting")
        raise VerificationFailed(f"DB instance {self.rec.resource_id} still exists ({db['DBInstanceStatus']})")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        rid, fallback = self.rec.resource_id, restored_name(self.rec.resource_id)
        current = {name: describe_db(self.aws, name) for name in (rid, fallback)}
        for db in current.values():
            if db is not None and self._is_restored(db):
                return self._restored(db, created=False)
        original = current[rid]
        if original is not None and self._is_original(original, backup):
            if original["DBInstanceStatus"] == "deleting":
                raise InProgress("original DB instance is still deleting; will restore once it is gone")
            return StepResult(changed=False, message=f"original DB instance {rid} still exists")
        target = rid if original is None else fallback
        if current[target] is not None:
            raise RevertImpossible(f"both {rid} and {fallback} are taken by other DB instances")
        snapshot = self._snapshot(backup.backup_id)
        if snapshot is None or snapshot["Status"] != "available":
            raise RevertImpossible(f"backup snapshot {backup.backup_id} is missing or not available")
        restored = self.aws.restore_db_instance_from_db_snapshot(
            DBInstanceIdentifier=target, DBSnapshotIdentifier=backup.backup_id,
            Tags=restored_tags(backup.data.get("tags") or {}, self.execution_id, str(backup.backup_id)),
            **restore_args(backup.data["recipe"], backup.data.get("iops")))["DBInstance"]
        return self._restored(restored, created=True)

    def _restored(self, db: dict[str, Any], created: bool) -> StepResult:
        name, status = db["DBInstanceIdentifier"], db["DBInstanceStatus"]
        if status in _FAILED:
            raise RevertImpossible(f"restored DB instance {name} is {status}")
        if status != "available":
            raise InProgress(f"restored DB instance {name} is {status}")
        note = (f"restored as {name} from the final snapshot (same identifier, so the same endpoint)"
                if name == self.rec.resource_id else f"restored as {name} from the final snapshot "
                f"({self.rec.resource_id} was taken): clients must use the new endpoint")
        return StepResult(changed=created, message=note, data={"restored_instance_id": name, "note": note})

    def cleanup(self, backup: BackupRecord) -> StepResult:
        gone = StepResult(changed=False, message=f"snapshot {backup.backup_id} already gone")
        try:
            if self._snapshot(backup.backup_id) is None:
                return gone
            self.aws.delete_db_snapshot(DBSnapshotIdentifier=backup.backup_id)
        except ClientError as exc:
            if client_error_code(exc) == "DBSnapshotNotFound":
                return gone
            raise
        return StepResult(changed=True, message=f"deleted snapshot {backup.backup_id}")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        state, region = self.state(seen), self.rec.region
        compute = rds_monthly(region, state.instance_class, state.multi_az)
        if compute is None:
            return self.rec.estimated_monthly_savings
        gib = float(state.allocated_storage or 0)
        storage = flat("rds_storage_gb_month", region) * gib * (2 if state.multi_az else 1)
        return round(compute + storage - flat("rds_snapshot_gb_month", region) * gib, 2)
