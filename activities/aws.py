"""Where credentials come from: the worker, at run time, never the workflow input.

The default boto3 chain (which also honours AWS_ENDPOINT_URL, so moto and
LocalStack work unchanged), or STS AssumeRole into the recommendation's account:
the role and external id the accounts file names for it (`activities/accounts.py`),
else the role ARN template. Clients are cached per account, region and service
(boto3 clients are thread-safe; building one costs milliseconds).

An assumed role's session is named after the execution making the call (the
activity's workflow id), so CloudTrail ties each call to its execution: a client's
credentials are chosen per request, by the calling activity, among credentials
cached per account, role and session name, which botocore refreshes before they
expire. A call made outside an activity (the gateway's coalesced describes and
batched stops, sent from their own thread for several executions at once; the CLI)
goes as `session_name`. Credentials stay in this process's memory: never in an
input, a history or a log line.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from temporalio import activity

from activities.gateway import DEFAULT_MAX_AGE, DEFAULT_VALIDATE_AGE, DEFAULT_WINDOW, Gateway
from activities.gateway.buckets import AwsBudget
from activities.gateway.ledger import LEDGER_LINE, CallLedger
from domain.accounts import AccountsFile

#: One connection per activity slot and then some: activities share a client per account,
#: region and service, and a smaller pool discards connections under load.
_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30,
    max_pool_connections=64,
)
#: Credentials of this many (account, role, session name) are kept; the least recently used go.
MAX_CACHED_CREDENTIALS = 1024
ASSUME_ROLE_SECONDS = 3600

SessionHook = Callable[[boto3.Session], None]
AccountsLookup = Callable[[], AccountsFile]

_NOT_IN_NAME = re.compile(r"[^\w+=,.@-]")


def current_session_name(default: str) -> str:
    """The RoleSessionName of a call made now: the calling activity's workflow id (the execution
    id), else `default`; AWS allows 2-64 of `[\\w+=,.@-]`, so a longer id keeps a hash of itself."""
    name = default
    if activity.in_activity():
        name = activity.info().workflow_id or default
    name = _NOT_IN_NAME.sub("-", name)
    if len(name) > 64:
        name = f"{name[:55]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return name if len(name) >= 2 else f"{name}--"


class _PerCallCredentials(Credentials):
    """An account's credentials as the calling execution's session: botocore asks at each request."""

    def __init__(self, account_id: str, current: Callable[[], Credentials]) -> None:
        self.account_id = account_id
        self.method = "reclaim-assume-role"
        self._current = current

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        return self._current().get_frozen_credentials()

    @property
    def access_key(self) -> str:
        return str(self.get_frozen_credentials().access_key)

    @property
    def secret_key(self) -> str:
        return str(self.get_frozen_credentials().secret_key)

    @property
    def token(self) -> str | None:
        return self.get_frozen_credentials().token


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
        read_max_age: float = DEFAULT_MAX_AGE,
        validate_read_age: float = DEFAULT_VALIDATE_AGE,
        patient_window: float = 0.0,
        accounts: AccountsLookup | None = None,
        session_name: str = "reclaim",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`accounts`: the accounts file as it is now (`AccountsSource`); `session_name`: of calls
        made outside an activity; `clock`: when credentials expire (tests move it)."""
        self._role_arn_template = role_arn_template
        self.endpoint_url = endpoint_url
        self._hooks = list(session_hooks or [])
        self.budget = budget
        self._coalesce_window = coalesce_window
        self._read_max_age = read_max_age
        self._validate_read_age = validate_read_age
        self._patient_window = patient_window
        self._accounts = accounts
        self.session_name = session_name
        self._clock = clock or (lambda: datetime.now(UTC))
        self._gateways: dict[tuple[str, str], Gateway] = {}
        self.ledger = CallLedger()
        """Where this worker's AWS requests go, by phase and operation (logged at shutdown)."""
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], boto3.Session] = {}
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._making: dict[tuple[str, str, str], threading.Lock] = {}
        self._credentials: OrderedDict[tuple[str, str, str], RefreshableCredentials] = OrderedDict()
        self._base: botocore.session.Session | None = None
        self._sts: Any = None

    def client(self, account_id: str, region: str, service: str) -> Any:
        key = (account_id, region, service)
        with self._lock:
            cached = self._clients.get(key)
            if cached is not None:
                return cached
            making = self._making.setdefault(key, threading.Lock())
        # One thread builds it while the others wait: a plan's first executions in a region ask at
        # once, and each building its own client cost about 0.3 s of CPU (botocore loads the
        # service model) for a client then thrown away (py-spy, race N=100: 5% of the worker).
        with making:
            with self._lock:
                cached = self._clients.get(key)
                if cached is not None:
                    return cached
            session = self._session(account_id, region)
            client = self.gateway(account_id, region).wrap(service, session.client(
                service, region_name=region, endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG
            ))
            with self._lock:
                return self._clients.setdefault(key, client)

    def gateway(self, account_id: str, region: str) -> Gateway:
        """The one gateway of this worker for that account and region (activities/gateway)."""
        with self._lock:
            return self._gateways.setdefault(
                (account_id, region), Gateway(self._coalesce_window, self.budget, account_id, region, self.ledger,
                                                self._read_max_age, validate_age=self._validate_read_age,
                                                patient_window=self._patient_window))

    def economy(self) -> list[str]:
        """One line per account and region: what coalescing saved and what the budget spent."""
        with self._lock:
            gateways = dict(self._gateways)
        lines = []
        for (account, region), gateway in sorted(gateways.items()):
            stats = gateway.stats
            merged = ", ".join(f"{op} {stats.asked[op]} asked in {stats.sent[op]} calls" for op in sorted(stats.asked))
            fresh = ", ".join(f"{op} {n}" for op, n in sorted(gateway.remembered().items()))
            lines.append(f"{account}/{region}: {merged or 'no coalesced call'}"
                         f"; answered fresh without a call: {fresh or 'none'}")
        if self.budget is not None:
            spent = ", ".join(f"{bucket} {n}" for bucket, n in sorted(self.budget.spent.items()))
            lines.append(f"AWS budget spent: {spent or 'nothing'}; waited {self.budget.waited_seconds:.1f} s")
        remembered: dict[str, int] = {}
        for gateway in gateways.values():
            for op, n in gateway.remembered().items():
                remembered[op] = remembered.get(op, 0) + n
        report = {**self.ledger.report(), "remembered": remembered}
        lines.append(f"{LEDGER_LINE}{json.dumps(report, separators=(',', ':'))}")
        return lines

    def role(self, account_id: str) -> tuple[str, str | None] | None:
        """The role ARN assumed for the account and its external id's reference; None: the default chain."""
        accounts = self._accounts() if self._accounts is not None else None
        account = accounts.get(account_id) if accounts is not None else None
        if accounts is not None and account is not None:
            arn = accounts.role_arn(account)
            if arn is not None:
                return arn, accounts.external_id(account)
        if self._role_arn_template:
            return self._role_arn_template.format(account_id=account_id), None
        return None

    def _session(self, account_id: str, region: str) -> boto3.Session:
        key = (account_id, region)
        with self._lock:
            cached = self._sessions.get(key)
            if cached is not None:
                return cached
        built = self._build(account_id, region)
        for hook in self._hooks:
            hook(built)
        self.ledger.hook(built)
        if self.budget is not None:
            self.budget.hook(account_id, region)(built)
        with self._lock:
            return self._sessions.setdefault(key, built)

    def _build(self, account_id: str, region: str) -> boto3.Session:
        """The default chain's session, or one whose credentials are those of the calling
        execution's assumed-role session (decided per request, so one client serves them all)."""
        if self.role(account_id) is None:
            return boto3.Session(region_name=region)
        core = botocore.session.Session()
        core.register_component("data_loader", self._base_session().get_component("data_loader"))
        core._credentials = _PerCallCredentials(account_id, lambda: self.credentials(account_id))
        return boto3.Session(botocore_session=core, region_name=region)

    def credentials(self, account_id: str, name: str | None = None) -> Credentials:
        """The account's assumed-role credentials for session `name` (default: the calling
        execution's), assumed once and refreshed by botocore before they expire."""
        found = self.role(account_id)
        if found is None:
            raise LookupError(f"no role to assume in account {account_id}")
        role_arn, external_ref = found
        key = (account_id, role_arn, name or current_session_name(self.session_name))
        with self._lock:
            cached = self._credentials.get(key)
            if cached is not None:
                self._credentials.move_to_end(key)
                return cached
        fetch = lambda: self._assume(role_arn, external_ref, key[2])  # noqa: E731
        first = fetch()
        creds = RefreshableCredentials(first["access_key"], first["secret_key"], first["token"],
                                       datetime.fromisoformat(first["expiry_time"]), fetch, "sts-assume-role",
                                       time_fetcher=self._clock)
        with self._lock:
            creds = self._credentials.setdefault(key, creds)
            while len(self._credentials) > MAX_CACHED_CREDENTIALS:
                self._credentials.popitem(last=False)
        return creds

    def _assume(self, role_arn: str, external_ref: str | None, name: str) -> dict[str, Any]:
        from activities.notify.config import resolve

        extra = {"ExternalId": resolve(external_ref)} if external_ref else {}
        answer = self._sts_client().assume_role(RoleArn=role_arn, RoleSessionName=name,
                                                DurationSeconds=ASSUME_ROLE_SECONDS, **extra)["Credentials"]
        return {"access_key": answer["AccessKeyId"], "secret_key": answer["SecretAccessKey"],
                "token": answer["SessionToken"], "expiry_time": answer["Expiration"].isoformat()}

    def _base_session(self) -> botocore.session.Session:
        with self._lock:
            if self._base is None:
                self._base = botocore.session.get_session()
            return self._base

    def _sts_client(self) -> Any:
        base = self._base_session()
        with self._lock:
            if self._sts is None:
                self._sts = base.create_client("sts", region_name=base.get_config_variable("region") or "us-east-1",
                                               endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG)
            return self._sts
