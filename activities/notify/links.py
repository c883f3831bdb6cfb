"""Links in messages, built where the message is sent (the delivery activity), not in the workflow.

Where people reach Reclaim is a fact of the deployment, not of an execution: the worker's settings
(`RECLAIM_PUBLIC_URL`, the Web UI's address, the namespace) say it at send time, so a moved API or
Web UI is linked correctly in the next message without touching a workflow or its history.
A link the notification already carries is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from domain.notifications import Links, Notification, NotificationEvent, Subject
from domain.plan import plan_workflow_id


@dataclass(frozen=True)
class LinkBase:
    public_url: str
    """The API's address as people reach it: the approval page is `<public_url>/approvals/...`."""
    web_ui_url: str
    namespace: str = "default"

    def approval_page(self, n: Notification) -> str:
        base = self.public_url.rstrip("/")
        if n.subject is Subject.PLAN:
            return f"{base}/approvals/plans/{quote(n.subject_id, safe='')}"
        return f"{base}/approvals/{quote(n.subject_id, safe='')}"

    def web_ui(self, n: Notification) -> str:
        workflow_id = plan_workflow_id(n.subject_id) if n.subject is Subject.PLAN else n.subject_id
        return (f"{self.web_ui_url.rstrip('/')}/namespaces/{quote(self.namespace, safe='')}"
                f"/workflows/{quote(workflow_id, safe='')}")

    def report(self, n: Notification) -> str:
        return f"{self.public_url.rstrip('/')}/api/v1/plans/{quote(n.subject_id, safe='')}/report?format=md"

    def fill(self, n: Notification) -> Notification:
        """`n` with the links it lacks: the Web UI always, the approval page when it asks for a decision,
        a finished plan's report."""
        asks = n.asks_decision or n.event is NotificationEvent.PLAN_AWAITING_APPROVAL
        finished = n.subject is Subject.PLAN and n.event is NotificationEvent.PLAN_FINISHED
        links = Links(web_ui=n.links.web_ui or self.web_ui(n),
                      approval_page=n.links.approval_page or (self.approval_page(n) if asks else None),
                      report=n.links.report or (self.report(n) if finished else None))
        return n if links == n.links else n.model_copy(update={"links": links})
