"""Every `workflow.patched` id of Reclaim's workflows, with when it came and when it may go.

Why patches are decided at the start of a run
---------------------------------------------
On replay a patch call is true only if the SDK has been told of the patch
marker *before* the call, and sdk-core tells of the markers of the workflow
task being replayed, no further. Live, sdk-core may send a workflow task's
completion at the instant a local activity resolves, so the local activity's
marker lands in one workflow task and every command the workflow issues on
its result (a patch marker among them) in the next. Replayed, the result is
delivered inside the first task, the patch call comes before the SDK has seen
its marker, answers false, and the marker later meets no command: a
nondeterminism error (`tests/histories/v3/demo_rightsize_flaky_nondeterministic.json`
is one, from a loaded `make demo`). Only the first activation of a run is
certain to have no local activity before it, so since DECIDED_AT_START one
patch, the generation's, is asked there, and a run of the generation takes every
earlier patch's branch without asking (`uses`). Later generations add their patch
ids to the same first activation.

Histories written before that (the v1..v3 generations) keep their lazy calls;
`legacy_patched` lets them replay when their marker landed one task late.

Deprecation: once no open execution predates a patch (the rollback window
is 7 days by default, approvals 24 h), its branch can use
`workflow.deprecate_patch` and, one release later, go.
"""

from __future__ import annotations

from typing import Final

from temporalio import workflow
from temporalio.common import SearchAttributeKey

#: Since 2026-11-30. Reads the cooldown from the store before approval. Deprecable once no
#: execution started before 2026-11-30 is open.
COOLDOWN: Final = "cooldown"
#: Since 2026-11-30. Re-applies the approval policy after a maintenance-window wait.
POLICY_AFTER_MAINTENANCE_WAIT: Final = "policy-after-maintenance-wait"
#: Since 2026-11-30. Releasing the lease waits until the lease workflow has closed.
AWAIT_LEASE_RELEASE: Final = "await-lease-release"
#: Since 2026-12-01. Read-model writes as local activities instead of activity tasks.
READ_MODEL_LOCAL_WRITES: Final = "read-model-local-writes"
#: Since 2026-12-02: the generation of this date. Every patch is decided in the first activation
#: of a run; one close step records every final status; a failed undo fails the run whatever
#: started it; a rollback asked while the resource is busy waits for the lease. Histories: tests/histories/v4/
DECIDED_AT_START: Final = "generation-2026-12-02"

#: Since 2026-12-05. A dry-run plan names its items' dry runs `dryrun-<rec>` (was `plan-<rec>`,
#: the same word as a plan's own `plan:<id>`). PlanWorkflow asks it lazily, at its first dry-run
#: item: a plan runs no local activity, so no timing can move its marker. Deprecable once no
#: plan started before 2026-12-05 is open (a dry-run plan waits for its approval, 24 h by default).
PLAN_DRY_RUN_IDS: Final = "plan-dry-run-ids"

#: Since 2026-12-05. A plan item of kind `manual` waits for a person's `confirm` or `fail` (or its
#: timeout) instead of running an execution (`workflows/plan_manual.py`). PlanWorkflow asks it lazily,
#: where it first meets a manual item (no local activity in a plan: no timing can move its marker).
#: Deprecable once no plan started before 2026-12-05 is open. Histories: tests/histories/v7/.
PLAN_MANUAL_STEPS: Final = "plan-manual-steps"

#: Since 2026-12-05 (evening). A plan tells people (`plan_awaiting_approval`, `plan_paused` at its error
#: threshold, `plan_finished` with its report's summary: route and deliveries as ordinary activities on
#: the records queue, `workflows/plan_telling.py`), and holds the items of an account the worker's
#: accounts file refuses now, checking each batch before it starts and the held ones on a timer
#: (`workflows/plan_holds.py`); and writes its outcomes behind, its store activities on a queue of
#: their own (`PlanLedger.write_behind`: a wedged read model stalled a plan at its first items).
#: Unlike the plan patches above, asked in the plan's first activation
#: (`PlanWorkflow.run`), so a plan is of one kind for its whole run and no later timing can move the
#: marker. Deprecable once no plan started before it is open. Histories: tests/histories/v9/plan_*.
PLAN_TELLS_AND_HOLDS: Final = "plan-tells-and-holds"

#: Since 2026-12-05: the generation of this date. Executions tell people (the notify file's
#: channels, `workflows/observers.py` Notifier). Asked in the first activation instead of
#: DECIDED_AT_START, whose branches it takes too. Histories: tests/histories/v6/.
NOTIFYING: Final = "generation-2026-12-05"

#: Since 2026-12-05 (afternoon): the generation that tells ahead. Reminders before an approval
#: times out, owners warned before a destructive change waiting for its window, a failed undo's
#: alarm repeated by `RollbackAlarmWorkflow` until acknowledged, and the recommender's own risk
#: inputs (Cost Optimization Hub's restartNeeded, rollbackPossible, implementationEffort) in the
#: score. Asked in the first activation instead of NOTIFYING, whose branches it takes too.
#: Histories: tests/histories/v8/.
TELLING_AHEAD: Final = "generation-2026-12-05-ahead"

#: Since 2026-12-05 (evening): the generation that times launches. A kind that declares a longer
#: apply (`ActionTraits.apply_deadline`: a DRS drill's launch may outlast MUTATE_DEADLINE) gets it as
#: the apply's deadline, with a heartbeat timeout; what the apply launched, and when (per server),
#: is kept in the execution's view (`launches`) for the plan report. A person's approval after a
#: maintenance wait also covers the change-window wait after it (older runs asked again there).
#: Asked in the first activation
#: instead of TELLING_AHEAD, whose branches it takes too. Histories: tests/histories/v9/.
TIMING_LAUNCHES: Final = "generation-2026-12-05-launches"

#: In the order they are asked at the start of a run.
EXECUTION_PATCHES: Final = (READ_MODEL_LOCAL_WRITES, COOLDOWN, POLICY_AFTER_MAINTENANCE_WAIT, AWAIT_LEASE_RELEASE)
PLAN_PATCHES: Final = (PLAN_DRY_RUN_IDS, PLAN_MANUAL_STEPS, PLAN_TELLS_AND_HOLDS)
#: The generations, newest first: a run asks the newest in its first activation, and an older
#: one only when replaying a history that lacks the newer marker.
GENERATIONS: Final = (TIMING_LAUNCHES, TELLING_AHEAD, NOTIFYING, DECIDED_AT_START)
ALL: Final = (*GENERATIONS, *EXECUTION_PATCHES, *PLAN_PATCHES)


_CHANGE_VERSION = SearchAttributeKey.for_keyword_list("TemporalChangeVersion")


def decide_at_start() -> None:
    """Ask the generation's patch now, in the run's first activation (see the module docstring).

    A new run records the newest generation's marker only. A replayed run of an older
    generation finds no such marker (the SDK remembers the "no"), and is asked for its own.
    A run of a generation takes every earlier patch's branch without asking for it: one
    marker (and one TemporalChangeVersion upsert) per execution instead of five of each.
    """
    for generation in GENERATIONS:
        if workflow.patched(generation):
            return


def decided_at_start() -> bool:
    """This run belongs to generation-2026-12-02 or a later one (answers remembered from the start)."""
    return any(workflow.patched(g) for g in GENERATIONS)


def notifies() -> bool:
    """This run tells people of its progress (generation-2026-12-05 or later)."""
    return any(workflow.patched(g) for g in (TIMING_LAUNCHES, TELLING_AHEAD, NOTIFYING))


def tells_ahead() -> bool:
    """This run reminds, warns owners, repeats its alarm and scores the recommender's risk inputs."""
    return any(workflow.patched(g) for g in (TIMING_LAUNCHES, TELLING_AHEAD))


def times_launches() -> bool:
    """This run gives a kind's apply the deadline the kind declares, and keeps what it launched."""
    return workflow.patched(TIMING_LAUNCHES)


def uses(patch_id: str) -> bool:
    """Whether this run takes `patch_id`'s branch: always in this generation (nothing is asked,
    nothing recorded), else as the history that is replayed says."""
    return decided_at_start() or workflow.patched(patch_id)


def _notified() -> set[str]:
    """The SDK's private record of the patch markers it has been told of (replay only).

    temporalio is pinned exactly, and tests/test_replay.py replays the history
    that needs this, so an SDK change here fails loudly.
    """
    notified: set[str] = getattr(workflow._Runtime.current(), "_patches_notified")  # noqa: B009
    return notified


def legacy_patched(patch_id: str, *, implied_by: str) -> bool:
    """`workflow.patched` for a lazy call in a history written before DECIDED_AT_START.

    A history whose run asked `implied_by` (a later patch) was written by code
    that always took `patch_id` at this point, live, so its marker is in the
    history, perhaps one workflow task further on than sdk-core looks. sdk-core
    applies that task's events before it activates the workflow again, so
    waiting cannot help: the answer is known, and the SDK is told it.
    """
    if workflow.unsafe.is_replaying() and workflow.patched(implied_by) and patch_id not in _notified():
        _notified().add(patch_id)
        used = workflow.patched(patch_id)
        # sdk-core, not having seen the marker, does not add the TemporalChangeVersion upsert it
        # added live right after it; on replay an upsert changes nothing and only has to match.
        workflow.upsert_search_attributes([_CHANGE_VERSION.value_set(sorted(_notified()))])
        return used
    return workflow.patched(patch_id)
