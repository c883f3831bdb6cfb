"""What every route may depend on, as type aliases (`ExecutionsDep`, `CallerDep`, …)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from domain.policy import Role
from runtime.settings import Settings
from starter.api.auth import Principal, TokenStore
from starter.api.errors import ApiError
from starter.executions import Executions
from store.repository import Store


@dataclass
class Services:
    settings: Settings
    executions: Executions
    store: Store
    tokens: TokenStore

    @property
    def steering(self) -> Executions:
        """The executions as the API steers them: a refused decision recorded in this store, "via api"."""
        return self.executions.recording(self.store, via="api")


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]

_bearer = HTTPBearer(auto_error=False)


def caller(
    svc: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "unauthenticated", "a bearer token is required")
    principal = svc.tokens.authenticate(credentials.credentials)
    if principal is None:
        raise ApiError(401, "unauthenticated", "unknown token")
    return principal


CallerDep = Annotated[Principal, Depends(caller)]


def role(required: Role) -> Callable[[Principal], Principal]:
    def check(principal: CallerDep) -> Principal:
        if not principal.at_least(required):
            raise ApiError(403, "forbidden", f"this needs role {required.value} or higher")
        return principal

    return check


ViewerDep = Annotated[Principal, Depends(role(Role.VIEWER))]
OperatorDep = Annotated[Principal, Depends(role(Role.OPERATOR))]
ApproverDep = Annotated[Principal, Depends(role(Role.APPROVER))]
