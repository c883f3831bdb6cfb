"""Items a running plan holds because the worker's accounts file refuses their account now.

The file is checked at submit; a plan runs for hours, and an account may be disabled
meanwhile (the kill switch). Since PLAN_TELLS_AND_HOLDS a plan submitted with an accounts file
(`PlanInput.check_accounts`; without one nothing is checked, at the edge or here) asks once per batch of
items about to start (`check_plan_accounts`, an ordinary activity on the records queue) and
holds the refused ones: not started, counted HELD, listed per account with the reason in
the plan's view. A held item takes no slot and never counts as failed, so the rest of the
wave goes on. The held items are asked again every `rate.hold_recheck` (a durable timer):
an account allowed again has its items started (before new ones); an account held for the
plan's `rate.pause_timeout` has its held items end SKIPPED with the reason.

A wave does not finish while it holds items, so the waves behind it (which run after it)
wait for them, within that bound. A SKIPPED item does not fail its wave: the hold was the
account's, not the change's, and an item of that account in a later wave is held in turn.

What is held is in the view (positions per account), so it survives continue-as-new; the
items themselves are kept in memory and loaded again by position after one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.account_checks import AccountCheckActivities
    from activities.plans import PlanActivities
    from domain.accounts import AccountQuestion, AccountsAnswer, AccountsAsked
    from domain.plan import (
        HeldAccount,
        ItemPage,
        ItemResult,
        ItemState,
        PlanInput,
        PlanItem,
        WaveProgress,
        hold_expired,
    )
    from workflows.options import RECORD_RETRY, STORE_TIMEOUT
    from workflows.plan_ledger import PlanLedger

HELD = ItemState.HELD.value


class PlanHolds:
    def __init__(self, ledger: PlanLedger, plan: PlanInput) -> None:
        self._ledger = ledger
        self._wanted = plan.check_accounts
        self.on = False
        """Decided in the plan's first activation (PLAN_TELLS_AND_HOLDS) and asked for by the submitter."""
        self._items: dict[int, PlanItem] = {}
        """Held items this run has seen (after continue-as-new, loaded again when first asked)."""
        self._ready: list[int] = []
        """Positions of held items whose account is allowed again, to start before new items."""
        self._checked_at: datetime | None = None
        """When the held items were last asked about (None: at once, e.g. after continue-as-new)."""

    # ---- what the plan's loop asks ------------------------------------------------------------

    def any(self) -> bool:
        return bool(self._ledger.view.held)

    def ready(self) -> bool:
        return bool(self._ready)

    def due(self) -> bool:
        return self.any() and self.until_check() <= timedelta(0)

    def until_check(self) -> timedelta:
        if self._checked_at is None:
            return timedelta(0)
        return self._checked_at + self._ledger.view.rate.hold_recheck - workflow.now()

    # ---- a batch about to start ---------------------------------------------------------------

    async def refusals(self, items: list[PlanItem]) -> dict[int, str]:
        """Position -> why the accounts file refuses that item now; one activity for the batch."""
        questions = [AccountQuestion.of(i.position, i.recommendation) for i in items if i.recommendation is not None]
        if not self.on or not self._wanted or not questions:
            return {}
        return (await self._ask(questions)).refused

    def hold(self, wave: WaveProgress, item: PlanItem, reason: str) -> None:
        assert item.recommendation is not None
        account_id, view = item.recommendation.account_id, self._ledger.view
        held = next((h for h in view.held if h.account_id == account_id), None)
        if held is None:
            held = HeldAccount(account_id=account_id, reason=reason, since=workflow.now())
            view.held.append(held)
            self._ledger.event(f"holding the items of account {account_id}: {reason}")
            if self._checked_at is None:
                self._checked_at = workflow.now()
        held.positions.append(item.position)
        self._items[item.position] = item
        self._ledger.count(wave, None, HELD)

    def take_ready(self, n: int) -> list[PlanItem]:
        """Up to `n` released items, no longer held (their count moves when they start)."""
        taken, self._ready = [p for p in self._ready[:n] if p in self._items], self._ready[n:]
        view = self._ledger.view
        for held in view.held:
            held.positions = [p for p in held.positions if p not in taken]
        view.held = [h for h in view.held if h.positions]
        return [self._items.pop(p) for p in taken]

    # ---- on the timer ---------------------------------------------------------------------------

    async def recheck(self, wave: WaveProgress) -> None:
        """Ask again for every held item: released accounts' items become ready, expired ones SKIPPED."""
        self._checked_at = workflow.now()
        view, ledger = self._ledger.view, self._ledger
        waiting = [p for h in view.held for p in h.positions if p not in self._ready]
        missing = [p for p in waiting if p not in self._items]
        if missing:  # held before a continue-as-new
            loaded: list[PlanItem] = await workflow.execute_activity_method(
                PlanActivities.load_plan_items,
                ItemPage(plan_id=view.plan_id, wave=wave.index, offset=0, limit=len(missing),
                         approved_only=view.dry_run and view.phase == "execute", positions=missing),
                start_to_close_timeout=STORE_TIMEOUT, retry_policy=RECORD_RETRY, task_queue=ledger.store_queue,
            )
            self._items.update({i.position: i for i in loaded})
        questions = [AccountQuestion.of(p, rec) for p in waiting
                     if p in self._items and (rec := self._items[p].recommendation) is not None]
        refused = (await self._ask(questions)).refused if questions else {}
        now, bound = workflow.now(), view.rate.pause_timeout
        for held in list(view.held):
            # An item the store no longer returns stays held until the bound: never started unchecked.
            still = {p: refused.get(p, held.reason) for p in held.positions
                     if p in refused or (p not in self._items and p not in self._ready)}
            if not still:
                if any(p not in self._ready for p in held.positions):
                    ledger.event(f"account {held.account_id} is allowed again: its {len(held.positions)} "
                                 "held items start")
                self._ready.extend(p for p in held.positions if p not in self._ready)
                continue
            held.reason = next(iter(still.values()))
            if hold_expired(held.since, now, bound):
                self._skip(wave, held, bound)

    def _skip(self, wave: WaveProgress, held: HeldAccount, bound: timedelta) -> None:
        view, ledger = self._ledger.view, self._ledger
        reason = f"held for {bound} and never allowed: {held.reason}"
        for position in held.positions:
            if position in self._ready:
                continue
            ledger.count(wave, HELD, ItemState.SKIPPED.value)
            ledger.results.append(ItemResult(plan_id=view.plan_id, position=position,
                                             status=ItemState.SKIPPED.value, reason=reason,
                                             finished_at=workflow.now()))
            self._items.pop(position, None)
        held.positions = [p for p in held.positions if p in self._ready]
        view.held = [h for h in view.held if h.positions]
        ledger.event(f"account {held.account_id}: its held items are SKIPPED ({reason})")
        view.updated_at = workflow.now()

    def drop(self, wave: WaveProgress) -> None:
        """The plan is aborted: held items go back to the wave's not-started ones."""
        n = sum(len(h.positions) for h in self._ledger.view.held)
        if n:
            self._ledger.uncount(wave, HELD, n)
        self._ledger.view.held = []
        self._ready, self._items = [], {}

    async def _ask(self, questions: list[AccountQuestion]) -> AccountsAnswer:
        answer: AccountsAnswer = await workflow.execute_activity_method(
            AccountCheckActivities.check_plan_accounts, AccountsAsked(items=questions),
            start_to_close_timeout=STORE_TIMEOUT, retry_policy=RECORD_RETRY, task_queue=self._ledger.store_queue,
        )
        return answer
