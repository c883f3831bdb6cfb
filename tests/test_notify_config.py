"""The notify file: errors naming the line and the field, inline secrets refused, references resolved late."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from activities.notify.config import (
    NotifyFileError,
    SecretError,
    load_notify_file,
    parse_notify_file,
    resolve_secrets,
)
from domain.notifications import EmailChannel, WebhookChannel

GOOD = """\
channels:
  ops-hook:
    type: webhook
    url: https://hooks.example.com/reclaim
    secret: env:OPS_HOOK_SECRET
  finops-slack:
    type: slack
    webhook_url: file:/run/secrets/slack-url
    rate_limit: {per_minute: 20, burst: 5}
rules:
  - name: approvals to slack, quiet at night
    events: [approval_requested, approval_reminder]
    channels: [finops-slack]
    quiet_hours: {start: 22:00, end: 07:30, timezone: Europe/Paris}
  - channels: [ops-hook]
    min_severity: error
"""


def problems(text: str) -> list[str]:
    with pytest.raises(NotifyFileError) as caught:
        parse_notify_file(text, "notify.yaml")
    return caught.value.problems


def test_a_good_file() -> None:
    parsed = parse_notify_file(GOOD)
    assert list(parsed.channels) == ["ops-hook", "finops-slack"]
    quiet = parsed.rules[0].quiet_hours
    assert quiet is not None and (quiet.start, quiet.end) == (time(22), time(7, 30))  # not base-60 integers
    assert parsed.channels["finops-slack"].rate_limit.per_minute == 20


def test_errors_name_the_line_and_the_field() -> None:
    text = GOOD.replace("    type: slack\n", "    type: slak\n").replace("min_severity: error", "min_severity: loud")
    assert problems(text) == [
        "notify.yaml:7: channels.finops-slack.type: Input tag 'slak' found using 'type' does not match any "
        "of the expected tags: 'webhook', 'slack', 'teams', 'email', 'sns'",
        "notify.yaml:16: rules[1].min_severity: Input should be 'info', 'warning', 'error' or 'critical'",
    ]
    missing = GOOD.replace("    secret: env:OPS_HOOK_SECRET\n", "    colour: blue\n")
    assert problems(missing) == [
        "notify.yaml:2: channels.ops-hook.secret: Field required",
        "notify.yaml:5: channels.ops-hook.colour: Extra inputs are not permitted",
    ]
    assert problems(GOOD.replace("channels: [ops-hook]", "channels: [ops-hook, pager]")) == [
        "notify.yaml:15: rules[1].channels[1]: unknown channel 'pager'; channels: ops-hook, finops-slack",
    ]
    assert problems(GOOD.replace("Europe/Paris", "Europe/Atlantis")) == [
        "notify.yaml:14: rules[0].quiet_hours.timezone: unknown time zone 'Europe/Atlantis' "
        "(an IANA name like Europe/Paris)",
    ]
    email = "channels:\n  mail:\n    type: email\n    host: smtp\n    sender: r@example.com\n"
    assert problems(email) == ["notify.yaml:2: channels.mail: give recipients: to (a list of addresses) "
                               "and/or to_tag (e.g. Owner)"]


def test_inline_secrets_are_refused_without_being_repeated() -> None:
    slack_url = "https://hooks.slack.com/services/T0AAA/B0BBB/zzSecretzz"
    found = problems(GOOD.replace("file:/run/secrets/slack-url", slack_url))
    assert found == ["notify.yaml:8: channels.finops-slack.webhook_url: looks like a secret (a webhook URL or a "
                     "token): inline secrets are refused; give a secret field as env:NAME or file:/path"]
    found = problems(GOOD.replace("env:OPS_HOOK_SECRET", "hunter2"))
    assert found == ["notify.yaml:5: channels.ops-hook.secret: a secret must be a reference, env:NAME or "
                     "file:/absolute/path; inline secrets are refused"]
    found = problems(GOOD + "  - name: xoxb-1234-abcd\n    channels: [ops-hook]\n")
    assert len(found) == 1 and found[0].startswith("notify.yaml:17: rules[2].name: looks like a secret")
    for line in found:
        assert "zzSecretzz" not in line and "hunter2" not in line and "xoxb-1234" not in line


def test_bad_yaml_and_bad_files(tmp_path: Path) -> None:
    assert problems("channels:\n  a: [1, 2\n")[0].startswith("notify.yaml:3: not valid YAML")
    assert problems("- just a list\n") == ["notify.yaml:1: expected a mapping with channels and rules"]
    with pytest.raises(NotifyFileError, match="cannot read it"):
        load_notify_file(tmp_path / "absent.yaml")
    path = tmp_path / "notify.yaml"
    path.write_text(GOOD)
    assert load_notify_file(path).rules[1].channels == ["ops-hook"]
    assert parse_notify_file("").channels == {}


def test_secrets_resolve_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("file-secret-value\n")
    hook = WebhookChannel(type="webhook", url="http://x/", secret="env:T_HOOK")
    mail = EmailChannel(type="email", host="h", sender="a@b.c", to=["d@e.f"], username="u",
                        password=f"file:{secret_file}")
    with pytest.raises(SecretError, match="T_HOOK is not set"):
        resolve_secrets(hook)
    monkeypatch.setenv("T_HOOK", "env-secret-value")
    resolved = resolve_secrets(hook)
    assert resolved.get("secret") == "env-secret-value"
    assert repr(resolved) == "Secrets(secret=***)" and "env-secret-value" not in f"{resolved}"
    assert resolve_secrets(mail).get("password") == "file-secret-value"
    secret_file.unlink()
    with pytest.raises(SecretError, match="cannot read secret file"):
        resolve_secrets(mail)
    assert "value" not in hook.model_dump_json() + mail.model_dump_json()


def test_the_readme_example_is_a_valid_file() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Notifications", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    parsed = parse_notify_file(example, "README")
    assert sorted(parsed.channels) == ["alarms", "finops-slack", "finops-slack-bot", "finops-teams", "ops-hook",
                                       "owners"]
    assert sorted(c.type for c in parsed.channels.values()) == ["email", "slack", "slack", "sns", "teams", "webhook"]
    assert parsed.channels["finops-slack-bot"].secret_refs() == {"bot_token": "env:RECLAIM_SLACK_BOT_TOKEN"}
