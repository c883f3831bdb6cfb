"""Meta-tests over the registry: every kind declares what the workflow and the operator rely on."""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
from typing import Any

import pytest

from activities.actions.base import Action, UnknownAction, action_class, registry
from domain.policy import RiskLevel
from domain.recommendation import Recommendation

KINDS = sorted(registry())
each_kind = pytest.mark.parametrize("kind", KINDS)


def test_the_catalogue() -> None:
    assert {"ec2.stop", "ec2.rightsize", "ebs.delete", "ebs.gp2_to_gp3"} <= set(KINDS)


@each_kind
def test_kind_declares_its_traits(kind: str) -> None:
    cls = action_class(kind)
    assert cls.kind == kind
    assert isinstance(cls.reversible, bool)
    assert isinstance(cls.destroys_data, bool)
    assert isinstance(cls.base_risk, RiskLevel)
    assert cls.resource_type.startswith("AWS::")
    assert cls.params_model.model_config.get("extra") == "forbid"
    assert cls.permissions and all(re.fullmatch(r"[a-z0-9]+:[A-Z][A-Za-z0-9]+", p) for p in cls.permissions)
    assert cls.traits().kind == kind


@each_kind
def test_data_destroying_kinds_take_a_real_backup(kind: str) -> None:
    cls = action_class(kind)
    if cls.destroys_data:
        assert cls.backup is not Action.backup, f"{kind} destroys data but keeps the default backup"


#: The attribute a kind names its boto3 client by -> the IAM service prefix.
_CLIENTS = {"ec2": "ec2", "s3": "s3", "logs": "logs", "lam": "lambda", "rds": "rds", "asg": "autoscaling", "dynamodb": "dynamodb"}
#: IAM actions whose names differ from the API operation they authorise.
_IAM_NAMES = {
    "s3:GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "s3:PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "s3:DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
}
_NOT_CALLS = {"get_paginator", "get_waiter", "exceptions", "meta"}


def _ec2_calls(tree: ast.AST) -> set[str]:
    """IAM actions of the methods called on a client attribute (`ec2.x(...)`, `self.s3.x`)."""
    calls = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr not in _NOT_CALLS:
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else None
            if name in _CLIENTS:
                action = _CLIENTS[name] + ":" + "".join(p.capitalize() for p in node.attr.split("_"))
                calls.add(_IAM_NAMES.get(action, action))
    return calls


def _helpers_reached(source: str, namespace: dict[str, Any]) -> list[Any]:
    return [obj for name, obj in namespace.items()
            if inspect.isfunction(obj) and obj.__module__.startswith("activities.actions._")
            and re.search(rf"\b{name}\b", source)]


def _helpers_used(module: Any) -> list[Any]:
    """The shared helper functions (activities.actions._*) a kind module reaches, transitively."""
    found: list[Any] = []
    pending = _helpers_reached(inspect.getsource(module), vars(module))
    while pending:
        helper = pending.pop()
        if helper not in found:
            found.append(helper)
            pending += _helpers_reached(inspect.getsource(helper), vars(sys.modules[helper.__module__]))
    return found


@each_kind
def test_permissions_cover_every_aws_call(kind: str) -> None:
    cls = action_class(kind)
    module = sys.modules[cls.__module__]
    calls = _ec2_calls(ast.parse(inspect.getsource(module)))
    for helper in _helpers_used(module):
        calls |= _ec2_calls(ast.parse(inspect.getsource(helper)))
    assert calls, f"{kind}: found no AWS calls to check"
    # IAM action names are case-insensitive (rds:DescribeDBInstances == rds:DescribeDbInstances).
    needed = {c.lower() for c in calls}
    declared = {p.lower() for p in cls.permissions}
    assert needed <= declared, f"{kind} does not declare {sorted(needed - declared)}"


def _example(cls: type[Action[Any]]) -> dict[str, Any]:
    doc = inspect.getdoc(cls) or ""
    assert "Example recommendation::" in doc, f"{cls.kind} has no example recommendation"
    block = doc.split("Example recommendation::", 1)[1].strip()
    return dict(json.loads(block.split("\n\n", 1)[0]))


@each_kind
def test_docstring_example_is_a_valid_recommendation(kind: str) -> None:
    cls = action_class(kind)
    rec = Recommendation.model_validate(_example(cls))
    assert rec.kind == kind
    cls.params_model.model_validate(rec.params)


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(UnknownAction) as raised:
        action_class("nope.nope")
    message = str(raised.value)
    assert "nope.nope" in message
    assert all(kind in message for kind in KINDS)
