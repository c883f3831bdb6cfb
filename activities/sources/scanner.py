"""Reclaim's own scanner (`reclaim scan`): describes each account and region, paged, into the
observations of `domain.scan`, which judges them against the thresholds and a clock.

Clients come from the `SessionFactory` (the gateway seam, a role per account with
`RECLAIM_ROLE_ARN_TEMPLATE`), as for the other sources and the actions. One collector per
resource type; a collector AWS refuses (access denied on one service, say) is reported as passed
over with the error code, never silently dropped, and the rest of the scan goes on. CloudWatch
series are read with GetMetricData, 500 queries a call, one value per day of the look-back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field

from activities.aws import SessionFactory
from activities.errors import client_error_code
from activities.sources import OWN_ACCOUNT, SourceError
from domain.base import StrictModel
from domain.policy import Policy
from domain.scan import (
    AddressSeen,
    BucketSeen,
    Daily,
    DbSeen,
    InstanceSeen,
    Judgement,
    LogGroupSeen,
    NoData,
    ScanReport,
    Seen,
    SnapshotSeen,
    TableSeen,
    Thresholds,
    VolumeSeen,
    judge_address,
    judge_bucket,
    judge_db,
    judge_instance,
    judge_log_group,
    judge_snapshot,
    judge_table,
    judge_volume,
    scan_report,
)
from domain.sources import ImportContext

DAY = 86400
METRIC_QUERIES_PER_CALL = 500


class ScanRequest(StrictModel):
    customer_id: str
    account_ids: list[str] = Field(default_factory=list, description="Empty: the credentials' own account.")
    regions: list[str] = Field(min_length=1)
    thresholds: Thresholds = Field(default_factory=Thresholds)


@dataclass
class Where:
    """One account and region being scanned: its clients, the clock, and what it was asked."""

    sessions: SessionFactory
    key: str
    account_id: str
    region: str
    thresholds: Thresholds
    now: datetime
    buckets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return self.sessions.client(self.key, self.region, service)

    @property
    def window(self) -> tuple[datetime, datetime]:
        return self.now - timedelta(days=self.thresholds.lookback_days), self.now


def tags_of(items: Any) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in items or [] if isinstance(t, dict) and "Key" in t}


def paged(client: Any, operation: str, list_key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a list operation, through its boto3 paginator."""
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get(list_key) or []


@dataclass(frozen=True)
class Metric:
    """One CloudWatch series to read, one value per day (`stat` over each day)."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]
    stat: str


def daily_series(where: Where, metrics: list[Metric]) -> list[Daily]:
    """Each metric's daily values over the look-back, in the order asked (GetMetricData, paged)."""
    if not metrics:
        return []
    cw = where.client("cloudwatch")
    start, end = where.window
    found: dict[str, list[float]] = {}
    for offset in range(0, len(metrics), METRIC_QUERIES_PER_CALL):
        queries = [{
            "Id": f"m{offset + n}", "ReturnData": True,
            "MetricStat": {"Metric": {"Namespace": m.namespace, "MetricName": m.name,
                                      "Dimensions": [{"Name": k, "Value": v} for k, v in m.dimensions]},
                           "Period": DAY, "Stat": m.stat},
        } for n, m in enumerate(metrics[offset:offset + METRIC_QUERIES_PER_CALL])]
        for result in paged(cw, "get_metric_data", "MetricDataResults", MetricDataQueries=queries,
                            StartTime=start, EndTime=end):
            found.setdefault(result["Id"], []).extend(float(v) for v in result.get("Values") or [])
    return [Daily(values=found.get(f"m{n}", [])) for n in range(len(metrics))]


# ---- collectors, one per resource type ----------------------------------------------------------


def volumes(where: Where) -> list[Seen]:
    return [VolumeSeen(
        resource_id=v["VolumeId"], tags=tags_of(v.get("Tags")), volume_type=v["VolumeType"], size_gib=int(v["Size"]),
        iops=int(v.get("Iops") or 0), throughput=int(v.get("Throughput") or 0),
        attached=bool(v.get("Attachments")) or v.get("State") == "in-use", created_at=_aware(v["CreateTime"]),
    ) for v in paged(where.client("ec2"), "describe_volumes", "Volumes")]


def addresses(where: Where) -> list[Seen]:
    found = where.client("ec2").describe_addresses().get("Addresses") or []  # not paged by AWS
    return [AddressSeen(
        resource_id=a["AllocationId"], tags=tags_of(a.get("Tags")), public_ip=a.get("PublicIp"),
        associated=bool(a.get("AssociationId") or a.get("InstanceId") or a.get("NetworkInterfaceId")),
    ) for a in found if a.get("AllocationId")]


def instances(where: Where) -> list[Seen]:
    running = [i for r in paged(where.client("ec2"), "describe_instances", "Reservations",
                                Filters=[{"Name": "instance-state-name", "Values": ["running"]}])
               for i in r.get("Instances") or []]
    metrics = [Metric("AWS/EC2", name, (("InstanceId", i["InstanceId"]),), stat)
               for i in running for name, stat in (("CPUUtilization", "Average"), ("NetworkIn", "Sum"),
                                                   ("NetworkOut", "Sum"))]
    series = daily_series(where, metrics)
    return [InstanceSeen(
        resource_id=i["InstanceId"], tags=tags_of(i.get("Tags")), instance_type=i["InstanceType"], running=True,
        cpu=series[3 * n], network_in=series[3 * n + 1], network_out=series[3 * n + 2],
    ) for n, i in enumerate(running)]


def databases(where: Where) -> list[Seen]:
    found = list(paged(where.client("rds"), "describe_db_instances", "DBInstances"))
    metrics = [Metric("AWS/RDS", name, (("DBInstanceIdentifier", d["DBInstanceIdentifier"]),), stat)
               for d in found for name, stat in (("CPUUtilization", "Average"), ("DatabaseConnections", "Maximum"))]
    series = daily_series(where, metrics)
    return [DbSeen(
        resource_id=d["DBInstanceIdentifier"], tags=tags_of(d.get("TagList")), instance_class=d["DBInstanceClass"],
        available=d.get("DBInstanceStatus") == "available", multi_az=bool(d.get("MultiAZ")),
        cpu=series[2 * n], connections=series[2 * n + 1],
    ) for n, d in enumerate(found)]


def snapshots(where: Where) -> list[Seen]:
    ec2 = where.client("ec2")
    used: dict[str, list[str]] = {}
    for image in paged(ec2, "describe_images", "Images", Owners=["self"]):
        for mapping in image.get("BlockDeviceMappings") or []:
            snapshot_id = (mapping.get("Ebs") or {}).get("SnapshotId")
            if snapshot_id:
                used.setdefault(snapshot_id, []).append(image["ImageId"])
    return [SnapshotSeen(
        resource_id=s["SnapshotId"], tags=tags_of(s.get("Tags")), volume_size_gib=int(s.get("VolumeSize") or 0),
        started_at=_aware(s["StartTime"]), used_by_images=used.get(s["SnapshotId"], []),
    ) for s in paged(ec2, "describe_snapshots", "Snapshots", OwnerIds=["self"])
        if s.get("OwnerId") in (None, where.account_id) and s.get("State") == "completed"]


def log_groups(where: Where) -> list[Seen]:
    logs = where.client("logs")
    seen: list[Seen] = []
    for group in paged(logs, "describe_log_groups", "logGroups"):
        never = group.get("retentionInDays") is None
        tags = logs.list_tags_log_group(logGroupName=group["logGroupName"]).get("tags") or {} if never else {}
        seen.append(LogGroupSeen(
            resource_id=group["logGroupName"], tags=tags, retention_days=group.get("retentionInDays"),
            stored_bytes=int(group.get("storedBytes") or 0),
            created_at=datetime.fromtimestamp(int(group.get("creationTime") or 0) / 1000, UTC),
        ))
    return seen


def buckets(where: Where) -> list[Seen]:
    """Buckets whose home is this region (ListBuckets is global: listed once per account)."""
    s3 = where.client("s3")
    if where.key not in where.buckets:
        listed = list(paged(s3, "list_buckets", "Buckets"))
        for b in listed:
            b["Region"] = s3.get_bucket_location(Bucket=b["Name"]).get("LocationConstraint") or "us-east-1"
        where.buckets[where.key] = listed
    mine = [b for b in where.buckets[where.key] if b["Region"] == where.region]
    sizes = daily_series(where, [Metric("AWS/S3", "BucketSizeBytes", (("BucketName", b["Name"]),
                                                                       ("StorageType", "StandardStorage")), "Average")
                                 for b in mine])
    seen: list[Seen] = []
    for b, size in zip(mine, sizes, strict=True):
        name = b["Name"]
        has_lifecycle = _absent_is_none(s3.get_bucket_lifecycle_configuration, "NoSuchLifecycleConfiguration",
                                        Bucket=name) is not None
        tagging = _absent_is_none(s3.get_bucket_tagging, "NoSuchTagSet", Bucket=name) or {}
        seen.append(BucketSeen(resource_id=name, tags=tags_of(tagging.get("TagSet")), has_lifecycle=has_lifecycle,
                               standard_bytes=max(size.values) if size.values else None))
    return seen


def tables(where: Where) -> list[Seen]:
    ddb = where.client("dynamodb")
    described = [ddb.describe_table(TableName=name)["Table"] for name in paged(ddb, "list_tables", "TableNames")]
    metrics = [Metric("AWS/DynamoDB", name, (("TableName", t["TableName"]),), "Sum")
               for t in described for name in ("ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits")]
    series = daily_series(where, metrics)
    seen: list[Seen] = []
    for n, t in enumerate(described):
        mode = (t.get("BillingModeSummary") or {}).get("BillingMode") or "PROVISIONED"
        units = [t.get("ProvisionedThroughput") or {}] + [g.get("ProvisionedThroughput") or {}
                                                          for g in t.get("GlobalSecondaryIndexes") or []]
        tags = ddb.list_tags_of_resource(ResourceArn=t["TableArn"]).get("Tags") if mode == "PROVISIONED" else []
        seen.append(TableSeen(
            resource_id=t["TableName"], tags=tags_of(tags), billing_mode=mode,
            read_capacity=sum(int(u.get("ReadCapacityUnits") or 0) for u in units),
            write_capacity=sum(int(u.get("WriteCapacityUnits") or 0) for u in units),
            created_at=_aware(t["CreationDateTime"]), consumed_read=series[2 * n], consumed_write=series[2 * n + 1],
        ))
    return seen


Collect = Callable[[Where], list[Seen]]
Judge = Callable[[Any, Thresholds, str, datetime], Judgement]

#: resource type -> (collector, judge). A new resource type to scan is one entry here and its judge.
COLLECTORS: dict[str, tuple[Collect, Judge]] = {
    "EbsVolume": (volumes, judge_volume),
    "ElasticIp": (addresses, judge_address),
    "Ec2Instance": (instances, judge_instance),
    "RdsDbInstance": (databases, judge_db),
    "EbsSnapshot": (snapshots, judge_snapshot),
    "LogGroup": (log_groups, judge_log_group),
    "S3Bucket": (buckets, judge_bucket),
    "DynamoDbTable": (tables, judge_table),
}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _absent_is_none(call: Callable[..., Any], code: str, **kwargs: Any) -> Any:
    try:
        return call(**kwargs)
    except ClientError as exc:
        if client_error_code(exc) == code:
            return None
        raise


def own_account(sessions: SessionFactory, region: str) -> str:
    try:
        return str(sessions.client(OWN_ACCOUNT, region, "sts").get_caller_identity()["Account"])
    except (ClientError, BotoCoreError) as exc:
        raise SourceError(f"cannot tell which account the credentials are for: {exc}") from None


def scan(sessions: SessionFactory, request: ScanRequest, policy: Policy, kinds: list[str],
         now: datetime | None = None) -> ScanReport:
    """Scan every account and region asked for; `now` is the clock every age and look-back is measured on."""
    clock = now or datetime.now(UTC)
    targets = [(a, a) for a in request.account_ids] or [(OWN_ACCOUNT, own_account(sessions, request.regions[0]))]
    judged: list[tuple[Seen, Judgement, ImportContext]] = []
    examined: dict[str, int] = {}
    failed = False
    listed: dict[str, list[dict[str, Any]]] = {}
    for key, account in targets:
        for region in request.regions:
            where = Where(sessions, key, account, region, request.thresholds, clock, listed)
            ctx = ImportContext(customer_id=request.customer_id, account_id=account, region=region)
            for resource_type, (collect, judge) in COLLECTORS.items():
                try:
                    seen = collect(where)
                except (ClientError, BotoCoreError) as exc:
                    code = client_error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
                    why = NoData(resource_type=resource_type, resource_id=f"{account}/{region}",
                                 reason=f"not examined in {account}/{region}: {code}")
                    judged.append((Seen(resource_id=why.resource_id), why, ctx))
                    failed = True
                    continue
                examined[resource_type] = examined.get(resource_type, 0) + len(seen)
                judged += [(s, judge(s, request.thresholds, region, clock), ctx) for s in seen]
    report = scan_report(judged, policy, kinds, request.thresholds, examined)
    return report.model_copy(update={"accounts": sorted({a for _, a in targets}), "regions": list(request.regions),
                                     "complete": not failed})
