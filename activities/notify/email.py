"""E-mail over SMTP: plain text with an HTML alternative; STARTTLS and auth optional.

Recipients: the fixed `to` list and/or the addresses in the resource tag `to_tag` (e.g.
`Owner: alice@example.com, bob@example.com`) carried in the notification. No recipient at all:
the delivery is `skipped`, not failed. The Message-ID derives from the dedup key, so a mail
system or a person can tell a repeat.

    channels:
      owners:
        type: email
        host: smtp.example.com
        port: 587
        starttls: true
        username: reclaim
        password: env:RECLAIM_SMTP_PASSWORD
        sender: reclaim@example.com
        to_tag: Owner
        to: [finops@example.com]
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import smtplib
import ssl
import time
from email.message import EmailMessage

from activities.notify import render
from activities.notify.base import ChannelError, Secrets, register, result
from domain.notifications import DeliveryResult, DeliveryStatus, EmailChannel, Notification

_ADDRESS = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


def recipients(n: Notification, config: EmailChannel) -> list[str]:
    found = list(config.to)
    if config.to_tag:
        tagged = n.resource_tags.get(config.to_tag, "")
        found += [a for a in re.split(r"[,;\s]+", tagged) if _ADDRESS.match(a)]
    return list(dict.fromkeys(found))


def message(n: Notification, config: EmailChannel, to: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = render.title(n)
    msg["From"] = config.sender
    msg["To"] = ", ".join(to)
    msg["Message-ID"] = f"<{hashlib.sha256(n.dedup_key.encode()).hexdigest()[:32]}@reclaim>"
    msg["X-Reclaim-Delivery"] = n.dedup_key
    msg.set_content(render.text(n))
    msg.add_alternative(render.to_html(n), subtype="html")
    return msg


def _deliver(msg: EmailMessage, config: EmailChannel, secrets: Secrets) -> str:
    where = f"{config.host}:{config.port}"
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout_seconds) as smtp:
            if config.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=config.ca_file))
            if config.username:
                smtp.login(config.username, secrets.get("password") if config.password else "")
            refused = smtp.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        raise ChannelError(f"{where} refused every recipient ({len(exc.recipients)})", retryable=False) from None
    except smtplib.SMTPResponseException as exc:  # 4xx: try later; 5xx: permanent (auth, policy)
        raise ChannelError(f"{where} answered {exc.smtp_code}", retryable=400 <= exc.smtp_code < 500) from None
    except (smtplib.SMTPNotSupportedError, ssl.SSLError, ssl.CertificateError) as exc:
        raise ChannelError(f"{where}: {type(exc).__name__}", retryable=False) from None
    except (smtplib.SMTPException, OSError) as exc:  # disconnected, refused, timed out
        raise ChannelError(f"{where}: {type(exc).__name__}", retryable=True) from None
    return f"SMTP {where}" + (f", {len(refused)} recipient(s) refused" if refused else "")


@register("email")
async def send(n: Notification, config: EmailChannel, secrets: Secrets) -> DeliveryResult:
    started = time.monotonic()
    to = recipients(n, config)
    if not to:
        return result(n, config, started, f"no recipient (no fixed list, no address in tag {config.to_tag})",
                      DeliveryStatus.SKIPPED)
    detail = await asyncio.to_thread(_deliver, message(n, config, to), config, secrets)
    return result(n, config, started, f"{detail} to {len(to)} recipient(s)")
