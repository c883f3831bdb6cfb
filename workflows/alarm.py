"""A failed undo's alarm, repeated until a person acknowledges it.

ROLLBACK_FAILED leaves a resource changed that Reclaim could not put back: the
execution fails at once (Temporal's own alarm), and before it does it starts
this workflow, abandoned to outlive it, which tells the notify file's channels
again every `every` until someone acknowledges (`reclaim acknowledge`, the
`acknowledge` signal or update). Its id is `alarm-<execution id>`, so there is
one per execution however often the failure is seen.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.notifications import Acknowledgement, AlarmInput
    from domain.policy import Role
    from workflows.notify import tell
    from workflows.outcomes import refuse_update

#: Who may acknowledge: anyone who can act on executions (a viewer only watches).
ACKNOWLEDGING_ROLES = frozenset({Role.OPERATOR, Role.APPROVER, Role.ADMIN})


def alarm_id(execution_id: str) -> str:
    return f"alarm-{execution_id}"


@workflow.defn(name="RollbackAlarm")
class RollbackAlarmWorkflow:
    def __init__(self) -> None:
        self._acknowledged: Acknowledgement | None = None
        self._told = 0

    @workflow.run
    async def run(self, alarm: AlarmInput) -> Acknowledgement:
        sequence = alarm.notification.sequence + alarm.told
        while True:
            await tell(alarm.notification.model_copy(update={"sequence": sequence, "at": workflow.now()}))
            self._told += 1
            sequence += 1
            if await self._acknowledged_within(alarm):
                assert self._acknowledged is not None
                return self._acknowledged
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(alarm.model_copy(update={"told": alarm.told + self._told}))

    async def _acknowledged_within(self, alarm: AlarmInput) -> bool:
        try:
            await workflow.wait_condition(lambda: self._acknowledged is not None, timeout=alarm.every)
        except TimeoutError:
            return False
        return True

    @workflow.signal(name="acknowledge")
    def acknowledge_signal(self, ack: Acknowledgement) -> None:
        if self._acknowledged is None and ack.role in ACKNOWLEDGING_ROLES:
            self._acknowledged = ack

    @workflow.update(name="acknowledge")
    def acknowledge_update(self, ack: Acknowledgement) -> Acknowledgement:
        self._acknowledged = self._acknowledged or ack
        return self._acknowledged

    @acknowledge_update.validator
    def _validate_acknowledge(self, ack: Acknowledgement) -> None:
        if ack.role not in ACKNOWLEDGING_ROLES:
            refuse_update(f"a {ack.role.value} may not acknowledge an alarm")
        if self._acknowledged is not None:
            refuse_update(f"already acknowledged by {self._acknowledged.actor}")

    @workflow.query(name="told")
    def told(self) -> int:
        """How many times people have been told so far (this run)."""
        return self._told
