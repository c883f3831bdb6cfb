"""`reclaim dev`: the embedded stack in one foreground process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from temporalio.client import Client

from activities.aws import SessionFactory
from activities.windows import WindowActivities
from runtime.settings import Settings
from runtime.temporal_client import connect_when_ready
from runtime.worker_metrics import metrics_served
from starter.api.deps import Services
from starter.codec_server import DevCodec, codec_running, dev_codec
from starter.devserver import DevServer, dev_server, port_open
from store.repository import Store
from worker import build_worker, mask_notify_secrets


@dataclass
class Embedded:
    server: DevServer
    client: Client
    store: Store
    settings: Settings
    codec: DevCodec | None = None  # with encryption on: the codec server the Web UI decodes through
    metrics_url: str | None = None  # with RECLAIM_WORKER_METRICS_PORT set: the worker's /metrics


@contextlib.asynccontextmanager
async def embedded_stack(
    settings: Settings, *, port: int, ui_port: int | None, sessions: SessionFactory | None = None,
    persistent: bool = True, codec_port: int | None = None,
) -> AsyncIterator[Embedded]:
    """Dev server + store + one worker, torn down in reverse order. With encryption on (RECLAIM_ENCRYPT,
    `--encrypt`), a codec server too (`codec_port`, default RECLAIM_CODEC_SERVER_PORT), and the Web UI
    decodes through it. With RECLAIM_WORKER_METRICS_PORT set, the worker's /metrics as `reclaim worker`
    serves it."""
    codec = None
    if settings.encrypt:
        codec_port = codec_port or settings.codec_server_port
        if port_open("127.0.0.1", codec_port):
            raise RuntimeError(f"codec server port {codec_port} is taken; choose another with --codec-port")
        codec = dev_codec(settings, codec_port, ui_port)
    with dev_server(settings.home, port=port or None, ui_port=ui_port, persistent=persistent,
                    ui_codec_endpoint=codec.ui_endpoint if codec else None) as server:
        settings.temporal_address = server.address
        if server.ui_url:
            settings.web_ui_url = server.ui_url
        client = await connect_when_ready(settings)
        store = await Store.open(settings.database())
        sessions = sessions or SessionFactory(
            role_arn_template=settings.role_arn_template, endpoint_url=settings.aws_endpoint_url,
            budget=settings.aws_budget(), coalesce_window=settings.aws_coalesce_window_ms / 1000,
            validate_read_age=settings.aws_validate_read_age_s,
            patient_window=settings.aws_patient_window_ms / 1000,
        )
        notify = settings.notify()
        if notify is not None:
            mask_notify_secrets(notify)  # as `reclaim worker` does: the channels' secrets masked in its logs
        worker = build_worker(client, task_queue=settings.task_queue, sessions=sessions, store=store,
                              max_concurrent_activities=settings.max_concurrent_activities,
                              max_cached_workflows=settings.max_cached_workflows, notify=notify,
                              windows=WindowActivities(settings.windows_file, sessions=sessions),
                              accounts=settings.accounts())
        try:
            async with contextlib.AsyncExitStack() as running:
                if codec is not None:
                    await running.enter_async_context(codec_running(codec))
                metrics_url = running.enter_context(
                    metrics_served(settings.worker_metrics_host, settings.worker_metrics_port))
                await running.enter_async_context(worker)
                yield Embedded(server, client, store, settings, codec, metrics_url)
        finally:
            await store.close()


async def wait_for_interrupt() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def api_services(stack: Embedded) -> Services:
    from starter.api.auth import TokenStore
    from starter.executions import Executions

    settings = stack.settings
    return Services(settings=settings, executions=Executions(stack.client, settings.task_queue,
                                                             signer=settings.approval_signer()),
                    store=stack.store, tokens=TokenStore.load(settings.api_tokens_file, settings.api_tokens))


@contextlib.asynccontextmanager
async def api_running(stack: Embedded, port: int, services: Services | None = None, *,
                      any_port_if_taken: bool = False, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """The REST API beside the worker, sharing its client and store, until the block ends; its URL.
    `any_port_if_taken`: on a free port when another process has `port` (the demo); else a taken
    port is a RuntimeError naming it. `sock`: already listening (bound before the stack started)."""
    from starter.api.server import listening_socket, serve

    host = stack.settings.api_host
    sock = sock or listening_socket(host, port, any_port_if_taken=any_port_if_taken)
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    task = asyncio.create_task(serve(stack.settings, host, port, services or api_services(stack), stop, sock))
    try:
        yield f"http://{host}:{port}"
    finally:
        stop.set()
        await task


async def run_dev(settings: Settings, *, port: int, ui_port: int, api_port: int, codec_port: int | None = None) -> None:
    from starter.api.server import listening_socket

    # The API's port is held before anything starts: a taken one stops `reclaim dev` at once with a
    # sentence, and nothing the stack starts (a connection's local port) can take it meanwhile.
    with contextlib.closing(listening_socket(settings.api_host, api_port, any_port_if_taken=False)) as api_sock:
        async with embedded_stack(settings, port=port, ui_port=ui_port, codec_port=codec_port) as stack, \
                api_running(stack, api_port, sock=api_sock) as api_url:
            await _announce_and_wait(settings, stack, api_url)


async def _announce_and_wait(settings: Settings, stack: Embedded, api_url: str) -> None:
    print(f"Temporal at {stack.server.address}; Web UI at {stack.server.ui_url}")
    print(f"API at {api_url} (OpenAPI: {api_url}/docs)")
    if stack.metrics_url is not None:
        print(f"worker metrics (notification deliveries) at {stack.metrics_url}")
    if stack.codec is not None:
        print(f"payloads encrypted (another terminal's CLI: RECLAIM_ENCRYPT=true); codec server at "
              f"{stack.codec.url} (the Web UI decodes through it); "
              f"as {stack.codec.operator}, for this run: temporal workflow show --workflow-id ID "
              f"{stack.codec.cli_flags()}")
    print(f"worker polling '{settings.task_queue}'; store {stack.store.url}. Ctrl-C to stop.", flush=True)
    await wait_for_interrupt()
    print("stopping…", flush=True)
