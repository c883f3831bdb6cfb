"""The resource layer (activities/resources/): each resource describes into its model against moto,
says when it is missing, and its model is the wire format of `Observation.state`: the same keys
as the untyped dicts the kinds recorded before it existed, and strict about them."""

from __future__ import annotations

import ast
import base64
import inspect
import io
import json
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from activities.actions._rds import RECIPE
from activities.actions.base import action_class, registry, resource_id_problem
from activities.errors import Refused
from activities.resources import resource_types
from activities.resources.autoscaling_group import AutoScalingGroup
from activities.resources.base import Resource
from activities.resources.drs_source_server import DrsSourceServer
from activities.resources.dynamodb_table import DynamodbTable
from activities.resources.ebs_snapshot import EbsSnapshot
from activities.resources.ebs_volume import EbsVolume, EbsVolumeModification
from activities.resources.ec2_instance import Ec2Instance, Ec2InstanceDetail
from activities.resources.elastic_ip import ElasticIp
from activities.resources.lambda_function import LambdaFunction
from activities.resources.log_group import LogGroup
from activities.resources.rds_instance import DbInstanceState, RdsInstance
from activities.resources.s3_bucket import S3Bucket
from domain.execution import Observation
from tests.drs_fake import FakeDrs, server_id
from tests.kinds_support import REGION, build_action, moto_account

Clients = Callable[[str], Any]

#: The keys (in order) of the state dicts the kinds built by hand before the resource layer, as
#: recorded in workflow histories: the models must dump exactly these.
WIRE_KEYS: dict[type[Resource[Any]], list[str]] = {
    Ec2Instance: ["state", "instance_type", "root_device_type", "lifecycle"],
    Ec2InstanceDetail: ["state", "instance_type", "image_id", "root_device_type", "lifecycle", "subnet_id",
                        "availability_zone", "security_group_ids", "key_name", "iam_instance_profile_arn",
                        "termination_protection"],
    EbsVolume: ["state", "volume_type", "size", "iops", "throughput", "availability_zone", "encrypted",
                "kms_key_id", "attached_to"],
    EbsVolumeModification: ["state", "volume_type", "size", "iops", "throughput", "availability_zone", "encrypted",
                            "kms_key_id", "attached_to", "modification_state", "modification_end_time"],
    EbsSnapshot: ["state", "volume_size", "volume_id", "description", "owner_id", "start_time", "age_days",
                  "used_by_images"],
    ElasticIp: ["public_ip", "domain", "associated_with", "network_border_group", "public_ipv4_pool"],
    RdsInstance: ["status", "instance_class", "pending_instance_class", "multi_az", "engine", "engine_version",
                  "allocated_storage", "storage_type", "iops", "storage_throughput", "deletion_protection",
                  "cluster_id", "replica_source", "read_replicas", "dbi_resource_id", "created", "subnet_group",
                  "vpc_security_group_ids", "parameter_group", "port", "publicly_accessible", "maintenance_window"],
    S3Bucket: ["region", "lifecycle"],
    AutoScalingGroup: ["min", "max", "desired", "launch_template_id", "launch_template_version", "version_number",
                       "instance_type", "single_template", "busy"],
    LambdaFunction: ["memory_mb", "state", "last_update_status", "arn"],
    DynamodbTable: ["arn", "status", "mode", "read", "write", "gsis", "last_switch_to_on_demand"],
    LogGroup: ["retention_days", "stored_bytes", "creation_time", "arn"],
    DrsSourceServer: ["servers"],
}


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clients]:
    with moto_account(monkeypatch):
        made: dict[str, Any] = {}
        yield lambda service: made.setdefault(service, boto3.client(service, region_name=REGION))


# ---- one live resource of each type, made in moto: (resource id, a well-formed id that names nothing)

def _instance(aws: Clients) -> tuple[str, str]:
    ec2 = aws("ec2")
    image = ec2.register_image(Name="base", RootDeviceName="/dev/xvda", BlockDeviceMappings=[
        {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}])["ImageId"]
    iid = ec2.run_instances(ImageId=image, InstanceType="m5.large", MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "web"}]}])["Instances"][0]["InstanceId"]
    return iid, "i-0123456789abcdef0"


def _volume(aws: Clients) -> tuple[str, str]:
    vid = aws("ec2").create_volume(AvailabilityZone=f"{REGION}a", Size=100, VolumeType="gp2", TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": "team", "Value": "web"}]}])["VolumeId"]
    return vid, "vol-0123456789abcdef0"


def _snapshot(aws: Clients) -> tuple[str, str]:
    vid, _ = _volume(aws)
    sid = aws("ec2").create_snapshot(VolumeId=vid, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [{"Key": "team", "Value": "web"}]}])["SnapshotId"]
    return sid, "snap-0123456789abcdef0"


def _address(aws: Clients) -> tuple[str, str]:
    alloc = aws("ec2").allocate_address(Domain="vpc", TagSpecifications=[
        {"ResourceType": "elastic-ip", "Tags": [{"Key": "team", "Value": "web"}]}])["AllocationId"]
    return alloc, "eipalloc-0123456789abcdef0"


def _db(aws: Clients) -> tuple[str, str]:
    aws("rds").create_db_instance(DBInstanceIdentifier="orders-db", DBInstanceClass="db.m5.large", Engine="postgres",
                                  AllocatedStorage=100, MasterUsername="admin", MasterUserPassword="correct-horse-1",
                                  Tags=[{"Key": "team", "Value": "web"}])
    return "orders-db", "no-such-db"


def _bucket(aws: Clients) -> tuple[str, str]:
    aws("s3").create_bucket(Bucket="reclaim-resource-test")
    aws("s3").put_bucket_tagging(Bucket="reclaim-resource-test", Tagging={"TagSet": [{"Key": "team", "Value": "web"}]})
    return "reclaim-resource-test", "reclaim-no-such-bucket"


def _group(aws: Clients) -> tuple[str, str]:
    template = aws("ec2").create_launch_template(LaunchTemplateName="web-lt", LaunchTemplateData={
        "ImageId": "ami-12c6146b", "InstanceType": "m5.large"})["LaunchTemplate"]["LaunchTemplateId"]
    subnet = aws("ec2").describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
    aws("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName="web-asg", LaunchTemplate={"LaunchTemplateId": template, "Version": "$Default"},
        MinSize=1, MaxSize=4, DesiredCapacity=2, VPCZoneIdentifier=subnet["SubnetId"],
        Tags=[{"Key": "team", "Value": "web", "PropagateAtLaunch": True, "ResourceId": "web-asg",
               "ResourceType": "auto-scaling-group"}])
    return "web-asg", "no-such-asg"


def _function(aws: Clients) -> tuple[str, str]:
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    role = aws("iam").create_role(RoleName="fn-role", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return 1\n")
    aws("lambda").create_function(FunctionName="thumbnailer", Runtime="python3.12", Role=role, Handler="index.handler",
                                  Code={"ZipFile": code.getvalue()}, MemorySize=1024, Tags={"team": "web"})
    return "thumbnailer", "no-such-function"


def _table(aws: Clients) -> tuple[str, str]:
    aws("dynamodb").create_table(
        TableName="orders", BillingMode="PROVISIONED", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"},
                              {"AttributeName": "customer", "AttributeType": "S"}],
        GlobalSecondaryIndexes=[{"IndexName": "by-customer", "Projection": {"ProjectionType": "ALL"},
                                 "KeySchema": [{"AttributeName": "customer", "KeyType": "HASH"}],
                                 "ProvisionedThroughput": {"ReadCapacityUnits": 7, "WriteCapacityUnits": 3}}],
        ProvisionedThroughput={"ReadCapacityUnits": 10, "WriteCapacityUnits": 5}, Tags=[{"Key": "team", "Value": "web"}])
    return "orders", "no-such-table"


def _log_group(aws: Clients) -> tuple[str, str]:
    aws("logs").create_log_group(logGroupName="/app/ingest", tags={"team": "web"})
    aws("logs").create_log_group(logGroupName="/app/ingest-other")  # the API matches by prefix
    return "/app/ingest", "/app/no-such-group"


def _source_server(aws: Clients) -> tuple[str, str]:
    """moto has no DRS: the stateful Stubber of tests/drs_fake.py answers on the same client."""
    fake = FakeDrs(aws("drs"))
    fake.add_server(server_id(1), {"team": "web"})
    fake.activate()
    return server_id(1), server_id(2)


MAKERS: dict[type[Resource[Any]], Callable[[Clients], tuple[str, str]]] = {
    Ec2Instance: _instance, Ec2InstanceDetail: _instance, EbsVolume: _volume, EbsVolumeModification: _volume,
    EbsSnapshot: _snapshot, ElasticIp: _address, RdsInstance: _db, S3Bucket: _bucket, AutoScalingGroup: _group,
    LambdaFunction: _function, DynamodbTable: _table, LogGroup: _log_group, DrsSourceServer: _source_server,
}
each_resource = pytest.mark.parametrize("resource", list(MAKERS), ids=lambda r: r.__name__)


@each_resource
def test_resource_describes_into_its_model(resource: type[Resource[Any]], clients: Clients) -> None:
    rid, _ = MAKERS[resource](clients)
    found = resource.describe(clients, rid)
    assert found is not None
    state, tags = found
    assert type(state) is resource.state_model
    assert tags == {"team": "web"}
    seen = resource.observe(clients, rid)
    assert list(seen.state) == WIRE_KEYS[resource]  # the recorded shape, key for key
    assert json.loads(json.dumps(seen.state)) == seen.state  # crosses the Temporal boundary as it is
    typed = resource.state(seen)  # (a second describe: age_days has moved on since `state`)
    assert _text(typed.model_dump(mode="json")) == _text(seen.state)
    assert resource.state(Observation.model_validate_json(seen.model_dump_json())) == typed


def _text(state: dict[str, Any]) -> str:
    """JSON text, where 100 and 100.0 differ (as they do in a recorded history)."""
    return json.dumps(state, sort_keys=True)


@each_resource
def test_missing_resource_is_none_and_observing_it_refused(resource: type[Resource[Any]], clients: Clients) -> None:
    _, nothing = MAKERS[resource](clients)
    assert resource.id_problem(nothing) is None  # well-formed: missing, not malformed
    if resource is not S3Bucket:  # S3 answers NoSuchBucket to the first read: Refused at once
        assert resource.describe(clients, nothing) is None
    with pytest.raises(Refused, match="does not exist"):
        resource.observe(clients, nothing)


def test_every_resource_type_is_covered() -> None:
    assert set(WIRE_KEYS) == set(MAKERS)
    assert {r.cfn_type for r in MAKERS} == set(resource_types())


@each_resource
def test_the_model_refuses_unknown_missing_and_changed_fields(resource: type[Resource[Any]], clients: Clients) -> None:
    """A misspelt or dropped state key is a ValidationError where the state is read, not a KeyError
    (or a silent None) deep inside a step; an observation is a record: frozen."""
    rid, _ = MAKERS[resource](clients)
    seen = resource.observe(clients, rid)
    first = WIRE_KEYS[resource][0]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        resource.state(Observation(state={**seen.state, first + "_typo": 1}))
    without = {k: v for k, v in seen.state.items() if k != first}
    with pytest.raises(ValidationError, match="Field required"):
        resource.state(Observation(state=without))
    with pytest.raises(ValidationError, match="frozen"):
        setattr(resource.state(seen), first, None)


def test_a_typo_in_a_kind_is_an_attribute_error(clients: Clients) -> None:
    """mypy reports `self.state(seen).instance_typ` (S types the model); at run time it is an
    AttributeError at the typo, not a KeyError from an untyped dict."""
    rid, _ = _instance(clients)
    kind = build_action(_Sessions(clients), "ec2.stop", rid, execution_id="exec-resources-1")
    seen = kind.inspect()
    assert kind.state(seen).instance_type == "m5.large"
    with pytest.raises(AttributeError, match="instance_typ"):
        kind.state(seen).instance_typ  # noqa: B018


class _Sessions:
    """A SessionFactory stand-in over the test's clients (what `Action.client` asks for)."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients

    def client(self, account_id: str, region: str, service: str) -> Any:
        return self.clients(service)


def test_resource_id_problem_follows_each_resources_pattern() -> None:
    assert resource_id_problem("AWS::EC2::Instance", "i-0123456789abcdef0") is None
    assert "AWS::EC2::Instance" in str(resource_id_problem("AWS::EC2::Instance", "vol-0123456789abcdef0"))
    assert resource_id_problem("AWS::S3::Bucket", "Not_A_Bucket") is not None
    assert resource_id_problem("AWS::Unknown::Thing", "anything") is None
    for kind in registry().values():
        assert kind.resource_type in resource_types()


@pytest.mark.parametrize("kind", sorted(registry()))
def test_state_keys_named_as_strings_are_fields(kind: str) -> None:
    """The few places that still name state fields by string name real ones."""
    cls = action_class(kind)
    assert cls.volatile_state <= set(cls.resource.state_model.model_fields)
    if kind == "rds.delete":
        assert set(RECIPE) <= set(DbInstanceState.model_fields)


# ---- wire compatibility with what the workflows already recorded ----------------------------

def _decoded(value: Any) -> Iterator[Any]:
    """Every JSON document in a history event, payloads (base64 JSON) included."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _decoded(item)
    elif isinstance(value, list):
        for item in value:
            yield from _decoded(item)
    elif isinstance(value, str) and len(value) > 20:
        try:
            yield from _decoded(json.loads(base64.b64decode(value, validate=True)))
        except ValueError:
            return


def _recorded_observations() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(Path(__file__).parent.joinpath("histories").glob("*/*.json")):
        for doc in _decoded(json.loads(path.read_text())):
            kind = (doc.get("recommendation") or {}).get("kind")
            state = (doc.get("observed") or {}).get("state") if isinstance(doc.get("observed"), dict) else None
            if kind and state:
                found.append((kind, state))
    return found


def test_recorded_observations_validate_and_dump_unchanged() -> None:
    """Step inputs in the recorded histories carry observations made before the resource layer:
    they validate into today's models and dump back to the very same JSON."""
    recorded = _recorded_observations()
    assert {kind for kind, _ in recorded} >= {"ec2.stop", "ec2.rightsize", "ebs.delete", "ebs.gp2_to_gp3"}
    for kind, state in recorded:
        model = action_class(kind).resource.state_model.model_validate(state)
        assert _text(model.model_dump(mode="json")) == _text(state), kind  # 100 stays 100, not 100.0


@pytest.mark.parametrize("kind", sorted(registry()))
def test_revert_and_cleanup_never_read_the_observation(kind: str) -> None:
    """The rollback window reverts and cleans up with an empty Observation (the execution's own is
    gone by then): those steps go by the backup alone, so they never meet the strict model."""
    cls = action_class(kind)

    def reads(method: str, visited: set[str]) -> list[str]:
        fn = getattr(cls, method, None)
        if method in visited or not inspect.isfunction(fn):
            return []
        visited.add(method)
        hits = []
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(fn)))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "seen" or (node.value.id == "self" and node.attr == "state"):
                    hits.append(f"{method} reads {node.value.id}.{node.attr}")
                elif node.value.id == "self":
                    hits += reads(node.attr, visited)
        return hits

    assert reads("revert", set()) + reads("cleanup", set()) == []
