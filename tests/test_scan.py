"""`reclaim scan` on a moto account seeded with planted waste, protected look-alikes and busy ones:
every planted resource found with evidence and savings, no protected or busy one recommended; saved
twice it changes nothing; a vanished one goes stale.

Moto stamps every resource with the moment it is made, so ages are judged on the scanner's clock,
set here four months ahead; CloudWatch data is put over the fourteen days before that clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from activities.actions.base import registry
from activities.aws import SessionFactory
from activities.sources.scanner import ScanRequest, scan
from domain.policy import Policy
from domain.scan import SCANNER, ScanReport, Thresholds
from store.repository import STALE, Store
from tests.conftest import ACCOUNT, REGION, AwsAccount

NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(days=120)
PROTECT = {"reclaim:protect": "true"}
PRODUCTION = {"env": "production"}
MIB = 1024**2


@dataclass
class Planted:
    """What the account holds: resource id -> the kind the scan must recommend; and what it must not."""

    waste: dict[str, str] = field(default_factory=dict)
    protected: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)
    no_data: set[str] = field(default_factory=set)


class Seeder:
    def __init__(self, aws: AwsAccount) -> None:
        self.aws = aws
        kw = {"region_name": REGION, "endpoint_url": aws.endpoint}
        self.ec2, self.cw = aws.ec2, boto3.client("cloudwatch", **kw)
        self.logs, self.s3 = boto3.client("logs", **kw), boto3.client("s3", **kw)
        self.ddb, self.rds = boto3.client("dynamodb", **kw), boto3.client("rds", **kw)

    def daily(self, namespace: str, dims: dict[str, str], values: dict[str, float]) -> None:
        """The same value every day of the look-back, for each metric named."""
        data = [{"MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                 "Timestamp": NOW - timedelta(days=day, hours=1), "Value": value}
                for name, value in values.items() for day in range(14)]
        for start in range(0, len(data), 500):
            self.cw.put_metric_data(Namespace=namespace, MetricData=data[start:start + 500])

    def instance(self, cpu: float | None, network_mib: float = 0.1, tags: dict[str, str] | None = None) -> str:
        instance_id = self.aws.instance("m5.large", tags=tags)
        if cpu is not None:
            self.daily("AWS/EC2", {"InstanceId": instance_id}, {
                "CPUUtilization": cpu, "NetworkIn": network_mib * MIB / 2, "NetworkOut": network_mib * MIB / 2})
        return instance_id

    def volume(self, volume_type: str = "gp2", tags: dict[str, str] | None = None, attach_to: str | None = None,
               device: str = "/dev/sdf") -> str:
        volume_id = self.aws.volume(size=100, volume_type=volume_type, tags=tags)
        if attach_to:
            self.ec2.attach_volume(VolumeId=volume_id, InstanceId=attach_to, Device=device)
        return volume_id

    def address(self, tags: dict[str, str] | None = None, associate: str | None = None) -> str:
        allocation = self.ec2.allocate_address(Domain="vpc")["AllocationId"]
        if tags:
            self.ec2.create_tags(Resources=[allocation], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        if associate:
            self.ec2.associate_address(AllocationId=allocation, InstanceId=associate)
        return str(allocation)

    def snapshot(self, tags: dict[str, str] | None = None) -> str:
        volume_id = self.aws.volume(size=8, volume_type="gp3")
        spec: dict[str, Any] = {"VolumeId": volume_id}
        if tags:
            spec["TagSpecifications"] = [{"ResourceType": "snapshot",
                                          "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        snapshot_id = str(self.ec2.create_snapshot(**spec)["SnapshotId"])
        self.ec2.delete_volume(VolumeId=volume_id)
        return snapshot_id

    def log_group(self, name: str, retention: int | None = None, tags: dict[str, str] | None = None) -> str:
        self.logs.create_log_group(logGroupName=name, **({"tags": tags} if tags else {}))
        if retention:
            self.logs.put_retention_policy(logGroupName=name, retentionInDays=retention)
        return name

    def bucket(self, name: str, lifecycle: bool = False, tags: dict[str, str] | None = None) -> str:
        self.s3.create_bucket(Bucket=name)
        self.daily("AWS/S3", {"BucketName": name, "StorageType": "StandardStorage"}, {"BucketSizeBytes": 500e9})
        if lifecycle:
            self.s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [
                {"ID": "old", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 365}}]})
        if tags:
            self.s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": k, "Value": v}
                                                                       for k, v in tags.items()]})
        return name

    def table(self, name: str, consumed_per_day: float | None, on_demand: bool = False,
              tags: dict[str, str] | None = None) -> str:
        spec: dict[str, Any] = {
            "TableName": name, "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}]}
        if on_demand:
            spec["BillingMode"] = "PAY_PER_REQUEST"
        else:
            spec |= {"BillingMode": "PROVISIONED",
                     "ProvisionedThroughput": {"ReadCapacityUnits": 100, "WriteCapacityUnits": 100}}
        if tags:
            spec["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        self.ddb.create_table(**spec)
        if consumed_per_day is not None:
            self.daily("AWS/DynamoDB", {"TableName": name}, {"ConsumedReadCapacityUnits": consumed_per_day,
                                                             "ConsumedWriteCapacityUnits": consumed_per_day})
        return name

    def database(self, name: str, connections: float, cpu: float, tags: dict[str, str] | None = None) -> str:
        self.rds.create_db_instance(
            DBInstanceIdentifier=name, DBInstanceClass="db.m5.large", Engine="mysql", AllocatedStorage=20,
            MasterUsername="admin", MasterUserPassword="password123",
            Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()])
        self.daily("AWS/RDS", {"DBInstanceIdentifier": name}, {"CPUUtilization": cpu, "DatabaseConnections": connections})
        return name


def seed(aws: AwsAccount) -> Planted:
    s, p = Seeder(aws), Planted()
    idle = s.instance(cpu=1.0)
    busy = s.instance(cpu=60.0, network_mib=900)
    p.waste[idle] = "ec2.stop"
    p.protected |= {s.instance(cpu=1.0, tags=PROTECT), s.instance(cpu=0.5, tags=PRODUCTION)}
    p.busy |= {busy, s.instance(cpu=2.0, network_mib=400)}  # idle CPU, busy network
    p.no_data.add(s.instance(cpu=None))
    for reservation in aws.ec2.describe_instances()["Reservations"]:  # every root volume is an attached gp2
        for instance in reservation["Instances"]:
            for mapping in instance.get("BlockDeviceMappings", []):
                p.waste[mapping["Ebs"]["VolumeId"]] = "ebs.gp2_to_gp3"

    p.waste[s.volume("gp3")] = "ebs.delete"  # unattached (four months old on the scan's clock)
    p.waste[s.volume("gp2", attach_to=busy)] = "ebs.gp2_to_gp3"
    p.protected |= {s.volume("gp3", tags=PROTECT), s.volume("gp2", tags=PRODUCTION, attach_to=busy, device="/dev/sdg")}
    p.busy.add(s.volume("gp3", attach_to=busy, device="/dev/sdh"))

    p.waste[s.address()] = "eip.release"
    p.protected.add(s.address(tags=PROTECT))
    p.busy.add(s.address(associate=busy))

    p.waste[s.snapshot()] = "ebs.snapshot_delete"
    p.protected.add(s.snapshot(tags=PROTECT))
    p.busy.add(s.snapshot(tags={"reclaim:execution-id": "exec-1"}))  # Reclaim's own backup
    source = s.snapshot()
    aws.ec2.register_image(Name="golden-image", RootDeviceName="/dev/sda1", BlockDeviceMappings=[
        {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": source}}])
    aws.ec2.delete_snapshot(SnapshotId=source)  # moto gives the image a snapshot of its own
    p.busy |= {m["Ebs"]["SnapshotId"] for i in aws.ec2.describe_images(Owners=["self"])["Images"]
               for m in i["BlockDeviceMappings"]}  # the AMI's own snapshot

    p.waste[s.log_group("/app/never-expires")] = "logs.retention"
    p.protected.add(s.log_group("/app/audit", tags=PROTECT))
    p.busy.add(s.log_group("/app/kept-30-days", retention=30))

    p.waste[s.bucket("planted-no-lifecycle")] = "s3.lifecycle"
    p.protected.add(s.bucket("planted-protected", tags=PROTECT))
    p.busy.add(s.bucket("planted-with-lifecycle", lifecycle=True))

    p.waste[s.table("planted-idle-table", consumed_per_day=1000)] = "dynamodb.billing_mode"
    p.protected.add(s.table("planted-protected-table", consumed_per_day=10, tags=PROTECT))
    p.busy |= {s.table("planted-busy-table", consumed_per_day=6e6), s.table("planted-on-demand", None, on_demand=True)}

    p.waste[s.database("planted-idle-db", connections=0, cpu=3)] = "rds.stop"
    p.busy.add(s.database("planted-busy-db", connections=40, cpu=70))
    return p


@pytest.fixture
def planted(aws: AwsAccount) -> Planted:
    return seed(aws)


def run_scan(sessions: SessionFactory, **thresholds: Any) -> ScanReport:
    request = ScanRequest(customer_id="acme", regions=[REGION], thresholds=Thresholds(**thresholds))
    return scan(sessions, request, Policy(), list(registry()), now=NOW)


def test_scan_finds_every_planted_resource_and_no_protected_or_busy_one(planted: Planted,
                                                                         sessions: SessionFactory) -> None:
    result = run_scan(sessions)
    found = {r.resource_id: r for r in result.report.recommendations}
    assert {rid: r.kind for rid, r in found.items()} == planted.waste
    assert {p.resource_id for p in result.protected} == planted.protected
    assert not set(found) & (planted.protected | planted.busy | planted.no_data)
    assert result.report.not_executable == [] and result.complete and result.accounts == [ACCOUNT]
    assert [(p.resource_type, p.count) for p in result.passed_over] == [("Ec2Instance", 1)]
    assert {(c.resource_type, c.protection): c.count for c in result.protected_counts}[("Ec2Instance", "production")] == 1

    for rec in found.values():
        assert rec.source == SCANNER and rec.account_id == ACCOUNT and rec.region == REGION
        assert rec.source_details["evidence"] and rec.source_details["finding"]
        assert rec.source_id == f"{ACCOUNT}/{REGION}/{rec.kind}/{rec.resource_id}"
        if rec.kind != "logs.retention":  # moto keeps no log bytes: nothing to save by expiring them
            assert rec.estimated_monthly_savings > 0, rec

    by_kind = {r.kind: r for r in found.values() if r.kind != "ebs.gp2_to_gp3"}
    idle = by_kind["ec2.stop"].source_details["evidence"]
    assert idle["cpu_daily_average_percent"] == {"days": 14, "mean": 1.0, "max": 1.0}
    assert idle["network_mib_per_day"]["max"] == pytest.approx(0.1)
    assert by_kind["ec2.stop"].estimated_monthly_savings == pytest.approx(0.096 * 730)
    assert by_kind["ebs.delete"].source_details["evidence"]["age_days"] in (119, 120)  # made after NOW was set
    assert by_kind["ebs.delete"].params == {"expected_size_gib": 100, "expected_volume_type": "gp3"}
    assert by_kind["ebs.snapshot_delete"].source_details["evidence"]["age_days"] in (119, 120)
    assert by_kind["eip.release"].estimated_monthly_savings == pytest.approx(3.65)
    assert by_kind["s3.lifecycle"].params["expected_bytes"] == 500_000_000_000
    assert by_kind["dynamodb.billing_mode"].params["target_mode"] == "PAY_PER_REQUEST"
    assert by_kind["rds.stop"].source_details["evidence"]["connections_daily_max"]["max"] == 0

    # Thresholds decide: stricter CPU, and volumes and snapshots too young for them, are left alone.
    strict = run_scan(sessions, cpu_idle_percent=0.5, volume_min_age_days=200, snapshot_min_age_days=200)
    kinds = {r.kind for r in strict.report.recommendations}
    assert "ec2.stop" not in kinds and "ebs.delete" not in kinds and "ebs.snapshot_delete" not in kinds
    assert "eip.release" in kinds


def reclaim(*args: str, env: dict[str, str] | None = None) -> Any:
    from starter.cli import app

    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, sessions: SessionFactory, tmp_path: Path) -> Iterator[dict[str, str]]:
    import starter.scan_cli as scan_cli

    monkeypatch.setattr(scan_cli, "session_factory", lambda settings: sessions)
    monkeypatch.setattr(scan_cli, "clock", lambda: NOW)
    yield {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'reclaim.db'}", "RECLAIM_API_URL": "",
           "RECLAIM_API_TOKEN": "", "RECLAIM_ROLE_ARN_TEMPLATE": ""}


def stored(env: dict[str, str], **filters: Any) -> list[Any]:
    async def go() -> list[Any]:
        store = await Store.open(env["DATABASE_URL"])
        try:
            return await store.list_recommendations(**filters, limit=1000)
        finally:
            await store.close()

    return asyncio.run(go())


def test_scan_save_twice_changes_nothing_and_a_vanished_one_goes_stale(planted: Planted, cli: dict[str, str],
                                                                      aws: AwsAccount) -> None:
    first = reclaim("scan", "--region", REGION, "--customer", "acme", "--save", "--json", env=cli)
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    assert data["counts"]["new"] == len(planted.waste) and data["counts"]["stale"] == 0
    assert data["counts"]["unsupported"] == {} and data["counts"]["invalid"] == {}
    assert len(data["protected"]) == len(planted.protected)
    before = {s.recommendation.id: (s.updated_at, s.recommendation) for s in stored(cli)}

    again = reclaim("scan", "--regions", REGION, "--customer", "acme", "--save", "--lookback-days", "14", env=cli)
    assert again.exit_code == 0, again.output
    assert f"saved: 0 new, 0 updated, {len(planted.waste)} unchanged, 0 newly stale" in again.output
    assert {s.recommendation.id: (s.updated_at, s.recommendation) for s in stored(cli)} == before

    [address] = [rid for rid, kind in planted.waste.items() if kind == "eip.release"]
    aws.ec2.release_address(AllocationId=address)
    gone = reclaim("scan", "--region", REGION, "--customer", "acme", "--save", "--json", env=cli)
    assert json.loads(gone.output)["counts"]["stale"] == 1
    [stale] = stored(cli, status=STALE)
    assert stale.recommendation.resource_id == address and stale.stale_at is not None
    assert len(stored(cli)) == len(planted.waste)  # in place: nothing duplicated, nothing dropped

    listed = reclaim("recommendations", "list", "--source", SCANNER, "--status", "stale", env=cli)
    assert listed.exit_code == 0 and address in listed.output and "STALE" in listed.output
    as_json = json.loads(reclaim("recommendations", "list", "--source", SCANNER, "--json", env=cli).output)
    assert len(as_json) == len(planted.waste)
    assert reclaim("recommendations", "list", "--status", "nonsense", env=cli).exit_code == 1


def test_scan_prints_findings_with_evidence(planted: Planted, cli: dict[str, str]) -> None:
    result = reclaim("scan", "--region", REGION, "--threshold", "cpu_idle_percent=2", env=cli)
    assert result.exit_code == 0, result.output
    for words in ("idle instance", "unattached volume", "protected: reported, not recommended", "passed over",
                  "not saved; --save keeps them", "$70.08"):
        assert words in result.output
    bad = reclaim("scan", "--region", REGION, "--threshold", "cpu=2", env=cli)
    assert bad.exit_code == 1 and "expected NAME=VALUE" in bad.output
