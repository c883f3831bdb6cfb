"""Where credentials come from: the worker, at run time, never the workflow input.

The default boto3 chain (which also honours AWS_ENDPOINT_URL, so moto and
LocalStack work unchanged), or STS AssumeRole into the recommendation's account
when a role ARN template is configured. Clients are cached per account, region
and service (boto3 clients are thread-safe; building one costs milliseconds),
and rebuilt before assumed-role credentials expire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from activities.gateway import DEFAULT_WINDOW, Gateway
from activities.gateway.buckets import AwsBudget

#: One connection per activity slot and then some: activities share a client per account,
#: region and service, and a smaller pool discards connections under load.
_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30,
    max_pool_connections=64,
)
_REFRESH_MARGIN_SECONDS = 300.0

SessionHook = Callable[[boto3.Session], None]


class SessionFactory:
    """Gives activities boto3 clients for an account and region."""

    def __init__(
        self,
        *,
        role_arn_template: str | None = None,
        endpoint_url: str | None = None,
        session_hooks: list[SessionHook] | None = None,
        budget: AwsBudget | None = None,
        coalesce_window: float = DEFAULT_WINDOW,
    ) -> None:
        self._role_arn_template = role_arn_template
        self.endpoint_url = endpoint_url
        self._hooks = list(session_hooks or [])
        self.budget = budget
        self._coalesce_window = coalesce_window
        self._gateways: dict[tuple[str, str], Gateway] = {}
        self._lock = threading.Lock()
        # (account, region) -> (session, monotonic expiry or inf)
        self._sessions: dict[tuple[str, str], tuple[boto3.Session, float]] = {}
        self._clients: dict[tuple[str, str, str], tuple[Any, float]] = {}

    def client(self, account_id: str, region: str, service: str) -> Any:
        key = (account_id, region, service)
        now = time.monotonic()
        with self._lock:
            cached = self._clients.get(key)
            if cached is not None and cached[1] > now:
                return cached[0]
        session, expiry = self._session(account_id, region)
        client = self.gateway(account_id, region).wrap(service, session.client(
            service, region_name=region, endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG
        ))
        with self._lock:
            self._clients[key] = (client, expiry)
        return client

    def gateway(self, account_id: str, region: str) -> Gateway:
        """The one gateway of this worker for that account and region (activities/gateway)."""
        with self._lock:
            return self._gateways.setdefault(
                (account_id, region), Gateway(self._coalesce_window, self.budget, account_id, region))

    def economy(self) -> list[str]:
        """One line per account and region: what coalescing saved and what the budget spent."""
        with self._lock:
            gateways = dict(self._gateways)
        lines = []
        for (account, region), gateway in sorted(gateways.items()):
            stats = gateway.stats
            merged = ", ".join(f"{op} {stats.asked[op]} asked in {stats.sent[op]} calls" for op in sorted(stats.asked))
            lines.append(f"{account}/{region}: {merged or 'no coalesced call'}")
        if self.budget is not None:
            spent = ", ".join(f"{bucket} {n}" for bucket, n in sorted(self.budget.spent.items()))
            lines.append(f"AWS budget spent: {spent or 'nothing'}; waited {self.budget.waited_seconds:.1f} s")
        return lines

    def _session(self, account_id: str, region: str) -> tuple[boto3.Session, float]:
        key = (account_id, region)
        now = time.monotonic()
        with self._lock:
            cached = self._sessions.get(key)
            if cached is not None and cached[1] > now:
                return cached
        built = self._build(account_id, region)
        for hook in self._hooks:
            hook(built[0])
        if self.budget is not None:
            self.budget.hook(account_id, region)(built[0])
        with self._lock:
            self._sessions[key] = built
        return built

    def _build(self, account_id: str, region: str) -> tuple[boto3.Session, float]:
        base = boto3.Session(region_name=region)
        if not self._role_arn_template:
            return base, float("inf")
        sts = base.client(
            "sts", region_name=region, endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG
        )
        creds = sts.assume_role(
            RoleArn=self._role_arn_template.format(account_id=account_id),
            RoleSessionName="reclaim",
        )["Credentials"]
        lifetime = creds["Expiration"].timestamp() - time.time()
        session = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name=region,
        )
        return session, time.monotonic() + max(lifetime - _REFRESH_MARGIN_SECONDS, 0.0)
