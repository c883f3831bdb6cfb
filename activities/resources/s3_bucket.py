"""S3 buckets (AWS::S3::Bucket): where a bucket is and its lifecycle configuration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from activities.errors import Refused, client_error_code
from activities.resources.base import Clients, Resource, ResourceState, tags_of

NONE = "none"
"""The saved configuration of a bucket that had no lifecycle configuration at all."""
MISSING = "bucket {id} does not exist"


class BucketState(ResourceState):
    """The bucket's region and its lifecycle configuration as JSON (or NONE)."""

    region: str
    lifecycle: dict[str, Any] | str


def jsonable(value: Any) -> Any:
    """boto3's lifecycle shapes as JSON (dates as ISO strings, which boto3 accepts back)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def lifecycle(s3: Any, bucket: str) -> dict[str, Any] | str:
    """The live configuration as returned (minus metadata), or NONE; Refused without the bucket."""
    try:
        found = s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as exc:
        code = client_error_code(exc)
        if code == "NoSuchLifecycleConfiguration":
            return NONE
        if code == "NoSuchBucket":
            raise Refused(MISSING.format(id=bucket)) from exc
        raise
    return {k: v for k, v in found.items() if k != "ResponseMetadata"}


def bucket_tags(s3: Any, bucket: str) -> dict[str, str]:
    try:
        return tags_of(s3.get_bucket_tagging(Bucket=bucket)["TagSet"])
    except ClientError as exc:
        if client_error_code(exc) == "NoSuchTagSet":
            return {}
        raise


class S3Bucket(Resource[BucketState]):
    """A missing bucket shows as Refused from the first read (S3 says NoSuchBucket to any of them)."""

    service = "s3"
    cfn_type = "AWS::S3::Bucket"
    id_pattern = "[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
    state_model = BucketState
    missing = MISSING

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[BucketState, dict[str, str]] | None:
        s3 = clients(cls.service)
        config = lifecycle(s3, resource_id)
        location = s3.get_bucket_location(Bucket=resource_id).get("LocationConstraint")
        region = {None: "us-east-1", "EU": "eu-west-1"}.get(location, location)
        return BucketState(region=region, lifecycle=jsonable(config)), bucket_tags(s3, resource_id)
