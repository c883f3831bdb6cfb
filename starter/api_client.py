"""The CLI's HTTP path: `ApiExecutions` steers executions through the REST API instead of Temporal.

Used when both RECLAIM_API_URL and RECLAIM_API_TOKEN are set. It is a `starter.steering.Steering`
like `starter.executions.Executions` and raises the same errors, so every command keeps its
one-line failures. Who acts is the token's subject and role: `--as`
and RECLAIM_ROLE do not apply on this path.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from domain.execution import ApprovalInput, ApprovalRecord, ExecutionRequest, ExecutionView, RollbackInput
from domain.notifications import Acknowledgement
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus
from starter.executions import (
    SETTLED,
    AccountRefused,
    InvalidCursor,
    NotFound,
    ReclaimError,
    Refused,
    ResourceBusy,
    StaleRecommendation,
    Started,
)
from starter.polling import poll

URL_VARIABLE = "RECLAIM_API_URL"
TOKEN_VARIABLE = "RECLAIM_API_TOKEN"
#: The API's largest page of executions.
_PAGE = 500


def api_configured() -> bool:
    return bool(os.environ.get(URL_VARIABLE, "").strip() and os.environ.get(TOKEN_VARIABLE, "").strip())


class ApiExecutions:
    """Open with `async with ApiExecutions(url, token) as executions:` (or `ApiExecutions.from_env()`)."""

    def __init__(self, base_url: str, token: str, timeout: float = 60.0) -> None:
        try:
            import httpx
        except ImportError:  # pragma: no cover - httpx ships with the dev extras
            raise ReclaimError("talking to the API needs httpx: pip install httpx") from None
        self.base_url = base_url.rstrip("/")
        self._httpx = httpx
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )

    @classmethod
    def from_env(cls) -> ApiExecutions:
        url, token = os.environ.get(URL_VARIABLE, "").strip(), os.environ.get(TOKEN_VARIABLE, "").strip()
        if not (url and token):
            raise ReclaimError(f"set both {URL_VARIABLE} and {TOKEN_VARIABLE} to use the API")
        return cls(url, token)

    async def __aenter__(self) -> ApiExecutions:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # -- Steering ----------------------------------------------------------------------------------

    async def save_recommendations(self, recs: list[Recommendation]) -> None:
        """Nothing to do: POST /execute keeps an inline recommendation once it accepts it."""

    async def start(self, request: ExecutionRequest, *, force: bool = False) -> Started:
        """Start through POST /execute; the server applies its own policy and records the token's subject."""
        body = {
            "recommendation": request.recommendation.model_dump(mode="json", exclude_none=True),
            "dry_run": request.options.dry_run,
            "auto_approve": request.options.auto_approve,
            "force": force,
        }
        data = await self._call("POST", "/api/v1/executions/execute", body, busy=ResourceBusy)
        return Started(str(data["execution_id"]), created=bool(data["created"]))

    async def status(self, execution_id: str) -> ExecutionView:
        data = await self._call("GET", f"/api/v1/executions/{quote(execution_id, safe='')}")
        return _view(data)

    async def wait(
        self, execution_id: str, until: frozenset[ExecutionStatus] = SETTLED, timeout: float = 600.0
    ) -> ExecutionView:
        """Poll GET until the execution reaches one of `until`."""
        return await poll(
            lambda: self.status(execution_id), lambda view: view.status in until,
            interval=0.1, backoff=1.5, max_interval=1.0, timeout=timeout,
            too_long=lambda view: ReclaimError(f"{execution_id} is still {view.status.value} after {timeout:.0f} s"),
        )

    async def decide(self, execution_id: str, approve: bool, attempt: ApprovalInput) -> ApprovalRecord:
        """Approve or reject as the token's subject; `attempt` gives only the comment.
        The API records a refusal in its audit trail before it answers."""
        verb, key = ("approve", "comment") if approve else ("reject", "reason")
        data = await self._call(
            "POST", f"/api/v1/executions/{quote(execution_id, safe='')}/{verb}", {key: attempt.comment},
        )
        return ApprovalRecord.model_validate(data)

    async def rollback(self, execution_id: str, request: RollbackInput) -> str:
        data = await self._call(
            "POST", f"/api/v1/executions/{quote(execution_id, safe='')}/rollback", {"reason": request.reason}
        )
        return str(data["message"])

    async def acknowledge(self, execution_id: str, ack: Acknowledgement) -> Acknowledgement:
        """As the token's subject; `ack` gives only the comment."""
        data = await self._call(
            "POST", f"/api/v1/executions/{quote(execution_id, safe='')}/acknowledge", {"comment": ack.comment},
        )
        return Acknowledgement.model_validate(data)

    async def cancel(self, execution_id: str) -> None:
        await self._call("POST", f"/api/v1/executions/{quote(execution_id, safe='')}/cancel")

    async def list_executions(
        self, *, customer_id: str | None = None, status: ExecutionStatus | None = None, limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[ExecutionView], str | None]:
        """GET /api/v1/executions from `cursor`, page after page until `limit` views (newest first);
        the cursor of what comes after them, None at the end."""
        views: list[ExecutionView] = []
        while len(views) < limit:
            params: dict[str, Any] = {"limit": min(_PAGE, limit - len(views))}
            if customer_id is not None:
                params["customer_id"] = customer_id
            if status is not None:
                params["status"] = status.value
            if cursor is not None:
                params["cursor"] = cursor
            data = await self._call("GET", "/api/v1/executions", params=params)
            views += [_view(item) for item in data["executions"]]
            cursor = data.get("next_cursor")
            if cursor is None:
                break
        return views, cursor

    # -- HTTP --------------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *,
        params: dict[str, Any] | None = None, busy: type[ReclaimError] = Refused,
    ) -> Any:
        httpx = self._httpx
        try:
            if method == "GET":
                response = await self._http.get(path, params=params)
            else:
                response = await self._http.request(method, path, json=body if body is not None else {})
        except httpx.TimeoutException:
            raise ReclaimError(f"the API at {self.base_url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ReclaimError(f"cannot reach the API at {self.base_url} ({type(exc).__name__}: {exc})") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success:
            if data is None and response.status_code != 204:
                raise ReclaimError(f"the API at {self.base_url} answered {method} {path} with something not JSON")
            return data
        raise _error(response.status_code, data, busy, self.base_url)


def _view(data: Any) -> ExecutionView:
    if not isinstance(data, dict):
        raise ReclaimError("the API answered with something that is not an execution")
    try:
        return ExecutionView.model_validate({k: v for k, v in data.items() if k != "web_ui_url"})
    except ValidationError as exc:
        problems = exc.error_count()
        raise ReclaimError(f"the API answered with an execution this CLI cannot read ({problems} errors)") from None


def _error(status: int, data: Any, busy: type[ReclaimError], base_url: str) -> ReclaimError:
    code = data.get("error") if isinstance(data, dict) else None
    detail = _detail(data.get("detail") if isinstance(data, dict) else None) or f"HTTP {status}"
    if status == 404:
        return NotFound(detail)
    if status == 409 and code == "stale_recommendation":
        return StaleRecommendation(detail)
    if status == 409 and code == "account_refused":
        return AccountRefused(detail)
    if status == 409:
        return ResourceBusy(detail) if code == "resource_busy" else busy(detail)
    if status == 401:
        return ReclaimError(f"the API refused the token ({detail})")
    cursor_problem = _problem_with(data, "query.cursor") if status == 422 else None
    if cursor_problem is not None:
        return InvalidCursor(cursor_problem)
    if status in (403, 422):
        return ReclaimError(detail)
    return ReclaimError(f"the API at {base_url} answered {status}: {detail}")


def _problem_with(data: Any, field: str) -> str | None:
    """The API's message about `field`, if its `detail` names it."""
    detail = data.get("detail") if isinstance(data, dict) else None
    for item in detail if isinstance(detail, list) else []:
        if isinstance(item, dict) and item.get("field") == field:
            return str(item.get("message", ""))
    return None


def _detail(detail: Any) -> str:
    """The API's `detail`: a sentence, or a list of `{field, message}`; always one line."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "message" in item:
                field = item.get("field")
                parts.append(f"{field}: {item['message']}" if field else str(item["message"]))
            else:
                parts.append(str(item))
        detail = "; ".join(parts)
    return " ".join(str(detail or "").split())
