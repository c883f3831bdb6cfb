"""`reclaim notify ...`: check the notify file, send a test message to one channel.

The file is `--file` or `RECLAIM_NOTIFY_FILE`. Secrets are resolved only to send (`test`) or to
say whether they resolve (`check`); neither prints one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape
from rich.table import Table
from temporalio.exceptions import ApplicationError

from activities.notify.config import NotifyFileError, SecretError, load_notify_file, resolve
from activities.notify.delivery import NotifyActivities
from domain.notifications import (
    ChannelBase,
    DeliveryInput,
    DeliveryResult,
    EmailChannel,
    Links,
    Notification,
    NotifyFile,
    Rule,
    SlackChannel,
    SnsChannel,
    WebhookChannel,
)
from starter.cli_common import err, out, run, state
from starter.executions import ReclaimError

notify_app = typer.Typer(no_args_is_help=True, help="Notifications: check the notify file, test a channel.")

NotifyFileOption = Annotated[
    Path | None, typer.Option("--file", envvar="RECLAIM_NOTIFY_FILE", help="The notify file (YAML).",
                              show_envvar=True),
]


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(1)


def _load(path: Path | None) -> NotifyFile:
    if path is None:
        _fail("no notify file: set RECLAIM_NOTIFY_FILE or pass --file")
    try:
        return load_notify_file(path)
    except NotifyFileError as exc:
        _fail(str(exc))


def _target(channel: ChannelBase) -> str:
    """Where a channel sends, without its secret (a Slack or Teams URL is one)."""
    if isinstance(channel, WebhookChannel):
        return channel.url
    if isinstance(channel, EmailChannel):
        to = [*channel.to, *([f"tag {channel.to_tag}"] if channel.to_tag else [])]
        return f"{channel.host}:{channel.port} -> {', '.join(to)}"
    if isinstance(channel, SnsChannel):
        return channel.topic_arn
    if isinstance(channel, SlackChannel) and channel.channel:
        return f"{channel.channel} via {channel.api_url.rstrip('/')}/chat.postMessage"
    return "(the webhook URL is the secret)"


def _secret_state(channel: ChannelBase) -> str:
    states = []
    for name, ref in channel.secret_refs().items():
        try:
            resolve(ref)
            states.append(f"{name}: {ref} (resolves)")
        except SecretError as exc:
            states.append(f"{name}: {ref} (NOT RESOLVED: {exc})")
    return "; ".join(states) or "-"


def _rule_filters(rule: Rule) -> str:
    parts = [f"{label}={','.join(map(str, values))}" for label, values in (
        ("customers", rule.customers), ("accounts", rule.accounts), ("kinds", rule.kinds),
        ("events", rule.events)) if values]
    parts += [f"severity>={rule.min_severity}"] if rule.min_severity else []
    parts += [f"risk>={rule.min_risk}"] if rule.min_risk else []
    if rule.quiet_hours:
        q = rule.quiet_hours
        parts.append(f"quiet {q.start:%H:%M}-{q.end:%H:%M} {q.timezone}")
    return " ".join(parts) or "everything"


@notify_app.command("check")
def check(file: NotifyFileOption = None) -> None:
    """Validate the notify file; print its channels and rules (exit 1 on the first bad file)."""
    parsed = _load(file)
    channels = Table("channel", "type", "sends to", "secrets", "rate limit", title=f"{file}: channels")
    for name, channel in parsed.channels.items():
        channels.add_row(name, channel.type, _target(channel), _secret_state(channel),
                         f"{channel.rate_limit.per_minute:g}/min, burst {channel.rate_limit.burst}")
    rules = Table("#", "name", "matches", "channels", title="rules")
    for i, rule in enumerate(parsed.rules):
        rules.add_row(str(i), rule.name or "", _rule_filters(rule), ", ".join(rule.channels))
    out.print(channels)
    out.print(rules)
    unresolved = [n for n, c in parsed.channels.items() if "NOT RESOLVED" in _secret_state(c)]
    if unresolved:
        err.print(f"[yellow]warning:[/yellow] secrets of {', '.join(unresolved)} do not resolve here "
                  "(the worker resolves them in its own environment)")


def sample_notification(web_ui_url: str) -> Notification:
    subject = f"notify-test-{uuid.uuid4().hex[:8]}"
    return Notification(
        event="approval_requested", subject_id=subject, at=datetime.now(UTC), customer_id="test",
        kind="test", resource_id="none", reason="A test message from `reclaim notify test`: nothing waits "
        "for a decision.", planned_steps=["nothing: this is a test"], links=Links(web_ui=web_ui_url),
    )


@notify_app.command("test")
def send_test(channel: Annotated[str, typer.Argument(help="A channel name of the notify file.")],
              file: NotifyFileOption = None) -> None:
    """Send a test message (an approval request that asks nothing) to CHANNEL."""
    parsed = _load(file)
    if channel not in parsed.channels:
        _fail(f"no channel {channel!r} in {file}; channels: {', '.join(parsed.channels) or 'none'}")
    notification = sample_notification(state.settings.web_ui_url)

    async def go() -> DeliveryResult:
        try:
            return await NotifyActivities(parsed).deliver(DeliveryInput(notification=notification, channel=channel))
        except ApplicationError as exc:
            raise ReclaimError(f"{exc.message} ({'will retry' if not exc.non_retryable else 'refused'} "
                               "in a workflow)") from None

    outcome = run(go)
    out.print(f"{outcome.status.value} to {channel} ({outcome.channel_type}): {outcome.detail}, "
              f"{outcome.latency_ms:.0f} ms, key {outcome.dedup_key}")
