"""AWS's throttling buckets, modelled so that Reclaim spends its own before AWS refuses.

AWS throttles per account and region, by *bucket*, not by operation name: every
mutating EC2 action shares one bucket (50 tokens, 5/s), describes share another
(100, 20/s), and a few actions have their own. A budget keyed by operation would
give `StopInstances`, `ModifyVolume` and `ReleaseAddress` 5/s each against
AWS's one shared 5/s. Figures: "Request throttling for the Amazon EC2 API" and
the RDS quotas page; the other services' figures are their published
transactions-per-second quotas, rounded down.

The budget is per worker process. Several workers share an account's buckets by
`share` (1 / the number of workers, `RECLAIM_AWS_BUDGET_SHARE`); see the
README's "AWS API budget".
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Read-only operations: they spend a describe bucket, never a mutating one.
READ_PREFIXES = ("Describe", "Get", "List", "Head", "Lookup", "Search", "Check")


def is_mutating(operation: str) -> bool:
    return not operation.startswith(READ_PREFIXES)


@dataclass(frozen=True)
class Rate:
    capacity: float
    refill_per_second: float


#: bucket name -> AWS's documented capacity and refill rate (per account and region).
AWS_RATES: Mapping[str, Rate] = {
    "ec2-describe": Rate(100, 20),
    "ec2-describe-unfiltered": Rate(50, 10),
    "ec2-mutating": Rate(50, 5),
    "ec2-CreateSnapshot": Rate(100, 5),
    "ec2-DeleteVolume": Rate(100, 5),
    "ec2-tags": Rate(100, 10),
    "ec2-StartInstances": Rate(5, 2),
    "rds": Rate(300, 12),
    "autoscaling": Rate(40, 8),
    "lambda": Rate(15, 15),
    "dynamodb": Rate(50, 10),
    "logs": Rate(50, 10),
    "s3": Rate(100, 50),
    "sts": Rate(100, 50),
    "other": Rate(20, 5),
}

_EC2_OWN_BUCKETS = {"CreateSnapshot": "ec2-CreateSnapshot", "DeleteVolume": "ec2-DeleteVolume",
                    "CreateTags": "ec2-tags", "DeleteTags": "ec2-tags", "StartInstances": "ec2-StartInstances"}
_UNFILTERED_CAPABLE = {"DescribeInstances": "InstanceIds", "DescribeVolumes": "VolumeIds"}


def bucket_of(service: str, operation: str, params: Mapping[str, Any]) -> str:
    """The AWS bucket a call spends (AWS's rules, as aws-race's mockaws.py emulates them)."""
    if service == "ec2":
        if operation in _EC2_OWN_BUCKETS:
            return _EC2_OWN_BUCKETS[operation]
        if not is_mutating(operation):
            ids = _UNFILTERED_CAPABLE.get(operation)
            if ids and not (params.get("Filters") or params.get(ids) or params.get("MaxResults")):
                return "ec2-describe-unfiltered"
            return "ec2-describe"
        return "ec2-mutating"
    return service if service in AWS_RATES else "other"


def filtered_bucket_of(service: str, operation: str) -> str:
    """The bucket of a call that names what it reads (ids or filters): the gateway's own calls,
    and a throttle answer whose request is no longer at hand."""
    return bucket_of(service, operation, {"Filters": True})


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class AwsBudget:
    """Token buckets per (account, region, bucket), shared by every activity thread of a worker.

    `acquire` waits for a token instead of letting AWS refuse the call; `throttled` empties
    the bucket when AWS refused one anyway (someone else spends the same account's budget),
    so the retry waits for the bucket's refill instead of a blind backoff.
    """

    share: float = 1.0
    headroom: float = 0.95
    """Of AWS's refill rate, what the budget spends: requests reach AWS with jitter (a slow
    connection, a retry), and a bucket spent to its last token is overrun by the first early one."""
    rates: Mapping[str, Rate] = field(default_factory=lambda: dict(AWS_RATES))
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    waited_seconds: float = field(default=0.0, init=False)
    spent: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError("a budget share is in (0, 1]: 1 / the number of workers sharing the account")
        if not 0 < self.headroom <= 1:
            raise ValueError("headroom is the share of AWS's refill rate spent, in (0, 1]")
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self._prepaid = threading.local()

    def _rate(self, bucket: str) -> Rate:
        rate = self.rates.get(bucket) or self.rates["other"]
        return Rate(max(rate.capacity * self.share, 1.0), rate.refill_per_second * self.share * self.headroom)

    @contextlib.contextmanager
    def paid(self, account_id: str, region: str, bucket_name: str) -> Iterator[None]:
        """Wait for a token now; the next request this thread sends to that bucket spends it.
        The gateway pays for a batch before it closes it, so callers can join while it waits."""
        self.acquire(account_id, region, bucket_name)
        self._prepaid.key = (account_id, region, bucket_name)
        try:
            yield
        finally:
            self._prepaid.key = None

    def _spend(self, account_id: str, region: str, bucket_name: str) -> None:
        if getattr(self._prepaid, "key", None) == (account_id, region, bucket_name):
            self._prepaid.key = None  # paid by the gateway before the batch closed
            return
        self.acquire(account_id, region, bucket_name)

    def _refilled(self, key: tuple[str, str, str], now: float) -> _Bucket:
        rate = self._rate(key[2])
        bucket = self._buckets.setdefault(key, _Bucket(rate.capacity, now))
        bucket.tokens = min(rate.capacity, bucket.tokens + (now - bucket.updated) * rate.refill_per_second)
        bucket.updated = now
        return bucket

    def acquire(self, account_id: str, region: str, bucket_name: str) -> float:
        """Take one token, waiting until there is one; returns how long it waited."""
        key, waited = (account_id, region, bucket_name), 0.0
        while True:
            with self._lock:
                bucket = self._refilled(key, self.clock())
                if bucket.tokens >= 1.0 - 1e-9:  # float dust must not make a waiter spin
                    bucket.tokens = max(bucket.tokens - 1.0, 0.0)
                    self.spent[bucket_name] = self.spent.get(bucket_name, 0) + 1
                    self.waited_seconds += waited
                    return waited
                pause = (1.0 - bucket.tokens) / self._rate(bucket_name).refill_per_second
            self.sleep(pause)
            waited += pause

    def throttled(self, account_id: str, region: str, bucket_name: str) -> None:
        """AWS refused a call of this bucket: it is empty whatever we counted."""
        with self._lock:
            self._refilled((account_id, region, bucket_name), self.clock()).tokens = 0.0

    def hook(self, account_id: str, region: str) -> Callable[[Any], None]:
        """A boto3 session hook: spend before every request sent (retries included), and empty
        the bucket when AWS answers with a throttle."""

        def before_send(request: Any, event_name: str, **_: Any) -> None:
            service, operation = event_name.split(".", 2)[1:]
            self._spend(account_id, region, bucket_of(service, operation, _request_params(request)))

        def needs_retry(event_name: str, response: Any = None, **_: Any) -> None:
            parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else None
            code = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
            if code in THROTTLE_CODES:
                service, operation = event_name.split(".", 2)[1:]
                self.throttled(account_id, region, filtered_bucket_of(service, operation))
            # None: botocore's own retry handler decides whether and when to retry

        def install(session: Any) -> None:
            session.events.register("before-send", before_send)
            session.events.register("needs-retry", needs_retry)

        return install


def _request_params(request: Any) -> dict[str, Any]:
    """Enough of a query-protocol body to tell a filtered describe from an unfiltered one."""
    body = getattr(request, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str):
        return {}
    keys = {part.split("=", 1)[0].split(".", 1)[0] for part in body.split("&")}
    found: dict[str, Any] = {}
    for key, name in (("Filter", "Filters"), ("InstanceId", "InstanceIds"), ("VolumeId", "VolumeIds"),
                      ("MaxResults", "MaxResults")):
        if key in keys:
            found[name] = True
    return found


THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException",
                            "RequestThrottled", "SlowDown", "RequestThrottledException"})
