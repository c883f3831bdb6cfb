"""The configuration kinds (s3.lifecycle, logs.retention, lambda.memory) against moto in-process.

Each: the happy path through revert with exact before/after comparisons, drift and missing
resources refused, apply and revert converge (twice = once), check_permissions only reads and
names the calls it cannot prove, and the tags the protection policy needs are visible.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cached_property, partial
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from activities.actions.base import Action
from activities.aws import SessionFactory
from activities.errors import Refused, RevertImpossible
from domain.execution import Observation
from domain.policy import Policy, protection_reason
from domain.pricing import flat
from tests.kinds_support import REGION, build_action, converge, moto_account, tag_list

EXEC = "exec-config-1"
BUCKET = "reclaim-test-bucket"
GROUP = "/app/ingest"
FUNCTION = "thumbnailer"
PROTECTED = {"reclaim:protect": "true", "team": "data"}


class Aws:
    """The operator's clients, built on first use (building one loads its service model)."""

    @cached_property
    def s3(self) -> Any:
        return boto3.client("s3", region_name=REGION)

    @cached_property
    def logs(self) -> Any:
        return boto3.client("logs", region_name=REGION)

    @cached_property
    def lam(self) -> Any:
        return boto3.client("lambda", region_name=REGION)

    @cached_property
    def iam(self) -> Any:
        return boto3.client("iam", region_name=REGION)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    with moto_account(monkeypatch):
        yield Aws()


@pytest.fixture
def factory(moto: Aws) -> SessionFactory:
    return SessionFactory()


@pytest.fixture
def offline() -> SessionFactory:
    """For tests that never call AWS (params, savings arithmetic)."""
    return SessionFactory()


action = partial(build_action, execution_id=EXEC)  # action(factory, kind, resource_id, params)


def run_through(kind: Action[Any], world: Callable[[], Any]) -> tuple[Any, Any]:
    """Validate, back up, apply twice, verify, revert twice: (world once applied, world reverted)."""
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    backup = converge(kind.backup, seen)
    json.dumps(backup.data)  # crosses the Temporal boundary
    assert converge(kind.backup, seen) == backup
    assert converge(kind.apply, seen, backup).changed
    applied = world()
    assert not converge(kind.apply, seen, backup).changed
    assert world() == applied
    assert not converge(kind.verify, seen, backup).changed
    converge(kind.revert, seen, backup)
    reverted = world()
    assert not converge(kind.revert, seen, backup).changed
    assert world() == reverted
    return applied, reverted


def read_only(kind: Action[Any], world: Callable[[], Any]) -> list[str]:
    seen = kind.inspect()
    before = world()
    labels = kind.check_permissions(seen)
    assert world() == before
    assert set(labels) | set(kind.unverified_permissions()) <= set(kind.permissions)
    return labels


# ---- s3.lifecycle ------------------------------------------------------------------------

EXISTING_RULES: list[dict[str, Any]] = [
    {"ID": "expire-tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 7}},
    {"ID": "legacy", "Status": "Disabled", "Prefix": "old/",
     "Transitions": [{"Date": datetime(2030, 1, 1, tzinfo=UTC), "StorageClass": "GLACIER"}]},
    {"ID": "tagged", "Status": "Enabled", "Filter": {"And": {"Prefix": "x/", "Tags": [{"Key": "k", "Value": "v"}]}},
     "NoncurrentVersionExpiration": {"NoncurrentDays": 5}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3}},
]
S3_PARAMS = {"storage_class": "STANDARD_IA", "transition_days": 30, "prefix": "logs/"}
OUR_RULE = {"ID": "reclaim-transition", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
            "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}]}


def make_bucket(moto: Aws, rules: list[dict[str, Any]] | None = None, tags: dict[str, str] | None = None) -> str:
    moto.s3.create_bucket(Bucket=BUCKET)
    if rules:
        moto.s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": rules})
    if tags:
        moto.s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": tag_list(tags)})
    return BUCKET


def lifecycle(moto: Aws, bucket: str = BUCKET) -> dict[str, Any] | str:
    """The full GetBucketLifecycleConfiguration answer, or "none"."""
    try:
        found = moto.s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"
        return "none"
    return {k: v for k, v in found.items() if k != "ResponseMetadata"}


def s3_world(moto: Aws) -> list[Any]:
    return [(b["Name"], lifecycle(moto, b["Name"])) for b in moto.s3.list_buckets()["Buckets"]]


@pytest.mark.parametrize("rules", [None, EXISTING_RULES], ids=["no-configuration", "existing-rules"])
def test_s3_lifecycle_happy_path_restores_the_exact_configuration(
        rules: list[dict[str, Any]] | None, moto: Aws, factory: SessionFactory) -> None:
    make_bucket(moto, rules)
    original = lifecycle(moto)
    kind = action(factory, "s3.lifecycle", BUCKET, S3_PARAMS)
    backup = kind.backup(kind.inspect())
    assert backup.data == {"lifecycle": sys.modules[type(kind).__module__].jsonable(original)}
    if rules is None:
        assert backup.data == {"lifecycle": "none"}

    applied, reverted = run_through(kind, lambda: lifecycle(moto))
    assert isinstance(applied, dict)
    kept = original["Rules"] if isinstance(original, dict) else []
    assert applied["Rules"] == [*kept, OUR_RULE]
    assert reverted == original


def test_s3_lifecycle_replaces_only_its_own_rule_once(moto: Aws, factory: SessionFactory) -> None:
    make_bucket(moto, [*EXISTING_RULES, OUR_RULE])
    kind = action(factory, "s3.lifecycle", BUCKET, S3_PARAMS)
    seen = kind.inspect()
    assert kind.refusal(seen) is None  # already in place: nothing to do, nothing refused
    backup = kind.backup(seen)
    before = lifecycle(moto)
    assert not kind.apply(seen, backup).changed
    assert not kind.revert(seen, backup).changed
    assert lifecycle(moto) == before


def test_s3_lifecycle_drift_is_refused(moto: Aws, factory: SessionFactory) -> None:
    make_bucket(moto, EXISTING_RULES)
    counted = action(factory, "s3.lifecycle", BUCKET, {**S3_PARAMS, "expected_rule_count": 3})
    assert counted.refusal(counted.inspect()) is None
    moto.s3.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration={"Rules": [*EXISTING_RULES, {**OUR_RULE, "Filter": {"Prefix": "x"}}]})
    for kind in (counted, action(factory, "s3.lifecycle", BUCKET, S3_PARAMS)):
        reason = kind.refusal(kind.inspect())
        assert reason is not None and reason.startswith("drift:"), reason
    moto.s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": EXISTING_RULES[:1]})
    assert str(counted.refusal(counted.inspect())).startswith("drift: the bucket has 1 other")


def test_s3_lifecycle_missing_bucket_is_refused(moto: Aws, factory: SessionFactory) -> None:
    with pytest.raises(Refused, match="no-such-bucket-here"):
        action(factory, "s3.lifecycle", "no-such-bucket-here", S3_PARAMS).inspect()


def test_s3_lifecycle_revert_of_a_deleted_bucket_is_impossible(moto: Aws, factory: SessionFactory) -> None:
    make_bucket(moto)
    kind = action(factory, "s3.lifecycle", BUCKET, S3_PARAMS)
    seen = kind.inspect()
    backup = kind.backup(seen)
    kind.apply(seen, backup)
    moto.s3.delete_bucket(Bucket=BUCKET)
    with pytest.raises(RevertImpossible, match=BUCKET):
        kind.revert(seen, backup)


def test_s3_lifecycle_refuses_a_bucket_in_another_region(moto: Aws, factory: SessionFactory) -> None:
    moto.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    kind = action(factory, "s3.lifecycle", BUCKET, S3_PARAMS)
    assert "is in eu-west-1" in str(kind.refusal(kind.inspect()))


@pytest.mark.parametrize("params", [
    {"storage_class": "STANDARD_IA", "transition_days": 29},
    {"storage_class": "GLACIER", "transition_days": 90},
    {**S3_PARAMS, "unknown": 1},
])
def test_s3_lifecycle_params_follow_aws_rules(params: dict[str, Any], offline: SessionFactory) -> None:
    with pytest.raises(Refused, match="invalid params"):
        action(offline, "s3.lifecycle", BUCKET, params)


def test_s3_lifecycle_glacier_ir_may_transition_at_day_zero(moto: Aws, factory: SessionFactory) -> None:
    make_bucket(moto)
    kind = action(factory, "s3.lifecycle", BUCKET, {"storage_class": "GLACIER_IR", "transition_days": 0})
    applied, reverted = run_through(kind, lambda: lifecycle(moto))
    assert applied["Rules"] == [{"ID": "reclaim-transition", "Filter": {"Prefix": ""}, "Status": "Enabled",
                                 "Transitions": [{"Days": 0, "StorageClass": "GLACIER_IR"}]}]
    assert reverted == "none"


def test_s3_lifecycle_check_permissions_only_reads(moto: Aws, factory: SessionFactory) -> None:
    make_bucket(moto, EXISTING_RULES)
    kind = action(factory, "s3.lifecycle", BUCKET, S3_PARAMS)
    assert read_only(kind, lambda: s3_world(moto)) == ["s3:GetLifecycleConfiguration", "s3:GetBucketTagging"]
    assert kind.unverified_permissions() == ["s3:PutLifecycleConfiguration"]


def test_s3_lifecycle_tags_reach_the_protection_policy(moto: Aws, factory: SessionFactory) -> None:
    make_bucket(moto, tags=PROTECTED)
    seen = action(factory, "s3.lifecycle", BUCKET, S3_PARAMS).inspect()
    assert seen.tags == PROTECTED
    assert "reclaim:protect" in str(protection_reason(Policy(), seen.tags))
    moto.s3.delete_bucket_tagging(Bucket=BUCKET)
    assert action(factory, "s3.lifecycle", BUCKET, S3_PARAMS).inspect().tags == {}


def test_s3_lifecycle_savings(offline: SessionFactory) -> None:
    seen = Observation()
    assert action(offline, "s3.lifecycle", BUCKET, S3_PARAMS).estimate_monthly_savings(seen) == 10.0
    tib = action(offline, "s3.lifecycle", BUCKET, {**S3_PARAMS, "expected_bytes": 1024**4})
    assert tib.estimate_monthly_savings(seen) == pytest.approx(1024 * (0.023 - 0.0125))


# ---- logs.retention ----------------------------------------------------------------------

def make_group(moto: Aws, name: str = GROUP, retention: int | None = None,
               tags: dict[str, str] | None = None) -> str:
    moto.logs.create_log_group(logGroupName=name, **({"tags": tags} if tags else {}))
    if retention is not None:
        moto.logs.put_retention_policy(logGroupName=name, retentionInDays=retention)
    return name


def log_groups(moto: Aws) -> list[dict[str, Any]]:
    return list(moto.logs.describe_log_groups()["logGroups"])


@pytest.mark.parametrize("expected", [None, 365])
def test_logs_retention_happy_path(expected: int | None, moto: Aws, factory: SessionFactory) -> None:
    make_group(moto, retention=expected)
    make_group(moto, f"{GROUP}-other", retention=7)
    original = log_groups(moto)
    kind = action(factory, "logs.retention", GROUP, {"retention_days": 30, "expected_retention_days": expected})
    assert kind.backup(kind.inspect()).data == {"retention_days": expected}
    applied, reverted = run_through(kind, lambda: log_groups(moto))
    assert [(g["logGroupName"], g.get("retentionInDays")) for g in applied] == [(GROUP, 30), (f"{GROUP}-other", 7)]
    assert reverted == original


def test_logs_retention_drift_is_refused(moto: Aws, factory: SessionFactory) -> None:
    make_group(moto)
    kind = action(factory, "logs.retention", GROUP, {"retention_days": 30})
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    backup = kind.backup(seen)
    moto.logs.put_retention_policy(logGroupName=GROUP, retentionInDays=60)
    assert kind.refusal(kind.inspect()) == "drift: retention is 60 days, the recommendation assumed never expire"
    with pytest.raises(Refused, match="drift"):  # changed between backup and apply: not overwritten
        kind.apply(seen, backup)
    assert log_groups(moto)[0]["retentionInDays"] == 60


def test_logs_retention_missing_group_is_refused(moto: Aws, factory: SessionFactory) -> None:
    make_group(moto, f"{GROUP}/child")  # a prefix match is not the group
    with pytest.raises(Refused, match=GROUP):
        action(factory, "logs.retention", GROUP, {"retention_days": 30}).inspect()


@pytest.mark.parametrize("params", [{"retention_days": 31}, {"retention_days": 30, "expected_retention_days": 30},
                                    {"retention_days": 30, "expected_retention_days": 45}])
def test_logs_retention_params(params: dict[str, Any], offline: SessionFactory) -> None:
    with pytest.raises(Refused, match="invalid params"):
        action(offline, "logs.retention", GROUP, params)


@pytest.mark.parametrize(("expected", "unverified"), [
    (None, ["logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy"]), (365, ["logs:PutRetentionPolicy"])])
def test_logs_retention_check_permissions_only_reads(expected: int | None, unverified: list[str], moto: Aws,
                                                     factory: SessionFactory) -> None:
    make_group(moto, retention=expected)
    kind = action(factory, "logs.retention", GROUP, {"retention_days": 30, "expected_retention_days": expected})
    assert read_only(kind, lambda: log_groups(moto)) == ["logs:DescribeLogGroups", "logs:ListTagsForResource"]
    assert kind.unverified_permissions() == unverified


def test_logs_retention_tags_reach_the_protection_policy(moto: Aws, factory: SessionFactory) -> None:
    make_group(moto, tags=PROTECTED)
    seen = action(factory, "logs.retention", GROUP, {"retention_days": 30}).inspect()
    assert seen.tags == PROTECTED
    assert protection_reason(Policy(), seen.tags) is not None


def test_logs_retention_savings(offline: SessionFactory) -> None:
    kind = action(offline, "logs.retention", GROUP, {"retention_days": 30})
    whole = {"retention_days": None, "stored_bytes": 0, "creation_time": None, "arn": "arn:aws:logs:group"}
    assert kind.estimate_monthly_savings(Observation(state=whole)) == 10.0
    year_ago = int((datetime.now(UTC).timestamp() - 360 * 86400) * 1000)
    seen = Observation(state={**whole, "stored_bytes": 100 * 1024**3, "creation_time": year_ago})
    # Evenly written over 360 days, keeping 30: 11/12 of 100 GiB goes.
    assert kind.estimate_monthly_savings(seen) == pytest.approx(100 * 11 / 12 * flat("logs_gb_month", REGION),
                                                                rel=1e-3)


# ---- lambda.memory -----------------------------------------------------------------------

LAMBDA_PARAMS = {"expected_memory_mb": 1024, "target_memory_mb": 512}
VOLATILE = {"ResponseMetadata", "LastModified", "RevisionId"}


def make_function(moto: Aws, name: str = FUNCTION, memory: int = 1024, tags: dict[str, str] | None = None) -> str:
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    try:
        role = moto.iam.get_role(RoleName="fn-role")["Role"]["Arn"]
    except ClientError:
        role = moto.iam.create_role(RoleName="fn-role", AssumeRolePolicyDocument=json.dumps(policy))["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return 1\n")
    moto.lam.create_function(FunctionName=name, Runtime="python3.12", Role=role, Handler="index.handler",
                             Code={"ZipFile": code.getvalue()}, MemorySize=memory, Tags=tags or {})
    return name


def functions(moto: Aws) -> list[dict[str, Any]]:
    names = sorted(f["FunctionName"] for f in moto.lam.list_functions()["Functions"])
    configs = [moto.lam.get_function_configuration(FunctionName=n) for n in names]
    return [{k: v for k, v in c.items() if k not in VOLATILE} for c in configs]


def test_lambda_memory_happy_path(moto: Aws, factory: SessionFactory) -> None:
    make_function(moto)
    make_function(moto, "other", memory=256)
    original = functions(moto)
    kind = action(factory, "lambda.memory", FUNCTION, LAMBDA_PARAMS)
    assert kind.backup(kind.inspect()).data == {"memory_mb": 1024}
    applied, reverted = run_through(kind, lambda: functions(moto))
    assert [(f["FunctionName"], f["MemorySize"]) for f in applied] == [("other", 256), (FUNCTION, 512)]
    assert reverted == original


def test_lambda_memory_drift_is_refused(moto: Aws, factory: SessionFactory) -> None:
    make_function(moto)
    kind = action(factory, "lambda.memory", FUNCTION, LAMBDA_PARAMS)
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    backup = kind.backup(seen)
    moto.lam.update_function_configuration(FunctionName=FUNCTION, MemorySize=2048)
    assert kind.refusal(kind.inspect()) == "drift: memory is 2048 MB, the recommendation assumed 1024 MB"
    with pytest.raises(Refused, match="drift"):
        kind.apply(seen, backup)
    assert functions(moto)[0]["MemorySize"] == 2048


def test_lambda_memory_refuses_a_function_being_updated(offline: SessionFactory) -> None:
    """moto finishes every update at once (LastUpdateStatus is always Successful): judged on an observation."""
    kind = action(offline, "lambda.memory", FUNCTION, LAMBDA_PARAMS)
    arn = "arn:aws:lambda:us-east-1:123456789012:function:" + FUNCTION
    busy = Observation(state={"memory_mb": 1024, "state": "Active", "last_update_status": "InProgress", "arn": arn})
    assert "in progress" in str(kind.refusal(busy))
    pending = Observation(state={"memory_mb": 1024, "state": "Pending", "last_update_status": None, "arn": arn})
    assert "Pending" in str(kind.refusal(pending))


def test_lambda_memory_missing_function_is_refused(moto: Aws, factory: SessionFactory) -> None:
    with pytest.raises(Refused, match="nope-function"):
        action(factory, "lambda.memory", "nope-function", LAMBDA_PARAMS).inspect()


def test_lambda_memory_revert_of_a_deleted_function_is_impossible(moto: Aws, factory: SessionFactory) -> None:
    make_function(moto)
    kind = action(factory, "lambda.memory", FUNCTION, LAMBDA_PARAMS)
    seen = kind.inspect()
    backup = kind.backup(seen)
    kind.apply(seen, backup)
    moto.lam.delete_function(FunctionName=FUNCTION)
    with pytest.raises(RevertImpossible, match=FUNCTION):
        kind.revert(seen, backup)


@pytest.mark.parametrize("params", [{"expected_memory_mb": 1024, "target_memory_mb": 1024},
                                    {"expected_memory_mb": 1024, "target_memory_mb": 64},
                                    {"expected_memory_mb": 1024, "target_memory_mb": 20480}])
def test_lambda_memory_params(params: dict[str, Any], offline: SessionFactory) -> None:
    with pytest.raises(Refused, match="invalid params"):
        action(offline, "lambda.memory", FUNCTION, params)


def test_lambda_memory_check_permissions_only_reads(moto: Aws, factory: SessionFactory) -> None:
    make_function(moto)
    kind = action(factory, "lambda.memory", FUNCTION, LAMBDA_PARAMS)
    assert read_only(kind, lambda: functions(moto)) == ["lambda:GetFunctionConfiguration", "lambda:ListTags"]
    assert kind.unverified_permissions() == ["lambda:UpdateFunctionConfiguration"]


def test_lambda_memory_tags_reach_the_protection_policy(moto: Aws, factory: SessionFactory) -> None:
    make_function(moto, tags={"env": "production"})
    seen = action(factory, "lambda.memory", FUNCTION, LAMBDA_PARAMS).inspect()
    assert seen.tags == {"env": "production"}
    assert "production" in str(protection_reason(Policy(), seen.tags))


def test_lambda_memory_savings(offline: SessionFactory) -> None:
    seen = Observation()
    assert action(offline, "lambda.memory", FUNCTION, LAMBDA_PARAMS).estimate_monthly_savings(seen) == 10.0
    priced = action(offline, "lambda.memory", FUNCTION, {**LAMBDA_PARAMS, "monthly_gb_seconds": 1_000_000})
    assert priced.estimate_monthly_savings(seen) == pytest.approx(500_000 * flat("lambda_gb_second", REGION))
