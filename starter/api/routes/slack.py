"""POST /api/v1/integrations/slack/actions: Slack's interactivity callback (the Approve / Reject buttons).

Slack posts `application/x-www-form-urlencoded` with one field, `payload` (JSON). The raw body is
verified first (signing secret, 5-minute window, replay: 401 and nothing done); the click is then
acknowledged at once (Slack wants an answer within 3 s) and decided in the background: the Slack
user is looked up in the identities file, the decision goes through `starter.api.deciding.decide_as`
(tenant, role, the execution's own update with its validator), and the outcome or the refusal is
posted to the callback's `response_url`, rewriting the message.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, BackgroundTasks, FastAPI, Request, Response

from activities.notify.base import ChannelError, post_json
from runtime.logmask import register_secret
from runtime.settings import Settings
from starter.api import slack
from starter.api.deciding import decide_as
from starter.api.deps import Services, ServicesDep
from starter.api.errors import ApiError, ErrorResponse, responses
from starter.api.identities import IdentitiesFile, load_identities

log = logging.getLogger("reclaim.api.slack")

router = APIRouter(prefix="/api/v1/integrations/slack", tags=["integrations"])

RESPONSE_TIMEOUT = 10.0


@dataclass
class SlackIntegration:
    verifier: slack.SlackVerifier
    identities: IdentitiesFile


def prepare(app: FastAPI, settings: Settings) -> SlackIntegration:
    """The app's Slack integration (made once): a malformed identities file raises, naming its line and field."""
    found: SlackIntegration | None = getattr(app.state, "slack", None)
    if found is None:
        register_secret(settings.slack_signing_secret)
        found = SlackIntegration(slack.SlackVerifier(settings.slack_signing_secret),
                                 load_identities(settings.identities_file))
        app.state.slack = found
    return found


_FORM_BODY = {
    "required": True,
    "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": ["payload"],
        "properties": {"payload": {"type": "string", "description": "Slack's `block_actions` payload, as JSON."}},
    }}},
}


@router.post(
    "/actions", status_code=200, response_class=Response,
    summary="Slack's interactivity callback: Approve / Reject buttons",
    openapi_extra={
        "requestBody": _FORM_BODY,
        "parameters": [
            {"name": "X-Slack-Request-Timestamp", "in": "header", "required": True, "schema": {"type": "string"}},
            {"name": "X-Slack-Signature", "in": "header", "required": True, "schema": {"type": "string"}},
        ],
    },
    responses={200: {"description": "Acknowledged; the outcome is posted to the callback's response_url",
                     "content": {}},
               **responses(422),
               401: {"model": ErrorResponse, "description": "The Slack signature is missing, does not match the "
                     "body, is more than 5 minutes old or was already received (a replay); nothing was done"}},
)
async def actions(request: Request, svc: ServicesDep, background: BackgroundTasks) -> Response:
    integration = prepare(request.app, svc.settings)
    body = await request.body()
    refusal = integration.verifier.refusal(request.headers.get("X-Slack-Request-Timestamp"),
                                           request.headers.get("X-Slack-Signature"), body, time.time())
    if refusal is not None:
        log.warning("Slack callback refused: %s", refusal)
        raise ApiError(401, "unauthenticated", refusal)
    payload = _payload(body)
    decision = slack.decision_of(payload)
    if decision is not None:
        background.add_task(_answer, svc, integration.identities, payload, *decision)
    return Response(status_code=200)


def _payload(body: bytes) -> dict[str, Any]:
    try:
        form = parse_qs(body.decode(), strict_parsing=True)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError):
        raise ApiError(422, "invalid_request", [{"field": "body.payload",
                                                 "message": "expected Slack's form field payload holding JSON"}]) from None
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_request", [{"field": "body.payload", "message": "expected a JSON object"}])
    return payload


def _slack_user(payload: dict[str, Any]) -> str:
    user = payload.get("user")
    return str(user.get("id", "")) if isinstance(user, dict) else ""


async def _answer(svc: Services, identities: IdentitiesFile, payload: dict[str, Any], approve: bool,
                  execution_id: str) -> None:
    user_id = _slack_user(payload)
    principal = identities.for_slack(user_id)
    who = f"<@{user_id}>" if user_id else "someone"
    if principal is None:
        accepted, text = False, (f"{who} is not a known Reclaim approver (Slack user {user_id or '?'} is not in "
                                 "the identities file): nothing was decided")
    else:
        try:
            outcome = await decide_as(svc, principal, execution_id, approve, f"from Slack ({user_id})", via="slack")
            accepted, text = outcome.accepted, outcome.message
        except Exception:  # Temporal or the database down: say so where the person clicked
            log.exception("Slack decision on %s could not be made", execution_id)
            accepted, text = False, "Reclaim could not reach Temporal or its database: nothing was decided; try again"
        if accepted:
            text = f":white_check_mark: {execution_id} {text} ({who} in Slack)"
    message = (slack.decided_message(payload.get("message"), text) if accepted
               else slack.refused_message(payload.get("message"), f":no_entry: {who}: refused: {text}"))
    url = payload.get("response_url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        log.warning("Slack callback on %s had no response_url; outcome not shown: %s", execution_id, text)
        return
    try:
        await post_json(url, json.dumps(message).encode(), timeout=RESPONSE_TIMEOUT)
    except ChannelError as exc:  # the response_url is a secret-bearing URL: the error names the host only
        log.warning("could not update the Slack message of %s: %s", execution_id, exc)
