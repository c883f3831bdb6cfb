"""The workflow sandbox, minus a cost it need not have.

temporalio 1.35's sandbox enters a run through `exec` of a small source string,
and it does so not only per activation but for every payload sequence it encodes
or decodes (to ask the run for its serialization context): six visitor passes
per activation. Each `exec` of a string compiles it again; profiled under load
that was about a tenth of the worker's CPU. The strings are a handful of
constants, so they are compiled once here. Everything else (restrictions,
per-run module isolation, determinism checks) is the SDK's own.

This touches the SDK's private `_Instance`: temporalio is pinned exactly in
pyproject, and every workflow test runs through this runner, so an upgrade that
changes it fails loudly instead of silently losing the sandbox.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import CodeType
from typing import Any

from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance


@functools.lru_cache(maxsize=64)
def _compiled(code: str) -> CodeType:
    return compile(code, "<workflow_sandbox>", "exec")


class _CompiledInstance(_Instance):
    def _run_code(self, code: str, **extra_globals: Any) -> None:
        super()._run_code(_compiled(code), **extra_globals)  # type: ignore[arg-type]  # exec takes code objects


@dataclass(frozen=True)
class CompiledSandboxRunner(SandboxedWorkflowRunner):
    """`SandboxedWorkflowRunner` whose entry snippets are compiled once per process."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _CompiledInstance(det, self.runner_class, self.restrictions)
