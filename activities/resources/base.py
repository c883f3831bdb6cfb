"""What every resource type says about itself, and the tag shapes the resource modules share.

A resource describes one live AWS object into a typed, frozen state model. The model's JSON
form *is* `Observation.state`, which Temporal records in workflow histories: a model's field
names and types are therefore a wire format. Keep them exactly as they are; add a field only
with a default, and only if every recorded observation stays valid.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from activities.errors import Refused, client_error_code
from domain.execution import Observation

Clients = Callable[[str], Any]
"""boto3 client by service name, for the action's account and region."""


class ResourceState(BaseModel):
    """A resource's observed state. Frozen: an observation is a record, not a workspace. Unknown or
    missing fields are errors, so a misspelt field is caught where the state is read."""

    model_config = ConfigDict(frozen=True, extra="forbid")


S = TypeVar("S", bound=ResourceState)


class Resource(ABC, Generic[S]):
    """One AWS resource type (or a richer view of one: a subclass with more fields).

    Subclasses set the class attributes and implement `describe`. Boto3 clients inside the
    resource modules are bound to names the permission meta-test knows (`ec2`, `rds`, `s3`, `lam`,
    `asg`, `dynamodb`, `logs`), so the calls made here count against each kind that uses them.
    """

    service: ClassVar[str]
    """The boto3 service name, which is also the IAM action prefix of its calls."""
    cfn_type: ClassVar[str]
    """The CloudFormation type, e.g. "AWS::EC2::Instance"."""
    id_pattern: ClassVar[str]
    """The form of an id or name (AWS's documented shape), checked at the edge."""
    state_model: ClassVar[type[ResourceState]]
    missing: ClassVar[str]
    """Why the resource cannot be acted on when `describe` finds nothing; `{id}` is its id."""

    @classmethod
    @abstractmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[S, dict[str, str]] | None:
        """The live state and tags, or None when the resource does not exist."""

    @classmethod
    def observe(cls, clients: Clients, resource_id: str) -> Observation:
        """The Observation a kind's `inspect` returns; Refused when the resource does not exist."""
        found = cls.describe(clients, resource_id)
        if found is None:
            raise Refused(cls.missing.format(id=resource_id))
        state, tags = found
        return Observation(state=state.model_dump(mode="json"), tags=tags)

    @classmethod
    def state(cls, seen: Observation) -> S:
        """`seen.state` as this resource's model (recorded observations validate as new ones do)."""
        return cls.state_model.model_validate(seen.state)  # type: ignore[return-value]

    @classmethod
    def id_problem(cls, resource_id: str) -> str | None:
        """Why `resource_id` cannot name a resource of this type, or None."""
        if re.fullmatch(cls.id_pattern, resource_id):
            return None
        return f"{resource_id!r} is not a valid {cls.cfn_type} id or name (expected the form {cls.id_pattern})"


def unless_missing(codes: frozenset[str], call: Callable[..., Any], **kwargs: Any) -> Any:
    """`call(**kwargs)`'s answer, or None when AWS answers with one of the error codes that mean
    "no such resource" (branching on the code, never the message)."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        if client_error_code(exc) in codes:
            return None
        raise


HEX_ID = "[0-9a-f]{8}(?:[0-9a-f]{9})?"
"""EC2's resource ids after their prefix: 8 hex digits (old) or 17."""


def tags_of(items: list[dict[str, str]] | None) -> dict[str, str]:
    """AWS's [{"Key": k, "Value": v}] (or None) as {k: v}."""
    return {t["Key"]: t["Value"] for t in items or []}


def tag_filters(tags: dict[str, str]) -> list[dict[str, Any]]:
    """EC2 Describe* filters matching resources that carry all these tags."""
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]


def restorable_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    """Tags that may be set again (the aws: prefix is reserved)."""
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items()) if not k.lower().startswith("aws:")]
