"""A shared budget for mutating AWS calls, per account and region, below EC2's throttling buckets.

EC2 throttles each account per region and per API action with token buckets;
a mutating action's bucket holds 50 tokens refilled at 5 per second (the
documented default, "Request throttling for the Amazon EC2 API"). A big plan with many items at
once would drain it and meet RequestLimitExceeded storms: every item then
retries, and the retries drain it again. The worker therefore spends its own
bucket first, one per (account, region), shared by every activity thread of
the process, and waits for a token instead of being throttled. Buckets are
kept per (account, region, operation), as AWS keeps them. Set the rate
below AWS's when several workers (or other tools) share the account.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

#: Read-only operations do not spend the mutation budget.
_READ_PREFIXES = ("Describe", "Get", "List", "Head", "Lookup", "Search", "Check")


def is_mutating(operation: str) -> bool:
    return not operation.startswith(_READ_PREFIXES)


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class MutationBudget:
    rate_per_second: float = 5.0
    burst: int = 50
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    waited_seconds: float = field(default=0.0, init=False)
    spent: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.rate_per_second <= 0 or self.burst < 1:
            raise ValueError("a mutation budget needs a positive rate and a burst of at least 1")
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}

    def acquire(self, account_id: str, region: str, operation: str) -> float:
        """Take one token for this account, region and operation, waiting until one is there; returns the wait."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                bucket = self._buckets.setdefault((account_id, region, operation), _Bucket(float(self.burst), now))
                bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate_per_second)
                bucket.updated = now
                if bucket.tokens >= 1.0 - 1e-9:  # float dust must not make a waiter spin
                    bucket.tokens = max(bucket.tokens - 1.0, 0.0)
                    self.spent += 1
                    self.waited_seconds += waited
                    return waited
                pause = (1.0 - bucket.tokens) / self.rate_per_second
            self.sleep(pause)
            waited += pause

    def hook(self, account_id: str, region: str) -> Callable[[boto3.Session], None]:
        """A session hook that spends a token before every mutating call of that session."""

        def before_call(model: Any, **_: Any) -> None:
            if is_mutating(model.name):
                self.acquire(account_id, region, model.name)

        def install(session: boto3.Session) -> None:
            session.events.register("before-call", before_call)

        return install
