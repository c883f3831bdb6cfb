"""The action catalogue as data: what `reclaim actions` prints and the API serves."""

from __future__ import annotations

import inspect
from typing import Any

from activities.actions.base import registry


def catalogue() -> list[dict[str, Any]]:
    entries = []
    for kind, cls in registry().items():
        doc = inspect.getdoc(cls) or ""
        entries.append({
            "kind": kind,
            "resource_type": cls.resource_type,
            "summary": summary(doc),
            "reversible": cls.reversible,
            "destroys_data": cls.destroys_data,
            "base_risk": cls.base_risk.value,
            "permissions": list(cls.permissions),
            "params_schema": cls.params_model.model_json_schema(),
        })
    return entries


def summary(doc: str) -> str:
    """The docstring's first paragraph on one line (its first line alone can stop mid-sentence)."""
    paragraph = doc.strip().split("\n\n")[0]
    return " ".join(paragraph.split())
