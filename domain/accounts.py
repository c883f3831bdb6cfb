"""The accounts file (`RECLAIM_ACCOUNTS_FILE`): the AWS accounts Reclaim may act in, and how.

Pure models and rules; reading the YAML (with line numbers) is `activities/accounts.py`. An
example, every field of an account but `id`, `name` and `customer` optional:

    defaults:
      role_arn: arn:aws:iam::{account_id}:role/ReclaimExecutor
      external_id: env:RECLAIM_EXTERNAL_ID      # a reference (env:NAME or file:/path), never the value
      regions: [us-east-1, eu-west-1]
    accounts:
      - id: "111111111111"
        name: shop-prod
        customer: acme
        enabled: true                           # the kill switch: false refuses new executions there
        kinds: [ec2.stop, ebs.gp2_to_gp3]      # the kinds allowed there (default: every kind)
        policy: {auto_approve_max_monthly_savings: 100, refuse_production: true, cooldown_days: 14}

Once a file is configured, it is the list: an account it does not name is refused as well.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from domain.base import StrictModel
from domain.notifications import SecretRef
from domain.policy import Policy
from domain.recommendation import Recommendation

AccountId = Annotated[str, Field(pattern=r"^[0-9]{12}$", description='12 digits, quoted: "012345678901".')]
Region = Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")]
Kind = Annotated[str, Field(pattern=r"^[a-z0-9]+\.[a-z0-9_]+$")]
RoleArn = Annotated[str, Field(
    pattern=r"^arn:aws[a-z-]*:iam::([0-9]{12}|\{account_id\}):role/[A-Za-z0-9_+=,.@/-]{1,512}$",
    description="The role Reclaim assumes there; `{account_id}` stands for the account's id.")]

_ARN_ACCOUNT = re.compile(r"^arn:aws[a-z-]*:iam::([0-9]{12}):role/")


class AccountQuestion(StrictModel):
    """One plan item about to start, as the accounts file judges it (no recommendation payload)."""

    position: int
    account_id: str
    customer_id: str
    region: str
    kind: str

    @classmethod
    def of(cls, position: int, rec: Recommendation) -> AccountQuestion:
        return cls(position=position, account_id=rec.account_id, customer_id=rec.customer_id, region=rec.region,
                   kind=rec.kind)


class AccountsAsked(StrictModel):
    """The input of `check_plan_accounts`: a batch of items a plan is about to start (or holds)."""

    items: list[AccountQuestion] = Field(default_factory=list)


class AccountsAnswer(StrictModel):
    """Its output: the items the worker's accounts file refuses now, with the reason (the rest may start)."""

    refused: dict[int, str] = Field(default_factory=dict)


class PolicyOverrides(StrictModel):
    """What an account changes of the deployment's policy (`domain.policy.Policy`); unset: unchanged."""

    auto_approve_max_monthly_savings: float | None = Field(default=None, ge=0)
    refuse_production: bool | None = None
    cooldown_days: float | None = Field(default=None, ge=0)

    def apply(self, policy: Policy) -> Policy:
        return policy.model_copy(update=self.model_dump(exclude_none=True))

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.model_dump(exclude_none=True).items())


class AccountDefaults(StrictModel):
    role_arn: RoleArn | None = None
    external_id: SecretRef | None = Field(default=None, description="env:NAME or file:/path; never inline.")
    regions: list[Region] = Field(default_factory=list, description="Empty: any region.")
    kinds: list[Kind] | None = Field(default=None, description="None: every kind.")


class Account(StrictModel):
    id: AccountId
    name: str = Field(min_length=1, max_length=128)
    customer: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    role_arn: RoleArn | None = None
    external_id: SecretRef | None = None
    regions: list[Region] | None = None
    kinds: list[Kind] | None = None
    enabled: bool = True
    policy: PolicyOverrides = Field(default_factory=PolicyOverrides)


class AccountsFile(StrictModel):
    defaults: AccountDefaults = Field(default_factory=AccountDefaults)
    accounts: list[Account] = Field(default_factory=list)

    def get(self, account_id: str) -> Account | None:
        return next((a for a in self.accounts if a.id == account_id), None)

    def role_arn(self, account: Account) -> str | None:
        arn = account.role_arn or self.defaults.role_arn
        return None if arn is None else arn.replace("{account_id}", account.id)

    def external_id(self, account: Account) -> str | None:
        """The reference (env:NAME or file:/path), resolved only where the role is assumed."""
        return account.external_id or self.defaults.external_id

    def regions(self, account: Account) -> list[str]:
        return list(account.regions if account.regions is not None else self.defaults.regions)

    def kinds(self, account: Account) -> list[str] | None:
        return account.kinds if account.kinds is not None else self.defaults.kinds

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """What the models alone cannot see: duplicate ids, a role ARN of another account."""
        found: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[str, int] = {}
        for index, account in enumerate(self.accounts):
            if account.id in seen:
                found.append((("accounts", index, "id"), f"account {account.id} is listed twice "
                                                        f"(also accounts[{seen[account.id]}])"))
            seen.setdefault(account.id, index)
            match = _ARN_ACCOUNT.match(account.role_arn or "")
            if match and match.group(1) != account.id:
                found.append((("accounts", index, "role_arn"),
                              f"the role is in account {match.group(1)}, not in {account.id}"))
        return found

    def refusal(self, rec: Recommendation | AccountQuestion) -> str | None:
        """Why no new execution of `rec` may start under this file, or None."""
        account = self.get(rec.account_id)
        if account is None:
            return (f"account {rec.account_id} is not in the accounts file: Reclaim acts only in the "
                    "accounts listed there")
        if not account.enabled:
            return (f"account {account.id} ({account.name}) is disabled in the accounts file: no new "
                    "execution starts there until it is enabled again")
        if rec.customer_id != account.customer:
            return f"account {account.id} ({account.name}) belongs to customer {account.customer}, not {rec.customer_id}"
        regions = self.regions(account)
        if regions and rec.region not in regions:
            return (f"region {rec.region} is not one of account {account.id}'s regions "
                    f"({', '.join(regions)})")
        kinds = self.kinds(account)
        if kinds is not None and rec.kind not in kinds:
            return f"{rec.kind} is not allowed in account {account.id} (allowed: {', '.join(kinds) or 'none'})"
        return None

    def refusals(self, questions: list[AccountQuestion]) -> dict[int, str]:
        """Position -> why the file refuses that item now; an item it allows is not named."""
        return {q.position: why for q in questions if (why := self.refusal(q)) is not None}

    def policy_for(self, account_id: str, policy: Policy) -> Policy:
        """`policy` with the account's overrides applied (unchanged for an account not listed)."""
        account = self.get(account_id)
        return policy if account is None else account.policy.apply(policy)
