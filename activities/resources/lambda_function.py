"""Lambda functions (AWS::Lambda::Function), by name or ARN: their $LATEST configuration."""

from __future__ import annotations

from typing import Any

from activities.resources.base import Clients, Resource, ResourceState, unless_missing


class FunctionState(ResourceState):
    """`state` and `last_update_status` change on their own (the kind declares them volatile)."""

    memory_mb: int
    state: str | None
    last_update_status: str | None
    arn: str


def function_config(lam: Any, name: str) -> dict[str, Any] | None:
    """GetFunctionConfiguration's answer, or None when there is no such function."""
    found = unless_missing(frozenset({"ResourceNotFoundException"}), lam.get_function_configuration, FunctionName=name)
    return None if found is None else dict(found)


class LambdaFunction(Resource[FunctionState]):
    service = "lambda"
    cfn_type = "AWS::Lambda::Function"
    id_pattern = "(?:arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:)?[A-Za-z0-9_-]{1,64}"
    state_model = FunctionState
    missing = "function {id} does not exist"

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[FunctionState, dict[str, str]] | None:
        lam = clients(cls.service)
        config = function_config(lam, resource_id)
        if config is None:
            return None
        tags = lam.list_tags(Resource=config["FunctionArn"]).get("Tags") or {}
        return FunctionState(memory_mb=config["MemorySize"], state=config.get("State"),
                             last_update_status=config.get("LastUpdateStatus"),
                             arn=config["FunctionArn"]), dict(tags)
