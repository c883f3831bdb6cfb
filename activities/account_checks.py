"""`check_plan_accounts`: which items a running plan must hold, by the worker's accounts file now.

The file is checked at the edge when a plan is submitted; a plan runs for hours, and an
account disabled meanwhile (the kill switch) must stop receiving new executions. The plan asks
once per batch of items about to start, and again for the items it holds, on a timer: reading
the file is a stat when it has not changed (`AccountsSource`). A file that cannot be read now
(half-edited, say) refuses every item with its problem: held, not failed, until it is fixed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.accounts import AccountsFileError
from activities.aws import AccountsLookup
from domain.accounts import AccountsAnswer, AccountsAsked


class AccountCheckActivities:
    def __init__(self, accounts: AccountsLookup | None) -> None:
        """`accounts`: the accounts file as it is at each call; None (no file): every account is allowed."""
        self._accounts = accounts

    @activity.defn(name="check_plan_accounts")
    async def check_plan_accounts(self, asked: AccountsAsked) -> AccountsAnswer:
        if self._accounts is None or not asked.items:
            return AccountsAnswer()
        try:
            file = await asyncio.to_thread(self._accounts)
        except AccountsFileError as exc:
            reason = f"the accounts file cannot be used now: {exc}"
            return AccountsAnswer(refused={q.position: reason for q in asked.items})
        return AccountsAnswer(refused=file.refusals(asked.items))

    def all(self) -> list[Callable[..., Any]]:
        return [self.check_plan_accounts]
