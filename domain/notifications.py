"""Who is told what: the notification, the notify file's model, and routing (pure).

A `Notification` is what an observer of an execution or a plan hands to the delivery
activity: it carries no secret and no channel detail, so it can sit in a workflow
history. The notify file (`RECLAIM_NOTIFY_FILE`, loaded by `activities.notify.config`)
names channels and the rules that route a notification to them; a channel's secrets
are references (`env:NAME`, `file:/path`), resolved only by the activity at send time.

`route(notification, rules, now)` picks the channels: every rule whose filters all
match (an empty filter matches anything) and that is not in its quiet hours, except
that a critical notification ignores quiet hours.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from domain.base import StrictModel, TimeZoneName
from domain.policy import RiskLevel, Role


class NotificationEvent(StrEnum):
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_REMINDER = "approval_reminder"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    ROLLBACK_FAILED = "rollback_failed"
    PLAN_AWAITING_APPROVAL = "plan_awaiting_approval"
    PLAN_PAUSED = "plan_paused"
    PLAN_FINISHED = "plan_finished"
    OWNER_WARNING = "owner_warning"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


SEVERITY_ORDER = [Severity.INFO, Severity.WARNING, Severity.ERROR, Severity.CRITICAL]
RISK_ORDER = [RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH, RiskLevel.CRITICAL]

#: The severity an event has unless its sender says otherwise.
DEFAULT_SEVERITY: dict[NotificationEvent, Severity] = {
    NotificationEvent.APPROVAL_REQUESTED: Severity.INFO,
    NotificationEvent.APPROVAL_REMINDER: Severity.INFO,
    NotificationEvent.APPROVED: Severity.INFO,
    NotificationEvent.REJECTED: Severity.WARNING,
    NotificationEvent.EXPIRED: Severity.WARNING,
    NotificationEvent.COMPLETED: Severity.INFO,
    NotificationEvent.ROLLED_BACK: Severity.WARNING,
    NotificationEvent.FAILED: Severity.ERROR,
    NotificationEvent.ROLLBACK_FAILED: Severity.CRITICAL,
    NotificationEvent.PLAN_AWAITING_APPROVAL: Severity.INFO,
    NotificationEvent.PLAN_PAUSED: Severity.WARNING,
    NotificationEvent.PLAN_FINISHED: Severity.INFO,
    NotificationEvent.OWNER_WARNING: Severity.WARNING,
}

#: Events that ask a person to decide: Slack shows Approve/Reject buttons, Teams and e-mail the page link.
DECISION_EVENTS = frozenset({NotificationEvent.APPROVAL_REQUESTED, NotificationEvent.APPROVAL_REMINDER})


class Subject(StrEnum):
    EXECUTION = "execution"
    PLAN = "plan"


class Links(StrictModel):
    web_ui: str | None = Field(default=None, description="The workflow in the Temporal Web UI.")
    approval_page: str | None = Field(default=None, description="Where a person approves or rejects it.")
    report: str | None = Field(default=None, description="A finished plan's report (Markdown).")


class Notification(StrictModel):
    """One event of one execution or plan, as every channel renders it. No secret, no channel detail."""

    event: NotificationEvent
    subject: Subject = Subject.EXECUTION
    subject_id: str = Field(min_length=1, max_length=256, description="The execution id or the plan id.")
    sequence: int = Field(default=0, ge=0, description="n of the dedup key: the 2nd reminder is 1, ...")
    at: datetime = Field(description="When the event happened (workflow time).")
    severity: Severity = Field(default=Severity.INFO, description="Defaults to the event's DEFAULT_SEVERITY.")
    customer_id: str | None = None
    account_id: str | None = None
    region: str | None = None
    kind: str | None = None
    resource_id: str | None = None
    resource_tags: dict[str, str] = Field(
        default_factory=dict, description="Tags e-mail may take recipients from (e.g. Owner)."
    )
    risk: RiskLevel | None = None
    risk_reasons: list[str] = Field(default_factory=list)
    estimated_monthly_savings: float | None = None
    verified_monthly_savings: float | None = None
    planned_steps: list[str] = Field(default_factory=list)
    reason: str | None = Field(default=None, max_length=4000, description="Why: rejection, failure, rollback.")
    not_before: datetime | None = Field(default=None, description="When a waiting change will run (owner_warning).")
    links: Links = Field(default_factory=Links)

    @model_validator(mode="before")
    @classmethod
    def _event_severity(cls, data: object) -> object:
        if isinstance(data, dict) and "severity" not in data and "event" in data:
            try:
                return {**data, "severity": DEFAULT_SEVERITY[NotificationEvent(data["event"])]}
            except ValueError:
                return data  # the field validator names the bad event
        return data

    @property
    def dedup_key(self) -> str:
        """One delivery per (subject, event, n) and channel: a retried activity never posts twice."""
        return f"{self.subject_id}:{self.event.value}:{self.sequence}"

    @property
    def asks_decision(self) -> bool:
        return self.event in DECISION_EVENTS and self.subject is Subject.EXECUTION


class DeliveryInput(StrictModel):
    """The input of the `deliver_notification` activity: one notification to one channel."""

    notification: Notification
    channel: str = Field(min_length=1, max_length=64)


class Routing(StrictModel):
    """The output of the `route_notification` activity: the channels to deliver to, one activity each."""

    channels: list[str] = Field(default_factory=list)


class DeliveryStatus(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"  # this process delivered the same key to the same channel before
    SKIPPED = "skipped"  # nothing to send to (e.g. no owner tag and no fixed recipients)


class DeliveryResult(StrictModel):
    channel: str
    channel_type: str
    dedup_key: str
    status: DeliveryStatus
    detail: str = ""
    latency_ms: float = 0.0
    receipt: dict[str, str] = Field(
        default_factory=dict,
        description="What the receiver answered naming the message, to update it later (Slack chat API: "
                    "channel, ts). Never a secret.")

    @model_serializer(mode="wrap")
    def _no_empty_receipt(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Left out when empty: a result without one is what workers before it wrote and can read back
        (they refuse unknown fields), so only a chat-API delivery's result carries the new field."""
        data = handler(self)
        if isinstance(data, dict) and not data.get("receipt"):
            data.pop("receipt", None)
        return data


# ---- the notify file ---------------------------------------------------------------------------

_SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:/\S+)$")

#: Values that are secrets whatever field they sit in: refused inline, asked for by reference.
_SECRET_LOOKING = re.compile(
    r"hooks\.slack\.com/|xox[abposr]-|\.webhook\.office\.com/|webhookb2|logic\.azure\.com/"
    r"|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY"
)


def looks_secret(value: str) -> bool:
    return bool(_SECRET_LOOKING.search(value))


def _secret_ref(value: str) -> str:
    if not _SECRET_REF.match(value):
        raise ValueError("a secret must be a reference, env:NAME or file:/absolute/path; inline secrets are refused")
    return value


def _no_inline_secret(value: str) -> str:
    if looks_secret(value):
        raise ValueError("this looks like a secret (a webhook URL or token): give it as env:NAME or file:/path "
                         "in a secret field instead")
    return value


#: A reference to a secret; the value itself never enters a model.
SecretRef = Annotated[str, AfterValidator(_secret_ref)]
#: A string that must not be a secret (a URL, a host, an address).
PlainStr = Annotated[str, AfterValidator(_no_inline_secret)]


class RateLimit(StrictModel):
    per_minute: float = Field(default=60.0, gt=0, description="Sustained sends per minute, per worker process.")
    burst: int = Field(default=10, ge=1, description="Sends allowed at once after a quiet spell.")


class ChannelBase(StrictModel):
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    def secret_refs(self) -> dict[str, str]:
        """Field name -> reference, for each secret this channel has (resolved at send time)."""
        return {}


class WebhookChannel(ChannelBase):
    """POST of the JSON body (docs/notification.schema.json), signed with `secret`."""

    type: Literal["webhook"]
    url: PlainStr = Field(pattern=r"^https?://")
    secret: SecretRef

    def secret_refs(self) -> dict[str, str]:
        return {"secret": self.secret}


def _field_error(field: str, message: str) -> ValidationError:
    """An error located at `field` of the model raising it, so the notify file names that field's line."""
    return ValidationError.from_exception_data(
        "notify file", [InitErrorDetails(type=PydanticCustomError("notify_file", message), loc=(field,), input=None)])


class SlackChannel(ChannelBase):
    """Slack, one of two ways: an incoming webhook (its URL is the secret) or the chat API
    (`chat.postMessage` with a bot token, the secret, to `channel`). The chat API answers with the
    message's `ts`, which the delivery result keeps: a later `chat.update` needs it and the channel."""

    type: Literal["slack"]
    webhook_url: SecretRef | None = Field(default=None, description="An incoming webhook's URL (a reference).")
    bot_token: SecretRef | None = Field(default=None, description="A bot token, xoxb-... (a reference).")
    channel: str | None = Field(default=None, pattern=r"^[CDG][A-Z0-9]{5,}$",
                                description="The Slack channel id to post to with bot_token, e.g. C0123456789.")
    api_url: PlainStr = Field(default="https://slack.com/api", pattern=r"^https?://",
                              description="Slack's Web API; another only to test against a local one.")

    @model_validator(mode="after")
    def _one_way(self) -> SlackChannel:
        if self.webhook_url and self.bot_token:
            raise _field_error("bot_token", "give either webhook_url (an incoming webhook) or bot_token and "
                                            "channel (the chat API), not both")
        if not self.webhook_url and not self.bot_token:
            raise _field_error("webhook_url", "give webhook_url (an incoming webhook) or bot_token and channel "
                                              "(the chat API)")
        if self.bot_token and not self.channel:
            raise _field_error("channel", "bot_token posts with the chat API, which needs channel "
                                          "(a Slack channel id, e.g. C0123456789)")
        if self.webhook_url and self.channel:
            raise _field_error("channel", "an incoming webhook posts to its own channel: channel goes with "
                                          "bot_token only")
        return self

    def secret_refs(self) -> dict[str, str]:
        refs = {"webhook_url": self.webhook_url, "bot_token": self.bot_token}
        return {name: ref for name, ref in refs.items() if ref}


class TeamsChannel(ChannelBase):
    """A Microsoft Teams incoming webhook (Adaptive Card); its URL is the secret."""

    type: Literal["teams"]
    webhook_url: SecretRef

    def secret_refs(self) -> dict[str, str]:
        return {"webhook_url": self.webhook_url}


class EmailChannel(ChannelBase):
    """SMTP: STARTTLS and auth optional; to a fixed list and/or the addresses in a resource tag."""

    type: Literal["email"]
    host: PlainStr = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    ca_file: str | None = Field(default=None, description="Trust this CA for STARTTLS (default: the system's).")
    username: str | None = None
    password: SecretRef | None = None
    sender: PlainStr = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(default_factory=list)
    to_tag: str | None = Field(default=None, description="A resource tag holding addresses, e.g. Owner.")

    @model_validator(mode="after")
    def _someone(self) -> EmailChannel:
        if not self.to and not self.to_tag:
            raise ValueError("give recipients: to (a list of addresses) and/or to_tag (e.g. Owner)")
        if self.password and not self.username:
            raise ValueError("password given without username")
        return self

    def secret_refs(self) -> dict[str, str]:
        return {"password": self.password} if self.password else {}


class SnsChannel(ChannelBase):
    """Publish to an SNS topic with the worker's AWS credentials (no secret here)."""

    type: Literal["sns"]
    topic_arn: str = Field(pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+$")
    endpoint_url: str | None = Field(default=None, description="A VPC endpoint or a local SNS; default AWS's.")

    @property
    def region(self) -> str:
        return self.topic_arn.split(":")[3]


ChannelSpec = Annotated[
    WebhookChannel | SlackChannel | TeamsChannel | EmailChannel | SnsChannel, Field(discriminator="type")
]
CHANNEL_TYPES = ("webhook", "slack", "teams", "email", "sns")


class QuietHours(StrictModel):
    """Daily, in `timezone`: from `start` to `end` (wrapping midnight when end < start)."""

    start: time
    end: time
    timezone: TimeZoneName = "UTC"

    def covers(self, now: datetime) -> bool:
        if now.tzinfo is None:
            raise ValueError("quiet hours need an aware datetime")
        local = now.astimezone(ZoneInfo(self.timezone)).time().replace(tzinfo=None)
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


class Rule(StrictModel):
    """Send matching notifications to `channels`. An empty filter matches anything."""

    name: str | None = None
    channels: list[str] = Field(min_length=1)
    customers: list[str] = Field(default_factory=list)
    accounts: list[str] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)
    events: list[NotificationEvent] = Field(default_factory=list)
    min_severity: Severity | None = None
    min_risk: RiskLevel | None = Field(default=None, description="A notification without a risk does not match.")
    quiet_hours: QuietHours | None = None

    def matches(self, n: Notification) -> bool:
        if self.customers and n.customer_id not in self.customers:
            return False
        if self.accounts and n.account_id not in self.accounts:
            return False
        if self.kinds and n.kind not in self.kinds:
            return False
        if self.events and n.event not in self.events:
            return False
        if self.min_severity and SEVERITY_ORDER.index(n.severity) < SEVERITY_ORDER.index(self.min_severity):
            return False
        return not (self.min_risk and (n.risk is None or RISK_ORDER.index(n.risk) < RISK_ORDER.index(self.min_risk)))


class NotifyFile(StrictModel):
    channels: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], ChannelSpec] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """What a valid shape can still get wrong: a rule naming a channel that does not exist."""
        return [
            (("rules", i, "channels", j), f"unknown channel {name!r}; channels: {', '.join(self.channels) or 'none'}")
            for i, rule in enumerate(self.rules)
            for j, name in enumerate(rule.channels)
            if name not in self.channels
        ]


def route(notification: Notification, rules: list[Rule], now: datetime) -> list[str]:
    """The channels this notification goes to, each once, in the order the rules name them."""
    chosen: list[str] = []
    critical = notification.severity is Severity.CRITICAL
    for rule in rules:
        if not rule.matches(notification):
            continue
        if rule.quiet_hours and not critical and rule.quiet_hours.covers(now):
            continue
        for name in rule.channels:
            if name not in chosen:
                chosen.append(name)
    return chosen


def reminder_times(timeout: timedelta, fractions: list[float]) -> list[timedelta]:
    """When, after an approval wait began, approvers are reminded: each fraction of the timeout,
    in order, once each, whole seconds (timers need no finer), and never at or past the end."""
    times = sorted({timedelta(seconds=int(timeout.total_seconds() * f)) for f in fractions if 0 < f < 1})
    return [t for t in times if timedelta(0) < t < timeout]


class AlarmInput(StrictModel):
    """The single input of RollbackAlarmWorkflow: what to repeat, and how often."""

    notification: Notification
    every: timedelta = Field(gt=timedelta(0))
    told: int = Field(default=0, ge=0, description="Times told by earlier runs (continue-as-new).")


class Acknowledgement(StrictModel):
    """Payload of the alarm's `acknowledge` signal and update: a person has seen it and acts."""

    actor: str = Field(min_length=1, max_length=128)
    role: Role = Field(description="operator, approver or admin; a viewer only watches.")
    comment: str = Field(default="", max_length=2000)
