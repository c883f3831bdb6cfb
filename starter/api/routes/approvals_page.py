"""/approvals: the approval page. Server-rendered HTML (Jinja2, no front-end build), readable on a phone.

Sign in with an API token (checked against the API's tokens, then forgotten: a cookie session,
`starter.api.sessions`); see what awaits a decision among your customers' executions, dry-run
plans awaiting approval, and running plans' manual steps waiting for a person; approve or reject
with a comment, confirm or fail a manual step with a comment and evidence. Decisions go through the API's own path
(`starter.api.deciding`), and the result, or the refusal in plain words, shows at once on the next
page. Every form carries a CSRF token (the session's; before sign-in, a double-submit cookie).

Notifications link here: `/approvals/<execution id>` and `/approvals/plans/<plan id>` (a plan's
manual steps are on its page too). A manual step's instructions are Markdown, rendered by
markdown-it-py with raw HTML escaped and unsafe link schemes (javascript:, data:...) left as text.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from markupsafe import Markup

from domain.execution import ExecutionView
from domain.manual import AWAITING_CONFIRMATION, ManualProgress
from domain.plan import PLAN_TERMINAL, PlanStatus, PlanView
from domain.status import ExecutionStatus
from starter.api.deciding import Outcome, answer_manual_as, decide_as, decide_plan_as, visible_plan
from starter.api.deps import Services, ServicesDep
from starter.api.routes.executions import _find
from starter.api.sessions import COOKIE, LOGIN_CSRF_COOKIE, Flash, Session, Sessions

router = APIRouter(prefix="/approvals", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))

PAGE_LIMIT = 100
Text = Annotated[str, Form(max_length=2000)]
Evidence = Annotated[str, Form(max_length=4000)]
#: CommonMark without raw HTML: a `<script>` in instructions shows as text; links keep only safe schemes.
_MARKDOWN = MarkdownIt("commonmark", {"html": False})


@dataclass(frozen=True)
class Item:
    """One execution as the page shows it: what, why, risk, savings, planned steps."""

    view: ExecutionView
    steps: list[str]
    source: str | None
    web_ui: str

    @property
    def pending(self) -> bool:
        return self.view.status is ExecutionStatus.AWAITING_APPROVAL


@dataclass(frozen=True)
class ManualItem:
    """A plan's manual step as the page shows it: its instructions (Markdown, rendered safely), who may
    answer and by when."""

    plan: PlanView
    step: ManualProgress
    instructions: Markup

    @property
    def waiting(self) -> bool:
        """Waiting, and not answered yet (an accepted answer sets `decided_via` before the plan takes it)."""
        return self.step.status == AWAITING_CONFIRMATION and self.step.decided_via is None

    @property
    def wave(self) -> str:
        wave = next((w for w in self.plan.waves if w.index == self.step.wave), None)
        return f"wave {wave.name}" if wave is not None and wave.name else f"wave {self.step.wave + 1}"

    @property
    def left(self) -> str:
        """How long until the deadline, as a person reads it: `1 h 5 min`, `12 min`, `under a minute`."""
        if self.step.deadline is None:
            return ""
        minutes = int((self.step.deadline - datetime.now(UTC)).total_seconds() // 60)
        if minutes < 1:
            return "under a minute"
        hours, minutes = divmod(minutes, 60)
        return " ".join(part for part in (f"{hours} h" if hours else "", f"{minutes} min" if minutes else "") if part)


def render_instructions(text: str) -> Markup:
    """A manual step's Markdown as HTML: raw HTML escaped, javascript:/vbscript:/file:/data: links refused."""
    return Markup(_MARKDOWN.render(text))  # markdown-it escapes every text and attribute it emits


def _manual_items(view: PlanView, waiting_only: bool) -> list[ManualItem]:
    items = [ManualItem(view, step, render_instructions(step.instructions)) for step in view.manual]
    return [m for m in items if m.waiting or not waiting_only]


async def _waiting_manual(svc: Services, session: Session) -> list[ManualItem]:
    """The waiting manual steps of the running plans of this person's customers (their live progress)."""
    principal = session.principal
    stored = await svc.store.plans.list_plans(customer_ids=principal.customer_filter(), limit=PAGE_LIMIT)
    running = [p.plan_id for p in stored if p.status not in PLAN_TERMINAL and p.manual]
    views = await asyncio.gather(*(visible_plan(svc, principal, plan_id) for plan_id in running))
    return [m for view in views if view is not None for m in _manual_items(view, waiting_only=True)]


def _sessions(request: Request) -> Sessions:
    found: Sessions | None = getattr(request.app.state, "approval_sessions", None)
    if found is None:
        found = request.app.state.approval_sessions = Sessions()
    return found


def _session(request: Request) -> Session | None:
    return _sessions(request).get(request.cookies.get(COOKIE))


def _secure(request: Request, svc: Services) -> bool:
    return request.url.scheme == "https" or svc.settings.public_base().startswith("https://")


def _planned_steps(view: ExecutionView) -> list[str]:
    """The steps its latest validation said the change takes (the execution logs them as it validates)."""
    if view.permission_report is not None and view.permission_report.plan:
        return list(view.permission_report.plan)
    for entry in reversed(view.log):
        if entry.message.startswith("validated: "):
            return [s for s in entry.message.removeprefix("validated: ").split("; ") if s and s != "ok"]
    return []


async def _item(svc: Services, view: ExecutionView) -> Item:
    rec = await svc.store.get_recommendation(view.recommendation_id)
    ui = (f"{svc.settings.web_ui_url.rstrip('/')}/namespaces/{quote(svc.settings.temporal_namespace)}"
          f"/workflows/{quote(view.execution_id)}")
    return Item(view, _planned_steps(view), rec.source if rec else None, ui)


def _render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"now": datetime.now().astimezone(), **context},
                                      status_code=status)


def _safe_next(target: str | None) -> str:
    """Only our own pages: a `next` elsewhere would make sign-in an open redirect."""
    if target and target.startswith("/approvals") and "//" not in target and "\\" not in target:
        return target
    return "/approvals"


def _sign_in(request: Request, svc: Services, target: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    csrf = secrets.token_urlsafe(32)
    response = _render(request, "signin.html", status, csrf=csrf, next=_safe_next(target), error=error)
    response.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/approvals",
                        secure=_secure(request, svc), max_age=3600)
    return response


async def _page(request: Request, svc: Services, session: Session, *, items: list[Item], plans: list[PlanView],
                manual: list[ManualItem] | None = None, focus: str | None = None, status: int = 200,
                missing: str | None = None) -> HTMLResponse:
    flash, session.flash = session.flash, None
    return _render(request, "approvals.html", status, session=session, principal=session.principal, items=items,
                   plans=plans, manual=manual or [], flash=flash, focus=focus, missing=missing,
                   here=request.url.path)


@router.get("", response_class=HTMLResponse)
async def pending(request: Request, svc: ServicesDep) -> Response:
    session = _session(request)
    if session is None:
        return _sign_in(request, svc, "/approvals")
    principal = session.principal
    found = await svc.store.list_executions(customer_ids=principal.customer_filter(),
                                            status=ExecutionStatus.AWAITING_APPROVAL, limit=PAGE_LIMIT)
    items = [await _item(svc, view) for view in found.executions]
    plans = [p for p in await svc.store.plans.list_plans(customer_ids=principal.customer_filter(), limit=PAGE_LIMIT)
             if p.status is PlanStatus.AWAITING_APPROVAL]
    manual = await _waiting_manual(svc, session)
    return await _page(request, svc, session, items=items, plans=plans, manual=manual)


@router.get("/plans/{plan_id}", response_class=HTMLResponse)
async def one_plan(plan_id: str, request: Request, svc: ServicesDep) -> Response:
    session = _session(request)
    if session is None:
        return _sign_in(request, svc, request.url.path)
    view = await visible_plan(svc, session.principal, plan_id)
    if view is None:
        return await _page(request, svc, session, items=[], plans=[], status=404,
                           missing=f"There is no plan {plan_id} that you may see.")
    return await _page(request, svc, session, items=[], plans=[view], focus=plan_id,
                       manual=_manual_items(view, waiting_only=False))


@router.get("/{execution_id}", response_class=HTMLResponse)
async def one(execution_id: str, request: Request, svc: ServicesDep) -> Response:
    session = _session(request)
    if session is None:
        return _sign_in(request, svc, request.url.path)
    view = await _find(svc, execution_id)
    if view is None or not session.principal.sees(view.customer_id):
        return await _page(request, svc, session, items=[], plans=[], status=404,
                           missing=f"There is no execution {execution_id} that you may see.")
    return await _page(request, svc, session, items=[await _item(svc, view)], plans=[], focus=execution_id)


@router.post("/login")
async def login(request: Request, svc: ServicesDep, token: Text = "", csrf: Text = "",
                next: Text = "/approvals") -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not expected or not secrets.compare_digest(expected.encode(), csrf.encode()):
        return _sign_in(request, svc, next, "The sign-in form had expired; please sign in again.", status=403)
    principal = svc.tokens.authenticate(token.strip()) if token.strip() else None
    if principal is None:
        return _sign_in(request, svc, next, "That token is not known here.", status=401)
    session_id, _ = _sessions(request).open(principal)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict", path="/approvals",
                        secure=_secure(request, svc), max_age=int(_sessions(request).lifetime))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/approvals")
    return response


@router.post("/logout")
async def logout(request: Request, svc: ServicesDep, csrf: Text = "") -> Response:
    session = _session(request)
    if session is not None and session.csrf_ok(csrf):
        _sessions(request).close(request.cookies.get(COOKIE))
    response = RedirectResponse("/approvals", status_code=303)
    response.delete_cookie(COOKIE, path="/approvals")
    return response


async def _decided(request: Request, svc: Services, csrf: str, back: str, decision: str,
                   decide: Callable[[Session, bool], Awaitable[Outcome]],
                   choices: tuple[str, str] = ("approve", "reject")) -> Response:
    """The outcome of a form whose buttons are `choices` (yes, no), shown once on the page it came from."""
    session = _session(request)
    if session is None:
        return _sign_in(request, svc, back, "Your session has ended; sign in again, then decide.", status=401)
    if not session.csrf_ok(csrf):
        session.flash = Flash(False, "That form had expired: nothing was decided. Please try again.")
    elif decision not in choices:
        session.flash = Flash(False, f"Choose {choices[0].title()} or {choices[1].title()}: nothing was decided.")
    else:
        outcome: Outcome = await decide(session, decision == choices[0])
        text = outcome.message[:1].upper() + outcome.message[1:]
        session.flash = Flash(outcome.accepted, text if outcome.accepted else f"Refused: {outcome.message}.")
    return RedirectResponse(_safe_next(back), status_code=303)


@router.post("/plans/{plan_id}/decide")
async def decide_plan(plan_id: str, request: Request, svc: ServicesDep, decision: Text = "", comment: Text = "",
                      csrf: Text = "", back: Text = "/approvals") -> Response:
    return await _decided(request, svc, csrf, back, decision, lambda session, approve: decide_plan_as(
        svc, session.principal, plan_id, approve, comment.strip()))


@router.post("/plans/{plan_id}/items/{item_id}/answer")
async def answer_manual(plan_id: str, item_id: str, request: Request, svc: ServicesDep, answer: Text = "",
                        comment: Text = "", evidence: Evidence = "", csrf: Text = "",
                        back: Text = "/approvals") -> Response:
    return await _decided(request, svc, csrf, back, answer, lambda session, confirm: answer_manual_as(
        svc, session.principal, plan_id, item_id, confirm, comment.strip(), evidence.strip()),
        choices=("confirm", "fail"))


@router.post("/{execution_id}/decide")
async def decide(execution_id: str, request: Request, svc: ServicesDep, decision: Text = "", comment: Text = "",
                 csrf: Text = "", back: Text = "/approvals") -> Response:
    return await _decided(request, svc, csrf, back, decision, lambda session, approve: decide_as(
        svc, session.principal, execution_id, approve, comment.strip(), via="page"))
