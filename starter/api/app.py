"""The FastAPI application: `reclaim api` serves it; `create_app(services)` wires it for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from runtime import logmask
from runtime.settings import Settings
from runtime.temporal_client import connect
from starter.api import errors, metrics
from starter.api.auth import TokenStore
from starter.api.deps import Services
from starter.api.limits import BodySizeLimit
from starter.api.routes import approvals_page, events, executions, health, plans, recommendations, slack
from starter.api.routes import imports as imports_routes
from starter.api.routes import metrics as metrics_routes
from starter.api.routes import schedules as schedules_routes
from starter.executions import Executions


def create_app(services: Services | None = None, settings: Settings | None = None) -> FastAPI:
    """With `services`, use them (tests, the embedded stack); without, connect on start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            slack.prepare(app, services.settings)  # a malformed identities file stops start-up
            yield
            return
        from store.repository import Store

        config = settings or Settings()
        logmask.install()  # served without the CLI (uvicorn --factory): no secret in a log line either
        slack.prepare(app, config)  # a malformed identities file stops start-up, before anything is opened
        client = await connect(config, lazy=True)  # /healthz answers 503 until Temporal does
        store = await Store.open(config.database())
        app.state.services = Services(
            settings=config, store=store,
            executions=Executions(client, config.task_queue, accounts=config.accounts(), signer=config.approval_signer()),
            tokens=TokenStore.load(config.api_tokens_file, config.api_tokens),
        )
        try:
            yield
        finally:
            await store.close()

    app = FastAPI(
        title="Reclaim API",
        version="1",
        description="Launch, approve, roll back and watch cost-saving executions.",
        lifespan=lifespan,
    )
    if services is not None:
        app.state.services = services  # usable without a lifespan run (httpx ASGITransport)
    errors.install(app)
    app.add_middleware(BodySizeLimit)
    metrics.install(app)  # per-app registry + request-duration middleware
    app.include_router(executions.router)
    app.include_router(events.router)
    app.include_router(plans.router)
    app.include_router(recommendations.router)
    app.include_router(imports_routes.router)
    app.include_router(schedules_routes.router)
    app.include_router(metrics_routes.router)
    app.include_router(health.router)
    app.include_router(slack.router)
    app.include_router(approvals_page.router)
    return app
