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
    """The harness at tiny sizes, with a cache smaller than the runs in flight (each execution is
    two workflows with its lease), as the README's parked figure is measured."""
    result = run(["--only", "approval,parked", "--approvals", "2", "--parked", "3", "--parked-cache", "2",
                  "--warmup", "1", "--results", str(tmp_path)])

    assert result["complete"] is True
    for path in ("signal", "update"):
        assert result["approval"][path]["n"] == 2
    parked = result["parked"]
    assert (parked["executions"], parked["parked"], parked["max_cached_workflows"]) == (3, 3, 2)
    assert parked["worker_rss_mib"] > 0


def test_race_turns_every_manifest_entry_into_a_recommendation_traps_included() -> None:
    """The race part's mapping (pure): a tiny manifest as account.py writes it -> one plan's recommendations."""
    from collections import Counter

    from bench.race import CATEGORIES, category_of, recommendations

    regions = ["us-east-1", "us-west-2"]
    manifest = {
        "scale": 10, "regions": regions,
        "idle_instances": {regions[0]: ["i-01", "i-02", "i-03"], regions[1]: ["i-04"]},
        "prod_instances": {regions[0]: ["i-p1"], regions[1]: []},
        "unattached_volumes": {regions[0]: ["vol-01", "vol-02"], regions[1]: ["vol-03"]},
        "attached_gp2": {regions[0]: ["vol-a1"], regions[1]: []},
        "eips_unassociated": {regions[0]: ["eipalloc-1"], regions[1]: ["eipalloc-2"]},
        "eips_associated": {regions[0]: ["eipalloc-p"], regions[1]: []},
        "rds_oversized": {regions[0]: ["db-oversized-00000"], regions[1]: []},
        "rds_keep": {regions[0]: ["db-keep-00000"], regions[1]: []},
        "counts": {}, "seed_s": 0.1,
    }

    recs = recommendations(manifest, "race-t")
    by_category = Counter(category_of(r.id) for r in recs)
    assert by_category == {"idle_instances": 4, "prod_instances": 1, "unattached_volumes": 3, "attached_gp2": 1,
                           "eips_unassociated": 2, "eips_associated": 1, "rds_oversized": 1}
    assert Counter(r.kind for r in recs) == {"ec2.stop": 5, "ebs.delete": 3, "ebs.gp2_to_gp3": 1,
                                             "eip.release": 3, "rds.rightsize": 1}
    assert len({r.id for r in recs}) == len(recs) == 13
    # the traps are in, as a tags-and-types recommender lists them: Reclaim must refuse them
    traps = {r.resource_id for r in recs if CATEGORIES[category_of(r.id)].trap}
    assert traps == {"i-p1", "eipalloc-p"}
    assert {r.region for r in recs if r.resource_id in ("i-04", "vol-03", "eipalloc-2")} == {"us-west-2"}
    assert all(r.account_id == "123456789012" for r in recs)
    # interleaved: the first items are one of each category, not one category first
    assert len({category_of(r.id) for r in recs[:7]}) == 7
    # the params each kind validates against its own model
    from activities.actions.base import action_class

    for rec in recs:
        action_class(rec.kind).params_model.model_validate(rec.params)
    # a recommender that resizes every db.m5.xlarge also lists the untagged one
    naive = recommendations(manifest, "race-t", naive_rds=True)
    assert [r.resource_id for r in naive if category_of(r.id) == "rds_keep"] == ["db-keep-00000"]
