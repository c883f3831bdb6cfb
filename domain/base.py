"""Base model for every input and output that crosses a Temporal or HTTP boundary."""

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown fields are refused: a typo in a recommendation must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=True)


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name like Europe/Paris)") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_time_zone)]
"""An IANA time zone name (quiet hours, change windows)."""
