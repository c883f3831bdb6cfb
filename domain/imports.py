"""An import or scan run as a workflow (`ImportWorkflow`, started by hand, by the API or by a Temporal
Schedule): what it is asked, and what it answers. Pure.

The answer carries the counts a person reads after `reclaim import --save` (new, updated, unchanged,
newly stale, held by an execution; unsupported by reason, invalid by field) and, when a dry-run plan
was asked for, the plan opened on the recommendations that are NEW (no execution yet, not stale).
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum

from pydantic import Field, model_validator

from domain.base import StrictModel
from domain.plan import MAX_ITEMS, Strategy
from domain.policy import Policy
from domain.recommendation import ID_PATTERN
from domain.sources import ImportReport
from domain.sync import SyncCounts

#: How `domain.sources` and `activities.sources.checked` word a recommendation whose fields are invalid.
INVALID_PREFIX = "invalid "

ACCOUNT_PATTERN = r"^[0-9]{12}$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-[0-9]$"


class ImportSource(StrEnum):
    """Where a scheduled or API import reads: the three AWS recommenders, Reclaim's scanner, a saved file."""

    COH = "coh"
    CO = "co"
    TA = "ta"
    SCAN = "scan"
    FILE = "file"


class ImportPlan(StrictModel):
    """Open a dry-run plan of the NEW recommendations; it waits for a person's approval."""

    max_items: int = Field(default=50, ge=1, le=MAX_ITEMS,
                           description="At most this many, the largest monthly savings first.")
    strategy: Strategy = Field(default=Strategy.PARALLEL, description="Not `waves` (that needs named waves).")

    @model_validator(mode="after")
    def _no_waves(self) -> ImportPlan:
        if self.strategy is Strategy.WAVES:
            raise ValueError("strategy `waves` needs named waves: use sequential, parallel, by_region or "
                             "by_resource_type")
        return self


class ImportInput(StrictModel):
    """One import (or scan) as the workflow runs it; a schedule's action carries one of these."""

    source: ImportSource
    customer_id: str = Field(pattern=ID_PATTERN)
    account_ids: list[str] = Field(default_factory=list, max_length=100,
                                   description="Empty: the credentials' own account.")
    regions: list[str] = Field(default_factory=list, max_length=50,
                               description="Empty: the worker's configured region (Compute Optimizer, scan).")
    file: str | None = Field(default=None, max_length=4096, description="With source `file`: a path on the worker.")
    lookback_days: int | None = Field(default=None, ge=1, le=455, description="Scan only.")
    requested_by: str = Field(min_length=1, max_length=128)
    policy: Policy = Field(default_factory=Policy, description="Protection tags for the scan, approval for the plan.")
    plan: ImportPlan | None = Field(default=None, description="None: import only.")
    schedule: str | None = Field(default=None, description="The schedule that started it, if one did.")

    @model_validator(mode="after")
    def _coherent(self) -> ImportInput:
        if (self.source is ImportSource.FILE) != (self.file is not None):
            raise ValueError("`file` goes with source `file`, and source `file` needs `file`")
        if self.lookback_days is not None and self.source is not ImportSource.SCAN:
            raise ValueError("`lookback_days` is for source `scan` only")
        return self


class ImportCounts(SyncCounts):
    """What the import did to the read model, and what it found but cannot execute (yet)."""

    unsupported: dict[str, int] = Field(default_factory=dict, description="Not executable yet, by reason.")
    invalid: dict[str, int] = Field(default_factory=dict, description="Invalid, by field.")


class ImportResult(StrictModel):
    """The workflow's result."""

    source: str = Field(description="The source's own name, e.g. cost-optimization-hub, reclaim-scan.")
    customer_id: str
    counts: ImportCounts
    found: int = Field(description="Executable recommendations the source returned.")
    new_ids: list[str] = Field(default_factory=list, description="NEW ones (no execution yet, not stale), the "
                                                                  "largest savings first.")
    planned: int = Field(default=0, description="Recommendations in the dry-run plan.")
    plan_id: str | None = None
    plan_note: str | None = Field(default=None, description="Why no plan was opened, when one was asked for.")


def not_executable_counts(report: ImportReport) -> dict[str, dict[str, int]]:
    """`unsupported` by reason, `invalid` by field: what was found and cannot be executed (yet)."""
    unsupported: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    for n in report.not_executable:
        if n.reason.startswith(INVALID_PREFIX):
            for name in n.reason.removeprefix(INVALID_PREFIX).split(", "):
                invalid[name] += n.count
        else:
            unsupported[n.reason] += n.count
    return {"unsupported": dict(sorted(unsupported.items())), "invalid": dict(sorted(invalid.items()))}


def import_counts(report: ImportReport, synced: SyncCounts) -> ImportCounts:
    return ImportCounts(**synced.model_dump(), **not_executable_counts(report))
