"""Fault injection at the boto3 layer, for the demo and fault tests.

A rule answers a matching AWS call with an error instead of sending it, the way
AWS would (throttling, insufficient capacity), so the real retry and
compensation paths run. Off unless a worker is given rules.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError


@dataclass
class FaultRule:
    operation: str
    """botocore operation name, e.g. "StartInstances"; "*" for any."""
    code: str
    message: str = "injected fault"
    resource: str | None = None
    """Only calls whose parameters mention this id."""
    times: int | None = None
    """At most this many faults; None for unlimited."""
    probability: float = 1.0
    fired: int = field(default=0, init=False)


class FaultInjector:
    def __init__(self, rules: list[FaultRule], seed: int = 0) -> None:
        self.rules = rules
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}

    def install(self, session: boto3.Session) -> None:
        session.events.register("before-parameter-build", self._before_call)

    def _before_call(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        operation = model.name
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            for rule in self.rules:
                if rule.operation not in ("*", operation):
                    continue
                if rule.resource is not None and rule.resource not in repr(params):
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                raise ClientError({"Error": {"Code": rule.code, "Message": rule.message}}, operation)
