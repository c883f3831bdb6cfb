"""`python -m bench` at tiny sizes: the result has its shape and is saved. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import run


def test_bench_throughput_and_api_at_tiny_sizes(tmp_path: Path) -> None:
    result = run(["--only", "throughput,api", "--n", "4", "--warmup", "1", "--compare-n", "0",
                  "--api-rows", "300", "--api-requests", "3", "--results", str(tmp_path)])

    assert result["complete"] is True
    assert json.loads((tmp_path / "latest.json").read_text()) == result
    assert len(list(tmp_path.glob("bench-*.json"))) == 1
    throughput = result["throughput"]
    assert throughput["executions"] == 4
    assert {"engine_per_s", "baseline_per_s", "engine_to_baseline", "cpu_ms_per_execution"} <= set(throughput)
    assert {"worker", "server", "worker_plus_server"} <= set(throughput["cpu_ms_per_execution"])
    assert result["api"]["rows"] == 300
    for name in ("get_one", "list_first_page", "list_filtered"):
        assert result["api"][name]["n"] == 3
    assert "approval" not in result and "parked" not in result


def test_bench_approval_and_parked_at_tiny_sizes(tmp_path: Path) -> None:
    result = run(["--only", "approval,parked", "--approvals", "2", "--parked", "3", "--parked-cache", "2",
                  "--warmup", "1", "--results", str(tmp_path)])

    assert result["complete"] is True
    for path in ("signal", "update"):
        assert result["approval"][path]["n"] == 2
    parked = result["parked"]
    assert (parked["executions"], parked["parked"], parked["max_cached_workflows"]) == (3, 3, 2)
    assert parked["worker_rss_mib"] > 0
