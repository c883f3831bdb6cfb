"""Base model for every input and output that crosses a Temporal or HTTP boundary."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown fields are refused: a typo in a recommendation must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=True)
