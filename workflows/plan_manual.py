"""A plan's manual items: each waits for a person's `confirm` or `fail`, or for its timeout.

Signals and updates reach `decide`; an update's validator asks `refusal` first, so a
refused update never enters the history, while a refused signal is kept among the
plan's events with its reason. The decision itself (who, role, comment, evidence)
is the signal's or update's input, in the history; the plan's view keeps it too,
and the report is built from the view.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.manual import (
        AWAITING_CONFIRMATION,
        CONFIRMED,
        MANUAL_FAILED,
        TIMED_OUT,
        ManualDecision,
        ManualProgress,
        ManualStep,
        manual_refusal,
    )
    from domain.plan import ItemState
    from domain.signing import manual_decision, signature_refusal
    from domain.status import ExecutionStatus
    from workflows.plan_ledger import PlanLedger


class ManualItems:
    def __init__(self, ledger: PlanLedger, aborted: Callable[[], bool], public_keys: list[str]) -> None:
        self._ledger = ledger
        self._aborted = aborted
        self._public_keys = public_keys
        """The plan policy's approval keys: with any, only answers Reclaim signed count (domain/signing.py)."""
        self._answers: dict[str, tuple[bool, ManualDecision]] = {}
        """Accepted answers not yet taken by their waiting item."""

    def _progress(self, item_id: str) -> ManualProgress | None:
        return next((m for m in self._ledger.view.manual if m.id == item_id), None)

    def refusal(self, decision: ManualDecision, confirm: bool) -> str | None:
        if decision.item in self._answers:  # accepted in this very workflow task
            return f"manual item {decision.item} has just been answered by {self._answers[decision.item][1].actor}"
        refusal = manual_refusal(self._ledger.view.plan_id, self._progress(decision.item), decision, confirm)
        return refusal or signature_refusal(self._public_keys, workflow.info().workflow_id, manual_decision(confirm),
                                            decision, workflow.now())

    def decide(self, decision: ManualDecision, confirm: bool, via: str) -> str:
        verb = "confirm" if confirm else "fail"
        refusal = self.refusal(decision, confirm)
        if refusal:
            self._ledger.event(f"{verb} of manual item {decision.item} by {decision.actor} via {via} refused: "
                               f"{refusal}")
            return refusal
        self._answers[decision.item] = (confirm, decision)
        step = self._progress(decision.item)
        if step is not None:
            step.decided_via = via
        return f"plan {self._ledger.view.plan_id}: manual item {decision.item} {verb}ed"

    def planned(self, step: ManualStep) -> tuple[str, str]:
        """A dry run changes nothing and asks nobody: the item runs (waits) once the plan is approved."""
        progress = self._progress(step.id)
        if progress is not None:
            progress.status = ExecutionStatus.PLANNED.value
        return ExecutionStatus.PLANNED.value, "manual item: waits for a person's confirmation when the plan runs"

    async def wait(self, step: ManualStep) -> tuple[str, str]:
        """Wait for the answer, the timeout or the plan's abort; the item's status and reason."""
        ledger, now = self._ledger, workflow.now()
        progress = self._progress(step.id)
        if progress is None:  # a view from before the item was known (not written by today's submit)
            progress = ManualProgress(id=step.id, wave=ledger.cursor.wave, role=step.role,
                                      instructions=step.instructions, timeout=step.timeout)
            ledger.view.manual.append(progress)
        progress.status, progress.waiting_since, progress.deadline = AWAITING_CONFIRMATION, now, now + step.timeout
        ledger.event(f"manual item {step.id}: waiting for {step.role.value} to confirm or fail it "
                     f"(timeout {step.timeout})")
        with contextlib.suppress(TimeoutError):  # nobody answered in time: the item timed out
            await workflow.wait_condition(lambda: step.id in self._answers or self._aborted(), timeout=step.timeout)
        progress.finished_at = workflow.now()
        answer = self._answers.pop(step.id, None)
        if answer is None:
            if self._aborted():
                progress.status = ExecutionStatus.CANCELLED.value
                return progress.status, "plan aborted while the manual item waited"
            progress.status = TIMED_OUT
            reason = f"manual item: nobody confirmed or failed it within {step.timeout}"
            ledger.event(f"manual item {step.id}: timed out")
            return progress.status, reason
        confirm, decision = answer
        progress.status = CONFIRMED if confirm else MANUAL_FAILED
        progress.decided_by, progress.comment, progress.evidence = decision.actor, decision.comment, decision.evidence
        verb = "confirmed" if confirm else "failed"
        said = f": {decision.comment}" if decision.comment else ""
        ledger.event(f"manual item {step.id}: {verb} by {decision.actor} ({decision.role.value}) "
                     f"via {progress.decided_via}{said}")
        return progress.status, f"manual item {verb} by {decision.actor}{said}"

    def close_wave(self, wave: int, status: str) -> None:
        """Manual items of a wave that will never start (skipped, aborted)."""
        for progress in self._ledger.view.manual:
            if progress.wave == wave and progress.status == ItemState.PENDING.value:
                progress.status = status

    def approved(self, items: list[str] | None) -> None:
        """The dry run was approved: the items run again, those left out are NOT_APPROVED."""
        for progress in self._ledger.view.manual:
            approved = items is None or progress.id in items
            progress.status = (ItemState.PENDING if approved else ItemState.NOT_APPROVED).value
            progress.decided_by = progress.decided_via = None
