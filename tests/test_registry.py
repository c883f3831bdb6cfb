"""Meta-tests over the registry: every kind declares what the workflow and the operator rely on."""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
from typing import Any, get_args, get_origin

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


#: The name a boto3 client is bound to (`ec2.x(...)`, `self.s3.x`) -> the IAM service prefix. A kind's
#: own resource client is `self.aws`: its prefix is the kind's `resource.service`.
_CLIENTS = {"ec2": "ec2", "s3": "s3", "logs": "logs", "lam": "lambda", "rds": "rds", "asg": "autoscaling", "dynamodb": "dynamodb"}
#: IAM actions whose names differ from the API operation they authorise.
_IAM_NAMES = {
    "s3:GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "s3:PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "s3:DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
}
_NOT_CALLS = {"get_paginator", "get_waiter", "exceptions", "meta"}
#: Where the code a kind runs lives besides its own module: shared kind helpers and the resource layer.
_SHARED = ("activities.actions._", "activities.resources.")


def _aws_calls(tree: ast.AST, clients: dict[str, str]) -> set[str]:
    """IAM actions of the methods called on a client attribute (`ec2.x(...)`, `self.aws.x`)."""
    calls = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr not in _NOT_CALLS:
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else None
            if name in clients:
                action = clients[name] + ":" + "".join(p.capitalize() for p in node.attr.split("_"))
                calls.add(_IAM_NAMES.get(action, action))
    return calls


def _helpers_reached(source: str, namespace: dict[str, Any]) -> list[Any]:
    return [obj for name, obj in namespace.items()
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith(_SHARED)
            and re.search(rf"\b{name}\b", source)]


def _code_run_by(cls: type[Action[Any]]) -> list[Any]:
    """The kind's module, its resource (every class of it in the resource layer) and every shared
    helper function or class (activities.actions._*, activities.resources.*) these reach, transitively."""
    module = sys.modules[cls.__module__]
    found: list[Any] = [module]
    pending = [c for c in cls.resource.__mro__ if c.__module__.startswith("activities.resources.")]
    pending += _helpers_reached(inspect.getsource(module), vars(module))
    while pending:
        helper = pending.pop()
        if helper not in found:
            found.append(helper)
            pending += _helpers_reached(inspect.getsource(helper), vars(sys.modules[helper.__module__]))
    return found


def _calls_needed(cls: type[Action[Any]]) -> dict[str, set[str]]:
    """IAM action (lower case: IAM names are case-insensitive) -> the modules making the call."""
    clients = {**_CLIENTS, "aws": cls.resource.service}
    needed: dict[str, set[str]] = {}
    for code in _code_run_by(cls):
        where = code.__name__ if inspect.ismodule(code) else code.__module__
        for call in _aws_calls(ast.parse(inspect.getsource(code)), clients):
            needed.setdefault(call.lower(), set()).add(where)
    return needed


@each_kind
def test_permissions_cover_every_aws_call(kind: str) -> None:
    cls = action_class(kind)
    needed = _calls_needed(cls)
    assert needed, f"{kind}: found no AWS calls to check"
    # IAM action names are case-insensitive (rds:DescribeDBInstances == rds:DescribeDbInstances).
    declared = {p.lower() for p in cls.permissions}
    missing = {call: sorted(where) for call, where in needed.items() if call not in declared}
    assert not missing, f"{kind} does not declare {missing}"


@each_kind
def test_the_resource_layer_reads_for_each_kind(kind: str) -> None:
    """The resource's describe calls count against the kind: a kind that does not declare
    them fails the test above (its reads moved out of the kind module, not out of the check)."""
    cls = action_class(kind)
    resource_side = {call for call, where in _calls_needed(cls).items()
                     if any(w.startswith("activities.resources.") for w in where)}
    assert resource_side, f"{kind}: no AWS call found in its resource layer"


def test_calls_in_resource_modules_are_required_of_the_kinds() -> None:
    """Strict where it matters: calls made only in activities/resources are found and demanded."""
    terminate, stop = _calls_needed(action_class("ec2.terminate")), _calls_needed(action_class("ec2.stop"))
    assert "ec2:describeinstanceattribute" in terminate  # Ec2InstanceDetail's extra read
    assert "ec2:describeinstanceattribute" not in stop  # ec2.stop's view does not make it
    assert "ec2:describeinstances" in stop
    asg = _calls_needed(action_class("asg.rightsize"))
    assert {"ec2:describelaunchtemplateversions", "autoscaling:describelaunchconfigurations"} <= set(asg)


@each_kind
def test_kind_state_model_is_its_resources(kind: str) -> None:
    """`Action[P, S]`: the S that types `self.state(seen)` is the model the resource validates into."""
    cls = action_class(kind)
    base = next(b for b in cls.__orig_bases__ if get_origin(b) is Action)  # type: ignore[attr-defined]
    assert get_args(base)[1] is cls.resource.state_model
    assert cls.resource_type == cls.resource.cfn_type


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
