"""The rds.* kinds against moto in-process: converge, find-or-create, refuse, revert.

moto makes every RDS transition instantaneous (no modifying/stopping/starting/creating/
deleting is ever observed) and ignores ApplyImmediately=False (the class changes at once,
PendingModifiedValues stays empty). The single test of the pending-class branch therefore
answers describe_db_instances with botocore's Stubber in the shape AWS documents; everything
else runs against moto.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from activities.actions.base import BACKUP_TAG, Action, action_class
from activities.aws import SessionFactory
from activities.errors import Refused, VerificationFailed
from domain.pricing import flat, rds_monthly
from tests.kinds_support import ACCOUNT, REGION, build_action, converge, moto_account, tag_dict, tag_list

EXEC = "exec-rds-1"
DB = "orders-db"
DB_TAGS = {"Name": "orders", "team": "data"}
#: What AWS receives for one database's describe: the worker's gateway asks by filter, so that
#: other executions' describes can share the call (activities/gateway).
AS_SENT = {"Filters": [{"Name": "db-instance-id", "Values": [DB]}]}


@dataclass
class Aws:
    rds: Any
    ec2: Any
    sg: str


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    with moto_account(monkeypatch):  # no default AMIs: the VPC below would load thousands otherwise
        rds, ec2 = boto3.client("rds", region_name=REGION), boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}")
                   ["Subnet"]["SubnetId"] for i, az in ((1, "a"), (2, "b"))]
        sg = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
        rds.create_db_subnet_group(DBSubnetGroupName="db-subnets", DBSubnetGroupDescription="db", SubnetIds=subnets)
        rds.create_db_parameter_group(DBParameterGroupName="pg16", DBParameterGroupFamily="postgres16",
                                      Description="tuned")
        yield Aws(rds, ec2, sg)


@pytest.fixture
def factory(aws: Aws) -> SessionFactory:
    return SessionFactory()


def create_db(aws: Aws, ident: str = DB, cls: str = "db.m5.large", **spec: Any) -> str:
    spec = {"Engine": "postgres", "EngineVersion": "16.3", "AllocatedStorage": 100, "StorageType": "gp3",
            "MasterUsername": "admin", "MasterUserPassword": "correct-horse-battery", "Port": 5433,
            "DBSubnetGroupName": "db-subnets", "VpcSecurityGroupIds": [aws.sg], "DBParameterGroupName": "pg16",
            "PubliclyAccessible": False, "Tags": tag_list(DB_TAGS), **spec}
    aws.rds.create_db_instance(DBInstanceIdentifier=ident, DBInstanceClass=cls, **spec)
    return ident


def action(factory: SessionFactory, kind: str, params: dict[str, Any], resource_id: str = DB,
           execution_id: str = EXEC) -> Action[Any]:
    """build_action, params first: most tests act on DB."""
    return build_action(factory, kind, resource_id, params, execution_id=execution_id)


def describe(aws: Aws, ident: str = DB) -> dict[str, Any]:
    return dict(aws.rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0])


def shape(db: dict[str, Any]) -> dict[str, Any]:
    """The fields a change or a restore must (or must not) touch, as describe_db_instances shows them."""
    return {"class": db["DBInstanceClass"], "status": db["DBInstanceStatus"], "multi_az": db["MultiAZ"],
            "storage": (db["AllocatedStorage"], db["StorageType"]), "engine": (db["Engine"], db["EngineVersion"]),
            "port": db["Endpoint"]["Port"], "public": db["PubliclyAccessible"],
            "subnet_group": db["DBSubnetGroup"]["DBSubnetGroupName"],
            "security_groups": [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]],
            "parameter_group": db["DBParameterGroups"][0]["DBParameterGroupName"],
            "deletion_protection": db["DeletionProtection"], "tags": tag_dict(db.get("TagList"))}


def manual_snapshots(aws: Aws) -> list[dict[str, Any]]:
    return list(aws.rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"])


def snapshots_of(aws: Aws, execution_id: str = EXEC) -> list[str]:
    """RDS cannot filter snapshots by tag: count them by their TagList."""
    return [s["DBSnapshotIdentifier"] for s in manual_snapshots(aws)
            if tag_dict(s.get("TagList")).get(BACKUP_TAG) == execution_id]


def world(aws: Aws) -> dict[str, Any]:
    """Everything the kinds could change."""
    dbs = sorted((d["DBInstanceIdentifier"], d["DBInstanceClass"], d["DBInstanceStatus"], d["MultiAZ"],
                  d["AllocatedStorage"], tuple(sorted(tag_dict(d.get("TagList")).items())))
                 for d in aws.rds.describe_db_instances()["DBInstances"])
    return {"instances": dbs, "snapshots": sorted(s["DBSnapshotIdentifier"] for s in manual_snapshots(aws))}


def record_calls(aws_client: Any) -> list[str]:
    """The RDS operations a client makes from now on (observed, not faked)."""
    calls: list[str] = []
    aws_client.meta.events.register("before-call.rds.*", lambda model, **_: calls.append(model.name))
    return calls


def rds_client(factory: SessionFactory) -> Any:
    return factory.client(ACCOUNT, REGION, "rds")  # the same cached client the kinds use


# ---- the contract, for every rds kind -------------------------------------------------

@dataclass(frozen=True)
class Case:
    kind: str
    params: dict[str, Any]
    checked: list[str]
    unverified: list[str]


CASES = [
    Case("rds.rightsize", {"expected_instance_class": "db.m5.large", "target_instance_class": "db.t3.large"},
         ["rds:DescribeDBInstances"], ["rds:ModifyDBInstance"]),
    Case("rds.stop", {"expected_instance_class": "db.m5.large"},
         ["rds:DescribeDBInstances"], ["rds:StopDBInstance", "rds:StartDBInstance"]),
    Case("rds.delete", {"expected_instance_class": "db.m5.large"},
         ["rds:DescribeDBInstances", "rds:DescribeDBSnapshots"],
         ["rds:CreateDBSnapshot", "rds:AddTagsToResource", "rds:DeleteDBInstance",
          "rds:RestoreDBInstanceFromDBSnapshot", "rds:DeleteDBSnapshot"]),
]
each_kind = pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])


@each_kind
def test_drift_is_refused(case: Case, aws: Aws, factory: SessionFactory) -> None:
    kind = action(factory, case.kind, case.params, create_db(aws))
    assert kind.refusal(kind.inspect()) is None
    aws.rds.modify_db_instance(DBInstanceIdentifier=DB, DBInstanceClass="db.r5.large", ApplyImmediately=True)
    reason = kind.refusal(kind.inspect())
    assert reason is not None and reason.startswith("drift:") and "db.r5.large" in reason


@each_kind
def test_missing_instance_is_refused(case: Case, factory: SessionFactory) -> None:
    with pytest.raises(Refused, match="nope-db"):
        action(factory, case.kind, case.params, "nope-db").inspect()


@each_kind
def test_backup_and_apply_twice_change_once(case: Case, aws: Aws, factory: SessionFactory) -> None:
    kind = action(factory, case.kind, case.params, create_db(aws))
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    before = world(aws)
    assert converge(kind.backup, seen) == backup
    assert world(aws) == before
    calls = record_calls(rds_client(factory))
    assert converge(kind.apply, seen, backup).changed
    applied = world(aws)
    assert applied != before
    assert not converge(kind.apply, seen, backup).changed
    assert world(aws) == applied
    mutating = [c for c in calls if not c.startswith("Describe")]
    assert len(mutating) == 1, mutating


@each_kind
def test_check_permissions_changes_nothing(case: Case, aws: Aws, factory: SessionFactory) -> None:
    kind = action(factory, case.kind, case.params, create_db(aws))
    seen = kind.inspect()
    before = world(aws)
    calls = record_calls(rds_client(factory))
    labels = kind.check_permissions(seen)
    assert labels == case.checked
    assert calls == [label.split(":")[1] for label in labels]  # only the reads it names, nothing else
    assert kind.unverified_permissions() == case.unverified
    assert set(labels) | set(case.unverified) <= set(kind.permissions)
    assert world(aws) == before


@each_kind
def test_revert_is_idempotent(case: Case, aws: Aws, factory: SessionFactory) -> None:
    kind = action(factory, case.kind, case.params, create_db(aws))
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    converge(kind.apply, seen, backup)
    converge(kind.verify, seen, backup)
    first = converge(kind.revert, seen, backup)
    assert first.changed
    after = world(aws)
    second = converge(kind.revert, seen, backup)
    assert not second.changed
    assert second.data == first.data
    assert world(aws) == after


@each_kind
def test_aurora_members_are_refused(case: Case, aws: Aws, factory: SessionFactory) -> None:
    aws.rds.create_db_cluster(DBClusterIdentifier="orders-cluster", Engine="aurora-postgresql",
                              MasterUsername="admin", MasterUserPassword="correct-horse-battery")
    aws.rds.create_db_instance(DBInstanceIdentifier=DB, DBClusterIdentifier="orders-cluster",
                               Engine="aurora-postgresql", DBInstanceClass="db.m5.large")
    kind = action(factory, case.kind, case.params)
    assert "Aurora cluster orders-cluster" in str(kind.refusal(kind.inspect()))


@each_kind
def test_read_replicas_are_refused(case: Case, aws: Aws, factory: SessionFactory) -> None:
    create_db(aws)
    aws.rds.create_db_instance_read_replica(DBInstanceIdentifier="orders-replica", SourceDBInstanceIdentifier=DB)
    source = action(factory, case.kind, case.params)
    assert "read replicas (orders-replica)" in str(source.refusal(source.inspect()))
    replica = action(factory, case.kind, case.params, "orders-replica")
    assert f"read replica of {DB}" in str(replica.refusal(replica.inspect()))


# ---- rds.rightsize ----------------------------------------------------------------------

RIGHTSIZE = {"expected_instance_class": "db.m5.xlarge", "target_instance_class": "db.m5.large"}


def test_rightsize_happy_path(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws, cls="db.m5.xlarge", MultiAZ=True)
    original = shape(describe(aws))
    kind = action(factory, "rds.rightsize", RIGHTSIZE)
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    assert kind.plan(seen) == [f"change {DB} from db.m5.xlarge to db.m5.large now "
                               "(the instance restarts; Multi-AZ fails over first)"]
    backup = converge(kind.backup, seen)
    assert backup.data == {"instance_class": "db.m5.xlarge", "multi_az": True}
    assert converge(kind.apply, seen, backup).changed
    assert converge(kind.verify, seen, backup).message == "DB instance is db.m5.large and available"
    assert shape(describe(aws)) == {**original, "class": "db.m5.large"}
    assert converge(kind.revert, seen, backup).changed
    assert shape(describe(aws)) == original


def test_rightsize_in_the_maintenance_window(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws, cls="db.m5.xlarge")
    kind = action(factory, "rds.rightsize", {**RIGHTSIZE, "apply_immediately": False})
    seen = kind.inspect()
    assert "in the next maintenance window" in kind.plan(seen)[0]
    sent: list[dict[str, Any]] = []
    rds_client(factory).meta.events.register(
        "provide-client-params.rds.ModifyDBInstance", lambda params, **_: sent.append(dict(params)))
    backup = converge(kind.backup, seen)
    result = converge(kind.apply, seen, backup)
    assert result.changed and "next maintenance window" in result.message
    assert sent == [{"DBInstanceIdentifier": DB, "DBInstanceClass": "db.m5.large", "ApplyImmediately": False}]
    # moto ignores ApplyImmediately=False and changes the class at once: verify sees it done.
    converge(kind.verify, seen, backup)
    assert describe(aws)["DBInstanceClass"] == "db.m5.large"


def _aws_db(cls: str, pending: str | None) -> dict[str, Any]:
    db: dict[str, Any] = {"DBInstanceIdentifier": DB, "DBInstanceClass": cls, "DBInstanceStatus": "available",
                          "PreferredMaintenanceWindow": "sun:03:00-sun:03:30", "PendingModifiedValues": {}}
    if pending:
        db["PendingModifiedValues"] = {"DBInstanceClass": pending}
    return {"DBInstances": [db]}


def test_rightsize_pending_class_counts_as_done(aws: Aws, factory: SessionFactory) -> None:
    """AWS's answer after ApplyImmediately=False (moto cannot produce it): stubbed, shape-checked."""
    create_db(aws, cls="db.m5.xlarge")
    kind = action(factory, "rds.rightsize", {**RIGHTSIZE, "apply_immediately": False})
    seen = kind.inspect()
    backup = kind.backup(seen)
    with Stubber(rds_client(factory)) as stub:
        for _ in range(2):
            stub.add_response("describe_db_instances", _aws_db("db.m5.xlarge", "db.m5.large"), AS_SENT)
        assert not kind.apply(seen, backup).changed  # already scheduled: no second modify
        message = kind.verify(seen, backup).message
        stub.assert_no_pending_responses()
    assert "pending" in message and "next maintenance window (sun:03:00-sun:03:30)" in message
    assert "still db.m5.xlarge" in message
    immediate = action(factory, "rds.rightsize", RIGHTSIZE)
    with Stubber(rds_client(factory)) as stub:
        stub.add_response("describe_db_instances", _aws_db("db.m5.xlarge", "db.m5.large"), AS_SENT)
        with pytest.raises(VerificationFailed, match=r"expected db\.m5\.large and available"):
            immediate.verify(seen, backup)  # applying now: a pending class is not done


def test_rightsize_params_must_differ(factory: SessionFactory) -> None:
    with pytest.raises(Refused, match="must differ"):
        action(factory, "rds.rightsize", {"expected_instance_class": "db.m5.large",
                                          "target_instance_class": "db.m5.large"})


def test_rightsize_refuses_a_stopped_instance(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws, cls="db.m5.xlarge")
    aws.rds.stop_db_instance(DBInstanceIdentifier=DB)
    kind = action(factory, "rds.rightsize", RIGHTSIZE)
    assert kind.refusal(kind.inspect()) == "DB instance is stopped, not available"


def test_rightsize_savings_are_multi_az_aware(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws, cls="db.m5.xlarge", MultiAZ=True)
    kind = action(factory, "rds.rightsize", RIGHTSIZE)
    expected = 2 * (0.342 - 0.171) * 730
    assert kind.estimate_monthly_savings(kind.inspect()) == pytest.approx(expected, abs=0.01)


# ---- rds.stop ---------------------------------------------------------------------------

AUTO_START = "AWS starts a stopped DB instance again automatically after 7 days"


def test_stop_happy_path(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws)
    original = shape(describe(aws))
    kind = action(factory, "rds.stop", {})
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    backup = converge(kind.backup, seen)
    applied = converge(kind.apply, seen, backup)
    assert applied.changed and AUTO_START in applied.message
    assert AUTO_START in converge(kind.verify, seen, backup).message
    assert shape(describe(aws)) == {**original, "status": "stopped"}
    assert AUTO_START in converge(kind.apply, seen, backup).message  # the no-change answer says it too
    assert converge(kind.revert, seen, backup).changed
    assert shape(describe(aws)) == original


def test_stop_refuses_multi_az_sql_server(aws: Aws, factory: SessionFactory) -> None:
    aws.rds.create_db_instance(DBInstanceIdentifier=DB, DBInstanceClass="db.m5.large", Engine="sqlserver-se",
                               AllocatedStorage=100, MasterUsername="admin", MultiAZ=True,
                               MasterUserPassword="correct-horse-battery", LicenseModel="license-included")
    kind = action(factory, "rds.stop", {})
    assert kind.refusal(kind.inspect()) == "AWS cannot stop a Multi-AZ SQL Server DB instance"


def test_stop_refuses_an_instance_that_is_not_available(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws)
    aws.rds.stop_db_instance(DBInstanceIdentifier=DB)
    kind = action(factory, "rds.stop", {})
    assert kind.refusal(kind.inspect()) == "DB instance is stopped, not available"


def test_stop_savings_are_compute_only(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws, cls="db.t3.large", MultiAZ=True)
    kind = action(factory, "rds.stop", {})
    assert kind.estimate_monthly_savings(kind.inspect()) == pytest.approx(rds_monthly(REGION, "db.t3.large", True))
    assert "storage" in (type(kind).__doc__ or "")


# ---- rds.delete -------------------------------------------------------------------------

SNAPSHOT = "reclaim-exec-rds-1"


@pytest.mark.parametrize("state", ["available", "stopped"])
def test_delete_happy_path(state: str, aws: Aws, factory: SessionFactory) -> None:
    create_db(aws, MultiAZ=True)
    if state == "stopped":
        aws.rds.stop_db_instance(DBInstanceIdentifier=DB)
    original = shape(describe(aws))
    kind = action(factory, "rds.delete", {"expected_instance_class": "db.m5.large"})
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    backup = converge(kind.backup, seen)
    assert backup.backup_id == SNAPSHOT
    snapshot = aws.rds.describe_db_snapshots(DBSnapshotIdentifier=SNAPSHOT)["DBSnapshots"][0]
    assert snapshot["DBInstanceIdentifier"] == DB and snapshot["SnapshotType"] == "manual"
    assert tag_dict(snapshot["TagList"]) == {
        BACKUP_TAG: EXEC, "reclaim:resource-id": DB, "reclaim:kind": "rds.delete",
        "reclaim:recipe:instance-class": "db.m5.large", "reclaim:recipe:subnet-group": "db-subnets",
        "reclaim:recipe:vpc-security-group-ids": aws.sg, "reclaim:recipe:parameter-group": "pg16",
        "reclaim:recipe:multi-az": "true", "reclaim:recipe:storage-type": "gp3",
        "reclaim:recipe:allocated-storage": "100", "reclaim:recipe:engine": "postgres",
        "reclaim:recipe:engine-version": "16.3", "reclaim:recipe:port": "5433",
        "reclaim:recipe:publicly-accessible": "false"}

    assert converge(kind.apply, seen, backup).changed
    assert converge(kind.verify, seen, backup).message == f"DB instance {DB} is gone"
    assert not [d for d in aws.rds.describe_db_instances()["DBInstances"] if d["DBInstanceIdentifier"] == DB]

    result = converge(kind.revert, seen, backup)
    assert result.data["restored_instance_id"] == DB
    assert "same endpoint" in result.data["note"]
    restored = shape(describe(aws))
    assert restored == {**original, "status": "available",
                        "tags": {**DB_TAGS, "reclaim:restored-for": EXEC, "reclaim:restored-from-snapshot": SNAPSHOT}}

    assert kind.cleanup(backup).changed
    assert snapshots_of(aws) == []
    assert not kind.cleanup(backup).changed


def test_delete_refuses_deletion_protection(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws, DeletionProtection=True)
    kind = action(factory, "rds.delete", {})
    assert kind.refusal(kind.inspect()) == "deletion protection is enabled on this DB instance"


def test_delete_backup_is_found_not_recreated(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws)
    kind = action(factory, "rds.delete", {})
    seen = kind.inspect()
    first, second = converge(kind.backup, seen), converge(kind.backup, seen)
    assert first == second
    assert snapshots_of(aws) == [SNAPSHOT]
    other = action(factory, "rds.delete", {}, execution_id="exec-rds-2")
    assert converge(other.backup, seen).backup_id == "reclaim-exec-rds-2"
    assert snapshots_of(aws) == [SNAPSHOT] and snapshots_of(aws, "exec-rds-2") == ["reclaim-exec-rds-2"]


def test_delete_never_adopts_a_snapshot_it_did_not_take(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws)
    aws.rds.create_db_snapshot(DBInstanceIdentifier=DB, DBSnapshotIdentifier=SNAPSHOT)
    kind = action(factory, "rds.delete", {})
    with pytest.raises(Refused, match="not taken by execution"):
        kind.backup(kind.inspect())


def test_delete_needs_its_snapshot(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws)
    kind = action(factory, "rds.delete", {})
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    aws.rds.delete_db_snapshot(DBSnapshotIdentifier=SNAPSHOT)
    with pytest.raises(Refused, match="missing"):
        kind.apply(seen, backup)
    assert describe(aws)["DBInstanceStatus"] == "available"


def test_delete_revert_restores_once(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws)
    kind = action(factory, "rds.delete", {})
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    assert not converge(kind.revert, seen, backup).changed  # nothing deleted yet: nothing to restore
    converge(kind.apply, seen, backup)
    assert converge(kind.revert, seen, backup).changed
    assert not converge(kind.revert, seen, backup).changed
    mine = [d for d in aws.rds.describe_db_instances()["DBInstances"]
            if tag_dict(d.get("TagList")).get("reclaim:restored-for") == EXEC]
    assert [d["DBInstanceIdentifier"] for d in mine] == [DB]


def test_delete_revert_uses_another_identifier_when_taken(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws)
    kind = action(factory, "rds.delete", {})
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    converge(kind.apply, seen, backup)
    create_db(aws, Tags=[{"Key": "Name", "Value": "someone else's"}])  # the identifier was reused meanwhile
    result = converge(kind.revert, seen, backup)
    assert result.data["restored_instance_id"] == f"{DB}-restored"
    assert "clients must use the new endpoint" in result.data["note"]
    assert converge(kind.revert, seen, backup).data == result.data
    assert tag_dict(describe(aws)["TagList"]) == {"Name": "someone else's"}  # left alone
    assert describe(aws, f"{DB}-restored")["DBInstanceClass"] == "db.m5.large"
    with pytest.raises(Refused, match="different DB instance"):
        kind.apply(seen, backup)  # never deletes the newcomer


def test_delete_savings(aws: Aws, factory: SessionFactory) -> None:
    create_db(aws, cls="db.t3.medium", MultiAZ=True)
    kind = action(factory, "rds.delete", {})
    storage = 2 * flat("rds_storage_gb_month", REGION) * 100 - flat("rds_snapshot_gb_month", REGION) * 100
    expected = (rds_monthly(REGION, "db.t3.medium", True) or 0) + storage
    assert kind.estimate_monthly_savings(kind.inspect()) == pytest.approx(expected, abs=0.01)


def test_snapshot_names_are_valid_rds_identifiers() -> None:
    helpers = sys.modules[action_class("rds.delete").__module__].snapshot_name
    assert helpers("exec-rec-1") == "reclaim-exec-rec-1"
    assert helpers("Exec_Rec..42--") == "reclaim-exec-rec-42"
    assert len(helpers("x" * 400)) == 255
