"""ImportWorkflow: one import or scan (what a Temporal Schedule of `reclaim schedule` starts, and what
`POST /api/v1/imports` starts), kept in the read model, and optionally a dry-run plan of the NEW
recommendations that waits for a person.

The plan is an ordinary PlanWorkflow, started as a child that outlives this workflow (its parent
close policy abandons it), with the import's own id as the plan id: `plan:<import id>`.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.imports import SOURCE_ERROR, ImportActivities, PlanRequest
    from domain.imports import ImportInput, ImportResult
    from domain.plan import plan_workflow_id
    from workflows.options import RECORD_RETRY, STORE_TIMEOUT
    from workflows.plan import PlanWorkflow

#: A scan of many accounts and regions reads CloudWatch for every resource: allow it time.
IMPORT_TIMEOUT = timedelta(hours=2)
IMPORT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), backoff_coefficient=2.0,
                           maximum_interval=timedelta(minutes=2), maximum_attempts=5,
                           non_retryable_error_types=[SOURCE_ERROR])


@workflow.defn
class ImportWorkflow:
    def __init__(self) -> None:
        self._phase = "importing"

    @workflow.run
    async def run(self, req: ImportInput) -> ImportResult:
        outcome = await workflow.execute_activity_method(
            ImportActivities.import_recommendations, req, start_to_close_timeout=IMPORT_TIMEOUT,
            retry_policy=IMPORT_RETRY)
        result = outcome.result
        if req.plan is None:
            self._phase = "done"
            return result
        if not result.new_ids:
            self._phase = "done"
            return result.model_copy(update={"plan_note": "no NEW recommendation: no plan opened"})
        self._phase = "opening the plan"
        plan_id = workflow.info().workflow_id
        plan = await workflow.execute_activity_method(
            ImportActivities.store_import_plan, PlanRequest(plan_id=plan_id, input=req, candidates=result.new_ids),
            start_to_close_timeout=STORE_TIMEOUT, retry_policy=RECORD_RETRY)
        if plan is None:
            self._phase = "done"
            return result.model_copy(update={"plan_note": "the NEW recommendations were taken up meanwhile"})
        await workflow.start_child_workflow(
            PlanWorkflow.run, plan, id=plan_workflow_id(plan_id), parent_close_policy=ParentClosePolicy.ABANDON,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        self._phase = "done"
        return result.model_copy(update={"planned": plan.view.total, "plan_id": plan_id})

    @workflow.query
    def phase(self) -> str:
        return self._phase
