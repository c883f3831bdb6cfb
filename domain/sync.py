"""Keeping imported recommendations current: what a re-import or re-scan does to the stored ones.

Pure: `plan_sync` is given what the source returned now, what is stored (with whether it is
stale and whether an execution holds it), and the scope the source was asked about; it says
what to write, what to mark stale, and the counts a person reads. The rules:

- the same id (it derives from the source's own id) is updated in place, never duplicated;
  unchanged content is not written at all, so a re-import changes nothing;
- a stored recommendation of the same source, customer, accounts and regions that the source no
  longer returns is marked stale (a stale one returned again is fresh again, and counts as updated);
- a recommendation whose latest execution is active (or completed, still open for rollback) is
  never changed: neither updated nor marked stale;
- an id already used by another customer's recommendation is left alone and counted.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from domain.base import StrictModel
from domain.recommendation import Recommendation


class SyncScope(StrictModel):
    """What the source was asked about: only stored recommendations inside it can go stale."""

    source: str
    customer_id: str
    account_ids: list[str] = Field(default_factory=list, description="Empty: every account.")
    regions: list[str] = Field(default_factory=list, description="Empty: every region.")
    complete: bool = Field(default=True, description="The source's whole answer for this scope; False (a saved "
                           "file, which may hold a part of it): nothing goes stale.")

    def covers(self, rec: Recommendation) -> bool:
        return (self.complete and rec.source == self.source and rec.customer_id == self.customer_id
                and (not self.account_ids or rec.account_id in self.account_ids)
                and (not self.regions or rec.region in self.regions))


class Stored(StrictModel):
    recommendation: Recommendation
    stale: bool
    held: bool = Field(description="Its latest execution is active or completed: never changed.")


class SyncCounts(StrictModel):
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = Field(default=0, description="Marked stale by this sync (no longer returned).")
    held: int = Field(default=0, description="Returned or gone, but an execution holds it: left alone.")
    conflicts: int = Field(default=0, description="The id is another customer's recommendation: left alone.")


class SyncPlan(StrictModel):
    write: list[Recommendation] = Field(default_factory=list, description="New and updated (fresh again).")
    mark_stale: list[str] = Field(default_factory=list)
    counts: SyncCounts = Field(default_factory=SyncCounts)
    new_ids: list[str] = Field(default_factory=list)
    updated_ids: list[str] = Field(default_factory=list)
    stale_ids: list[str] = Field(default_factory=list)
    held_ids: list[str] = Field(default_factory=list)


def same_content(a: Recommendation, b: Recommendation) -> bool:
    return a.model_dump(mode="json") == b.model_dump(mode="json")


def plan_sync(incoming: Iterable[Recommendation], stored: Iterable[Stored], scope: SyncScope) -> SyncPlan:
    """What to write and what to mark stale; `stored` must hold every stored id in `incoming` and
    every stored recommendation inside `scope` (more is harmless)."""
    latest = {rec.id: rec for rec in incoming}  # a repeated id: the last one wins
    known = {s.recommendation.id: s for s in stored}
    plan = SyncPlan()
    counts = plan.counts
    for rec_id, rec in latest.items():
        before = known.get(rec_id)
        if before is None:
            plan.write.append(rec)
            plan.new_ids.append(rec_id)
            counts.new += 1
        elif before.recommendation.customer_id != rec.customer_id:
            counts.conflicts += 1
        elif before.held:
            plan.held_ids.append(rec_id)
            counts.held += 1
        elif before.stale or not same_content(before.recommendation, rec):
            plan.write.append(rec)
            plan.updated_ids.append(rec_id)
            counts.updated += 1
        else:
            counts.unchanged += 1
    for rec_id, before in sorted(known.items()):
        if rec_id in latest or before.stale or not scope.covers(before.recommendation):
            continue
        if before.held:
            plan.held_ids.append(rec_id)
            counts.held += 1
            continue
        plan.mark_stale.append(rec_id)
        plan.stale_ids.append(rec_id)
        counts.stale += 1
    return plan
