"""The resource layer under the action kinds: one module per AWS resource type.

A resource module knows one type of AWS object and nothing about changing it: its boto3 service,
its CloudFormation type, the form of its id, the describe/get calls that read it, how "missing"
looks, and a frozen pydantic model of the state the kinds read (`base.Resource`). That model's
JSON is `Observation.state`, recorded in workflow histories: its field names are a wire format.

Why a layer: the kinds used to repeat their client property and `inspect()`, and read the live
state from an untyped dict by key, so a misspelt key was a KeyError in a running workflow. Now a
kind declares `resource = Ec2Instance`, gets `inspect()` and `self.aws` (the resource's client)
from `Action`, and reads `self.state(seen).instance_type`: a typo is a mypy error (and an
AttributeError), and a recorded state with a missing or unknown field is a ValidationError.

Adding a new action kind on an existing resource touches one kind module in activities/actions/
(and its tests). Adding a new resource type touches one module here (and its tests in
tests/test_resources.py): it is found by walking this package, like the kinds are; its
`id_pattern` is checked at the edge by `resource_id_problem`. A kind that needs more of a
resource than the others (ec2.terminate, ebs.gp2_to_gp3) uses a richer view: another Resource
subclass in the same module, with its own model, so each kind's recorded state stays its own.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from activities.resources.base import Resource

_by_type: dict[str, type[Resource[Any]]] = {}


def _subclasses(cls: type) -> list[type[Resource[Any]]]:
    found: list[type[Resource[Any]]] = []
    sub: type[Resource[Any]]
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def resource_types() -> dict[str, type[Resource[Any]]]:
    """Each CloudFormation type -> its (first-defined) Resource class, every module imported once."""
    if not _by_type:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        for cls in _subclasses(Resource):
            if hasattr(cls, "cfn_type"):
                _by_type.setdefault(cls.cfn_type, cls)
    return dict(_by_type)


def resource_id_problem(resource_type: str, resource_id: str) -> str | None:
    """Why `resource_id` cannot name a resource of this type, or None (also for unknown types)."""
    cls = resource_types().get(resource_type)
    return None if cls is None else cls.id_problem(resource_id)
