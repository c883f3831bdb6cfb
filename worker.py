"""The Temporal worker: registers every workflow and activity of Reclaim.

Scale by running more of these against the same task queue. Credentials are
obtained here, at run time, by the activities' session factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxRestrictions

from activities.account_checks import AccountCheckActivities
from activities.accounts import AccountsSource
from activities.aws import AccountsLookup, SessionFactory
from activities.execution import ExecutionActivities
from activities.imports import ImportActivities
from activities.notify.delivery import NotifyActivities
from activities.plans import PlanActivities
from activities.records import RecordActivities, plan_records_task_queue, records_task_queue
from activities.savings import SavingsActivities
from activities.watch import WatchActivities
from activities.windows import WindowActivities, load_windows_file
from domain.notifications import NotifyFile
from runtime import logmask
from runtime.codec import codec_from_settings
from runtime.settings import Settings
from runtime.temporal_client import connect_patiently
from runtime.worker_metrics import metrics_served
from store.repository import Store
from workflows.alarm import RollbackAlarmWorkflow
from workflows.execution import ExecutionWorkflow
from workflows.imports import ImportWorkflow
from workflows.lease import ResourceLeaseWorkflow
from workflows.plan import PlanWorkflow
from workflows.sandbox import CompiledSandboxRunner
from workflows.savings import SavingsCheckWorkflow

WORKFLOWS = [ExecutionWorkflow, ResourceLeaseWorkflow, PlanWorkflow, RollbackAlarmWorkflow, ImportWorkflow,
             SavingsCheckWorkflow]

#: Modules the sandbox need not re-import for every workflow run: pure or side-effect free.
PASSTHROUGH = ("pydantic", "pydantic_core", "annotated_types", "boto3", "botocore", "domain",
               "activities", "store", "sqlalchemy",
               # A Rust extension (the codec's AES-GCM) cannot be initialised twice in one process:
               # a workflow module that reaches it, even through an import, must share the worker's.
               "cryptography",
               # Never used by a workflow; a workflow module that imports `worker` reaches them, and
               # they subclass urllib's handlers at import, which the sandbox refuses.
               "prometheus_client", "jwt")


def workflow_runner() -> CompiledSandboxRunner:
    return CompiledSandboxRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


#: Slots of the read-model worker: writes wait on one database, more at once only queue there.
RECORD_SLOTS = 8
#: The plans' store activities (their item pages, outcomes, reports, account checks): a plan has
#: at most one write and one read under way, so a few slots serve many plans.
PLAN_RECORD_SLOTS = 4


class ReclaimWorker:
    """The worker on the main task queue and, beside it, the read-model writers.

    Durable read-model writes run on their own task queue (`records_task_queue`) and the plans'
    store activities on another (`plan_records_task_queue`), each with its own few slots: however
    slow or wedged the database, they never take a slot that a backup, a mutation or a
    verification needs, and a plan's writes never wait behind the executions' retried ones.
    """

    def __init__(self, main: Worker, records: Worker, plan_records: Worker) -> None:
        self.main, self.records, self.plan_records = main, records, plan_records

    async def __aenter__(self) -> ReclaimWorker:
        entered: list[Worker] = []
        try:
            for worker in (self.records, self.plan_records, self.main):
                await worker.__aenter__()
                entered.append(worker)
        except BaseException:
            for worker in reversed(entered):
                await worker.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.main.__aexit__(*exc)  # type: ignore[arg-type]
        finally:
            try:
                await self.plan_records.__aexit__(*exc)  # type: ignore[arg-type]
            finally:
                await self.records.__aexit__(*exc)  # type: ignore[arg-type]


def build_worker(
    client: Client,
    *,
    task_queue: str,
    sessions: SessionFactory,
    store: Store,
    max_concurrent_activities: int = 32,
    max_cached_workflows: int = 1000,
    interceptors: Sequence[Interceptor] = (),
    executor: ThreadPoolExecutor | None = None,
    notify: NotifyActivities | None = None,
    windows: WindowActivities | None = None,
    accounts: AccountsLookup | None = None,
) -> ReclaimWorker:
    """`notify`: the notify file's channels and rules (none: nobody is told, executions go on);
    `windows`: the change windows and freezes (none: a change starts once approved);
    `accounts`: the accounts file as it is now, which running plans check before starting items
    (none: every account is allowed)."""
    execution = ExecutionActivities(sessions)
    records = RecordActivities(store)
    plans = PlanActivities(store)
    savings = SavingsActivities(sessions, store)
    imports = ImportActivities(sessions, store)
    notify = notify or NotifyActivities(NotifyFile())
    if notify.ledger is None:  # deliveries kept where every worker of this store sees them
        notify.ledger = store.deliveries
    windows = windows or WindowActivities(sessions=sessions)
    watch = WatchActivities(sessions)
    account_checks = AccountCheckActivities(accounts)
    main = Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        # The store activities stay here too: local activities run on this worker, and
        # executions recorded before the records queue existed schedule their writes here.
        activities=[*execution.all(), *records.all(), *plans.all(), *imports.all(), savings.measure_savings,
                    *watch.all(), notify.route, windows.ask],
        activity_executor=executor or ThreadPoolExecutor(max_workers=max_concurrent_activities),
        max_concurrent_activities=max_concurrent_activities,
        max_concurrent_local_activities=max_concurrent_activities,
        max_cached_workflows=max_cached_workflows,
        workflow_runner=workflow_runner(),
        interceptors=interceptors,
    )
    writer = Worker(
        client,
        task_queue=records_task_queue(task_queue),
        # Plans route their notifications here as ordinary activities (a plan runs no local activity)
        # and check their items' accounts here: neither needs AWS, neither may take its slots.
        activities=[records.record_execution, *plans.all(), notify.deliver, notify.route, *account_checks.all()],
        max_concurrent_activities=RECORD_SLOTS,
        interceptors=interceptors,
    )
    plan_writer = Worker(
        client,
        task_queue=plan_records_task_queue(task_queue),
        activities=[*plans.all(), *account_checks.all()],
        max_concurrent_activities=PLAN_RECORD_SLOTS,
        interceptors=interceptors,
    )
    return ReclaimWorker(main, writer, plan_writer)


def mask_notify_secrets(notify: NotifyActivities) -> None:
    """The notify file's secrets as they resolve now, masked in this process's logs."""
    from activities.notify.config import SecretError, resolve

    for channel in notify.file.channels.values():
        for ref in channel.secret_refs().values():
            with contextlib.suppress(SecretError):  # unresolvable now: its delivery will say so
                logmask.register_secret(resolve(ref))


async def run_worker(stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set), then drain and shut down cleanly."""
    settings = Settings()
    logmask.install()
    notify = settings.notify()  # a malformed notify file stops start-up at once, naming its line and field
    if notify is not None:
        mask_notify_secrets(notify)
    if settings.windows_file is not None:
        load_windows_file(settings.windows_file)  # a malformed file stops start-up too
    accounts = settings.accounts()
    if accounts is not None:
        accounts()  # a malformed accounts file stops start-up too, naming its line and field
    if settings.encrypt:
        codec_from_settings(settings)  # a missing or malformed key stops start-up too, before Temporal is sought
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    # Served from here, before Temporal is sought: a scraper sees the worker up while it waits.
    with metrics_served(settings.worker_metrics_host, settings.worker_metrics_port) as metrics_url:
        if metrics_url is not None:
            logging.getLogger("reclaim.worker").info("worker metrics at %s", metrics_url)
        await _serve(settings, stop, notify, accounts)


async def _serve(settings: Settings, stop: asyncio.Event, notify: NotifyActivities | None,
                 accounts: AccountsSource | None) -> None:
    client = await connect_patiently(settings, stop, logging.getLogger("reclaim.worker"))
    if client is None:  # stopped before Temporal ever answered
        return
    store = await Store.open(settings.database())
    sessions = SessionFactory(role_arn_template=settings.role_arn_template, endpoint_url=settings.aws_endpoint_url,
                              budget=settings.aws_budget(), accounts=accounts,
                              coalesce_window=settings.aws_coalesce_window_ms / 1000,
                              validate_read_age=settings.aws_validate_read_age_s,
                              patient_window=settings.aws_patient_window_ms / 1000)
    windows = WindowActivities(settings.windows_file, sessions=sessions)  # SSM windows read through the accounts' roles
    worker = build_worker(client, task_queue=settings.task_queue, sessions=sessions, store=store,
                          max_concurrent_activities=settings.max_concurrent_activities,
                          max_cached_workflows=settings.max_cached_workflows, notify=notify, windows=windows,
                          accounts=accounts)
    try:
        async with worker:
            logging.getLogger("reclaim").info("worker polling task queue %s", settings.task_queue)
            await stop.wait()
        for line in sessions.economy():  # what the account's API was spared, for the operator
            logging.getLogger("reclaim.gateway").info(line)
    finally:
        await store.close()


def main() -> None:
    logmask.configure(Settings().log_level)

    async def _main() -> None:
        await run_worker()
        # sdk-python#300: give the Rust bridge a moment before the interpreter exits.
        await asyncio.sleep(0.1)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
