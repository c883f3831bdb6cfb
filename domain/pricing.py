"""The price table shipped with Reclaim and the arithmetic every kind's savings model uses.

Prices are list prices from `data/prices.json` (its `source` and `as_of` say
where from and when); a region's price is the us-east-1 price times the
region's factor. Unknown items return None: a kind then falls back to the
recommender's own estimate rather than inventing one.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from typing import Any


@lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    return dict(json.loads(files("domain").joinpath("data/prices.json").read_text()))


def hours_per_month() -> float:
    return float(table()["hours_per_month"])


def region_factor(region: str) -> float:
    return float(table()["region_factor"].get(region, 1.0))


def _price(section: str, key: str, region: str) -> float | None:
    value = table()[section].get(key)
    return None if value is None else float(value) * region_factor(region)


def ec2_monthly(region: str, instance_type: str) -> float | None:
    hourly = _price("ec2_hourly", instance_type, region)
    return None if hourly is None else hourly * hours_per_month()


def rds_monthly(region: str, instance_class: str, multi_az: bool = False) -> float | None:
    hourly = _price("rds_hourly", instance_class, region)
    return None if hourly is None else hourly * hours_per_month() * (2 if multi_az else 1)


def ebs_monthly(region: str, volume_type: str, size_gib: int, iops: int = 0, throughput: int = 0) -> float | None:
    per_gb = _price("ebs_gb_month", volume_type, region)
    if per_gb is None:
        return None
    cost = per_gb * size_gib
    if volume_type == "gp3":
        t = table()
        cost += max(iops - 3000, 0) * float(t["ebs_gp3_iops_month_above_3000"]) * region_factor(region)
        cost += max(throughput - 125, 0) * float(t["ebs_gp3_mibps_month_above_125"]) * region_factor(region)
    return cost


def snapshot_monthly(region: str, size_gib: int) -> float:
    return float(table()["ebs_snapshot_gb_month"]) * size_gib * region_factor(region)


def flat(key: str, region: str) -> float:
    """A single-number price (e.g. `eip_idle_hourly`, `logs_gb_month`), regionalised."""
    return float(table()[key]) * region_factor(region)


def section(key: str) -> dict[str, float]:
    return {k: float(v) for k, v in table()[key].items()}


def price_source() -> str:
    t = table()
    return f"{t['source']} (as of {t['as_of']})"
