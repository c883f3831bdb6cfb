"""Where recommendations come from: one module per source, found by a small registry.

Each live source module registers a `Source`: the boto3 service it reads, the region its API
lives in (None: one client per region asked for), and `fetch(client, filters)`, which pages
through the API and returns the items as `domain.sources.SourceItem`s. What they map to is
decided in `domain.sources` (pure); `import_live` puts the two together. Clients come from the
same `SessionFactory` the actions use (for these services it returns the plain boto3 client).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field

from activities.aws import SessionFactory
from activities.errors import client_error_code
from domain.base import StrictModel
from domain.recommendation import Recommendation
from domain.sources import ImportContext, ImportReport, Skipped, SourceItem, build_report, import_report

#: The account key used for the caller's own credentials when no account is named.
OWN_ACCOUNT = "self"


class SourceFilters(StrictModel):
    """What to import. Empty lists mean everything the credentials can see."""

    account_ids: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    action_types: list[str] = Field(default_factory=list, description="Cost Optimization Hub only.")
    resource_types: list[str] = Field(default_factory=list, description="Cost Optimization Hub only.")
    tags: dict[str, str] = Field(default_factory=dict, description="Cost Optimization Hub only.")


class SourceError(Exception):
    """The source refused or failed (not enrolled, access denied, throttled): one line for a person."""


Fetch = Callable[[Any, SourceFilters], list[SourceItem]]


@dataclass(frozen=True)
class Source:
    name: str
    service: str
    fetch: Fetch
    home_region: str | None = None
    """Where the API lives (Cost Optimization Hub, Trusted Advisor: us-east-1); None: regional."""


_REGISTRY: dict[str, Source] = {}
_loaded = False


def register(source: Source) -> Source:
    if source.name in _REGISTRY and _REGISTRY[source.name] is not source:
        raise TypeError(f"source {source.name} registered twice")
    _REGISTRY[source.name] = source
    return source


def registry() -> dict[str, Source]:
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True
    return dict(_REGISTRY)


def source(name: str) -> Source:
    found = registry().get(name)
    if found is None:
        raise LookupError(f"unknown source {name!r} (known: {', '.join(sorted(registry()))})")
    return found


def pages(call: Callable[..., dict[str, Any]], list_key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a `nextToken`-paged list operation, page after page."""
    token: str | None = None
    while True:
        page = call(**kwargs, **({"nextToken": token} if token else {}))
        yield from page.get(list_key) or []
        token = page.get("nextToken")
        if not token:
            return


def fetch_items(sessions: SessionFactory, name: str, filters: SourceFilters,
                default_region: str | None = None) -> list[SourceItem]:
    """Every item of the source across the accounts and regions asked for."""
    src = source(name)
    accounts = filters.account_ids or [OWN_ACCOUNT]
    if src.home_region is not None:
        regions = [src.home_region]
    elif filters.regions or default_region:
        regions = filters.regions or [default_region or ""]
    else:
        raise SourceError(f"{name} is regional: name a region")
    items: list[SourceItem] = []
    for account in accounts:
        for region in regions:
            client = sessions.client(account, region, src.service)
            scoped = filters.model_copy(update={
                "account_ids": [] if account == OWN_ACCOUNT else [account],
                "regions": filters.regions if src.home_region is not None else [region]})
            try:
                items.extend(src.fetch(client, scoped))
            except ClientError as exc:
                message = exc.response.get("Error", {}).get("Message", "")
                raise SourceError(f"{name} in {account}/{region}: {client_error_code(exc)}: {message}") from None
            except BotoCoreError as exc:
                raise SourceError(f"{name} in {account}/{region}: {exc}") from None
    return items


def import_live(sessions: SessionFactory, name: str, filters: SourceFilters, ctx: ImportContext,
                default_region: str | None = None) -> ImportReport:
    """Fetch from the source and map: what Reclaim can execute, and what it cannot yet, counted."""
    report = import_report(source(name).name, fetch_items(sessions, name, filters, default_region), ctx)
    return checked(narrowed(report, filters))


def checked(report: ImportReport) -> ImportReport:
    """Only what `reclaim execute` would start: each kind checks its resource id's form and its
    params (as `starter.executions.check_recommendation` does); the rest is counted with the reason."""
    from activities.actions.base import action_class, resource_id_problem
    from activities.errors import Refused

    outcomes: list[Recommendation | Skipped] = []
    for rec in report.recommendations:
        kind = action_class(rec.kind)
        problem = None
        if resource_id_problem(kind.resource_type, rec.resource_id) is not None:
            problem = f"not a {kind.resource_type} id or name as {rec.kind} needs"
        else:
            try:
                kind.parse_params(rec.params)
            except Refused as exc:
                problem = str(exc)
        outcomes.append(rec if problem is None else Skipped(
            source=rec.source, action_type=rec.kind, resource_type=kind.resource_type, reason=problem))
    again = build_report(report.source, outcomes)
    return again.model_copy(update={"not_executable": sorted(
        [*report.not_executable, *again.not_executable], key=lambda n: (n.action_type, n.resource_type, n.reason))})


def narrowed(report: ImportReport, filters: SourceFilters) -> ImportReport:
    """The recommendations in the accounts and regions asked for (sources that cannot filter
    by them natively return more)."""
    keep = [
        r for r in report.recommendations
        if (not filters.account_ids or r.account_id in filters.account_ids)
        and (not filters.regions or r.region in filters.regions)
    ]
    return report.model_copy(update={"recommendations": keep})
