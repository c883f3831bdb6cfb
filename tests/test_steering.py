"""Both ways the CLI steers executions are one `Steering`: the same methods, the same signatures."""

from __future__ import annotations

import inspect

import pytest

from starter.api_client import ApiExecutions
from starter.executions import Executions
from starter.steering import Steering

# The static half is in starter/steering.py: `_both_steer` assigns each class to a Steering and
# mypy (over starter/) fails if a method is missing or typed apart.


OPERATIONS = sorted(name for name, member in vars(Steering).items()
                    if inspect.iscoroutinefunction(member) and not name.startswith("_"))


def test_the_protocol_has_the_operations_both_share() -> None:
    assert OPERATIONS == ["acknowledge", "cancel", "decide", "list_executions", "rollback", "save_recommendations", "start",
                          "status", "wait"]


@pytest.mark.parametrize("implementation", [Executions, ApiExecutions])
@pytest.mark.parametrize("name", OPERATIONS)
def test_each_implementation_has_each_operation_with_its_signature(implementation: type, name: str) -> None:
    wanted = inspect.signature(getattr(Steering, name), eval_str=True)
    method = getattr(implementation, name, None)
    assert inspect.iscoroutinefunction(method), f"{implementation.__name__}.{name} is not an async method"
    got = inspect.signature(method, eval_str=True)
    assert [(p.name, p.kind, p.default, p.annotation) for p in got.parameters.values()] == [
        (p.name, p.kind, p.default, p.annotation) for p in wanted.parameters.values()
    ], f"{implementation.__name__}.{name}{got} differs from Steering.{name}{wanted}"
    assert got.return_annotation == wanted.return_annotation, f"{implementation.__name__}.{name} returns apart"


def test_the_cli_knows_steering_only() -> None:
    import starter.cli
    import starter.cli_common

    for module in (starter.cli, starter.cli_common):
        source = inspect.getsource(module)
        assert "ApiExecutions." not in source.replace("ApiExecutions.from_env()", ""), module.__name__
        assert "api_configured()" not in source or module is starter.cli_common, module.__name__
