"""SNS: publish to a topic with the worker's AWS credentials.

The message is JSON per protocol (`MessageStructure=json`): `default` is the webhook body
(docs/notification.schema.json), `email` the plain text. Attributes `event`, `severity`,
`dedup_key` allow subscription filter policies. A FIFO topic (`.fifo`) gets the dedup key's
hash as `MessageDeduplicationId`, so SNS itself drops a repeat within its 5-minute window.

    channels:
      alarms:
        type: sns
        topic_arn: arn:aws:sns:eu-west-1:123456789012:reclaim-alarms
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from activities.errors import THROTTLING_CODES
from activities.notify import render
from activities.notify.base import ChannelError, Secrets, register, result
from activities.notify.webhook import body, encode
from domain.notifications import DeliveryResult, Notification, SnsChannel


def request(n: Notification, config: SnsChannel) -> dict[str, Any]:
    subject = "".join(c if c.isprintable() and c.isascii() else " " for c in render.title(n))[:100]
    attributes = {name: {"DataType": "String", "StringValue": value}
                  for name, value in (("event", n.event.value), ("severity", n.severity.value),
                                      ("dedup_key", n.dedup_key))}
    args: dict[str, Any] = {
        "TopicArn": config.topic_arn,
        "Subject": subject,
        "MessageStructure": "json",
        "Message": json.dumps({"default": encode(body(n)).decode(), "email": render.text(n)}),
        "MessageAttributes": attributes,
    }
    if config.topic_arn.endswith(".fifo"):
        args["MessageGroupId"] = n.subject_id[:128]
        args["MessageDeduplicationId"] = hashlib.sha256(n.dedup_key.encode()).hexdigest()
    return args


def _publish(args: dict[str, Any], config: SnsChannel) -> str:
    client = boto3.session.Session().client("sns", region_name=config.region, endpoint_url=config.endpoint_url)
    try:
        answer = client.publish(**args)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        raise ChannelError(f"SNS {code or status}", retryable=code in THROTTLING_CODES or status >= 500) from None
    except NoCredentialsError:
        raise ChannelError("SNS: no AWS credentials", retryable=False) from None
    except BotoCoreError as exc:
        raise ChannelError(f"SNS: {type(exc).__name__}", retryable=True) from None
    return f"SNS message {answer['MessageId']}"


@register("sns")
async def send(n: Notification, config: SnsChannel, secrets: Secrets) -> DeliveryResult:
    started = time.monotonic()
    detail = await asyncio.to_thread(_publish, request(n, config), config)
    return result(n, config, started, detail)
