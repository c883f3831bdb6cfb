"""A plan's report: every item's outcome, savings estimated vs verified, failures and rollbacks.

Built from the stored items (so it can be rebuilt any time) and rendered as JSON
or Markdown. Pure: the activity that stores it and the CLI/API that show it share it.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from domain.base import StrictModel
from domain.manual import MANUAL_KIND, ManualProgress, ManualStep
from domain.plan import Outcome, PlanStatus, PlanView, RateControl, Strategy, WaveProgress, outcome
from domain.recommendation import Recommendation
from domain.recovery import RecoveryTime, recovery_markdown, recovery_time
from domain.status import ACTIVE, ExecutionStatus

_ROLLED_BACK = {ExecutionStatus.ROLLED_BACK.value, ExecutionStatus.ROLLBACK_FAILED.value}


class ReportItem(StrictModel):
    position: int
    wave: int
    recommendation: Recommendation | None = None
    manual: ManualStep | None = None
    status: str
    reason: str | None = None
    execution_id: str | None = None
    estimated_monthly_savings: float
    actual_monthly_savings: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    dry_run_status: str | None = None
    dry_run_reason: str | None = None
    approved: bool = False
    launch_started_at: datetime | None = Field(default=None, description="A drill: when it asked DRS to launch.")
    launched_at: datetime | None = Field(default=None, description="A drill: when every instance was launched.")
    server_launches: dict[str, datetime] = Field(
        default_factory=dict, description="A drill: when each source server was seen launched (its view's launches).")
    current_status: str | None = Field(
        default=None, description="The execution's status now (a rollback after the plan ended shows here)."
    )
    measured_monthly_savings: float | None = Field(
        default=None, description="Measured a while after the change (`SavingsCheck`), when it has been.")
    measurement_method: str | None = Field(default=None, description="cost-explorer or price-table.")

    @property
    def final_status(self) -> str:
        """The plan's own record of the item, unless the executions read model says what came
        after it (a rollback asked once the plan was done). A read model still showing a step the
        plan has seen settle is behind (its writes wait out a database outage): the plan wins."""
        if self.status == "REFUSED":  # the execution says REJECTED_BY_VALIDATION; the plan knows why
            return self.status
        current = self.current_status
        if current is None or (current in _STEPS_BEFORE_SETTLING and self.status not in _UNSETTLED):
            return self.status
        return current


#: An execution's states before the plan hears it settled (ROLLING_BACK is not one: a rollback
#: may be asked after the plan is done).
_STEPS_BEFORE_SETTLING = frozenset(s.value for s in ACTIVE - {ExecutionStatus.ROLLING_BACK})
#: The plan's own word for an item it has not seen settle (its execution's status says more).
_UNSETTLED = frozenset({"PENDING", "RUNNING", *_STEPS_BEFORE_SETTLING})


class ReportLine(StrictModel):
    recommendation_id: str = Field(description="The recommendation's id, or the manual item's.")
    kind: str = Field(description="The action kind, or `manual`.")
    resource_id: str | None = Field(default=None, description="None for a manual item.")
    account_id: str | None = None
    region: str | None = None
    wave: str
    status: str
    execution_id: str | None = None
    reason: str | None = None
    estimated_monthly_savings: float
    actual_monthly_savings: float | None = None
    measured_monthly_savings: float | None = None
    measurement_method: str | None = None
    dry_run_status: str | None = None
    decided_by: str | None = Field(default=None, description="A manual item: who confirmed or failed it.")
    comment: str | None = Field(default=None, description="A manual item: what they said.")
    evidence: str | None = Field(default=None, description="A manual item: the link or text they gave.")


class PlanReport(StrictModel):
    plan_id: str
    name: str
    status: PlanStatus
    reason: str | None = None
    requested_by: str
    approved_by: str | None = None
    strategy: Strategy
    rate: RateControl
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    total: int
    counts: dict[str, int]
    outcomes: dict[str, int]
    estimated_monthly_savings: float = Field(description="Sum over the plan's items.")
    estimated_monthly_savings_done: float = Field(description="Sum over the items that completed and stay done.")
    actual_monthly_savings: float = Field(description="Verified savings of the items that completed and stay done.")
    measured_monthly_savings: float | None = Field(
        default=None, description="Measured savings of the items done that have been measured (None: none yet).")
    measured_items: int = Field(default=0, description="Items done that have a measured figure.")
    waves: list[WaveProgress]
    items: list[ReportLine]
    failures: list[ReportLine]
    refusals: list[ReportLine] = Field(default_factory=list,
                                       description="Refused by policy (protected, production, cooldown, busy, "
                                                   "drifted): answers, not failures.")
    rollbacks: list[ReportLine]
    recovery: RecoveryTime | None = Field(default=None, description="Drills: time to launch per server and wave.")
    manual: list[ReportLine] = Field(default_factory=list,
                                     description="Manual items: who answered, their comment and evidence.")


def build_report(view: PlanView, items: list[ReportItem]) -> PlanReport:
    names = {w.index: w.name for w in view.waves}
    answers = {m.id: m for m in view.manual}
    lines = [_line(item, names.get(item.wave, str(item.wave)), answers) for item in items]
    done = [item for item in items if item.final_status == ExecutionStatus.COMPLETED.value]
    measured = [item.measured_monthly_savings for item in done if item.measured_monthly_savings is not None]
    counts: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for line in lines:
        counts[line.status] = counts.get(line.status, 0) + 1
        kind = outcome(line.status).value
        outcomes[kind] = outcomes.get(kind, 0) + 1
    return PlanReport(
        plan_id=view.plan_id, name=view.name, status=view.status, reason=view.reason,
        requested_by=view.requested_by, approved_by=view.approval.actor if view.approval else None, strategy=view.strategy, rate=view.rate,
        dry_run=view.dry_run, started_at=view.started_at, finished_at=view.finished_at, total=len(items),
        counts=dict(sorted(counts.items())), outcomes=dict(sorted(outcomes.items())),
        estimated_monthly_savings=round(sum(i.estimated_monthly_savings for i in items), 2),
        estimated_monthly_savings_done=round(sum(i.estimated_monthly_savings for i in done), 2),
        actual_monthly_savings=round(sum(i.actual_monthly_savings or 0.0 for i in done), 2),
        measured_monthly_savings=round(sum(measured), 2) if measured else None, measured_items=len(measured),
        waves=view.waves,
        items=lines,
        failures=[line for line in lines if outcome(line.status) is Outcome.FAILED],
        refusals=[line for line in lines if outcome(line.status) is Outcome.REFUSED],
        rollbacks=[line for line in lines if line.status in _ROLLED_BACK],
        recovery=recovery_time(items, names),
        manual=[line for line in lines if line.kind == MANUAL_KIND],
    )


def _line(item: ReportItem, wave: str, answers: dict[str, ManualProgress]) -> ReportLine:
    rec = item.recommendation
    if rec is None:
        step = item.manual
        assert step is not None, "a plan item is a recommendation or a manual item"
        answer = answers.get(step.id)
        return ReportLine(
            recommendation_id=step.id, kind=MANUAL_KIND, wave=wave, status=item.final_status,
            reason=item.reason, estimated_monthly_savings=0.0, dry_run_status=item.dry_run_status,
            decided_by=answer.decided_by if answer else None, comment=(answer.comment or None) if answer else None,
            evidence=(answer.evidence or None) if answer else None,
        )
    return ReportLine(
        recommendation_id=rec.id, kind=rec.kind, resource_id=rec.resource_id, account_id=rec.account_id,
        region=rec.region, wave=wave, status=item.final_status, execution_id=item.execution_id,
        reason=item.reason, estimated_monthly_savings=item.estimated_monthly_savings,
        actual_monthly_savings=item.actual_monthly_savings, dry_run_status=item.dry_run_status,
        measured_monthly_savings=item.measured_monthly_savings, measurement_method=item.measurement_method,
    )


def render_markdown(report: PlanReport) -> str:
    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    out = [
        f"# Plan {report.plan_id}{': ' + report.name if report.name else ''}",
        "",
        f"- Status: **{report.status.value}**" + (f" ({cell(report.reason)})" if report.reason else ""),
        f"- Requested by: {report.requested_by}" + (f"; approved by: {report.approved_by}" if report.approved_by else ""),
        f"- Strategy: {report.strategy.value}; max concurrency {report.rate.max_concurrency}; error threshold "
        f"{report.rate.error_threshold or 'none'}" + ("; ramp-up" if report.rate.ramp_up else ""),
        f"- Started: {report.started_at.isoformat()}" + (
            f"; finished: {report.finished_at.isoformat()}" if report.finished_at else ""),
        f"- Items: {report.total} (" + ", ".join(f"{k} {v}" for k, v in report.counts.items()) + ")",
        f"- Monthly savings: estimated ${report.estimated_monthly_savings:,.2f} for the plan, "
        f"${report.estimated_monthly_savings_done:,.2f} for what was done; verified "
        f"${report.actual_monthly_savings:,.2f}" + (
            f"; measured ${report.measured_monthly_savings:,.2f} ({report.measured_items} of them measured)"
            if report.measured_monthly_savings is not None else ""),
        "",
        "## Waves",
        "",
        "| # | wave | mode | state | items | outcome |",
        "|---|---|---|---|---|---|",
    ]
    for wave in report.waves:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(wave.counts.items()))
        out.append(f"| {wave.index + 1} | {cell(wave.name)} | {wave.mode.value} | {wave.state.value} | {wave.size} | {counts} |")
    for title, lines in (("Failures", report.failures), ("Refused by policy", report.refusals),
                         ("Rollbacks", report.rollbacks)):
        if lines:
            out += ["", f"## {title}", "", "| recommendation | resource | status | reason |", "|---|---|---|---|"]
            out += [f"| {cell(x.recommendation_id)} | {cell(x.resource_id)} | {x.status} | {cell(x.reason)} |"
                    for x in lines]
    if report.manual:
        out += ["", "## Manual steps", "", "| item | wave | status | by | comment | evidence |",
                "|---|---|---|---|---|---|"]
        out += [f"| {cell(x.recommendation_id)} | {cell(x.wave)} | {x.status} | {cell(x.decided_by)} "
                f"| {cell(x.comment)} | {cell(x.evidence)} |" for x in report.manual]
    out += recovery_markdown(report.recovery)
    measured = report.measured_items > 0  # the column appears once a savings check has measured an item
    out += ["", "## Items", "",
            "| recommendation | kind | resource | wave | status | estimated $/mo | verified $/mo "
            + ("| measured $/mo (method) " if measured else "") + "| execution |",
            "|---|---|---|---|---|---|---|" + ("---|" if measured else "") + "---|"]
    for x in report.items:
        verified = "" if x.actual_monthly_savings is None else f"{x.actual_monthly_savings:,.2f}"
        checked = "" if x.measured_monthly_savings is None else \
            f"{x.measured_monthly_savings:,.2f} ({x.measurement_method})"
        out.append(f"| {cell(x.recommendation_id)} | {x.kind} | {cell(x.resource_id)} | {cell(x.wave)} | {x.status} "
                   f"| {x.estimated_monthly_savings:,.2f} | {verified} " + (f"| {checked} " if measured else "")
                   + f"| {cell(x.execution_id)} |")
    return "\n".join(out) + "\n"
