"""Results back after a LinkedIn ``mirror`` run that only removed members, then one whose result
was empty (VERIFY-18d F5): the removal made requests to the segment the send before it named,
so ``results_back`` observes that segment (its size just changed), not 'the materialization
names no segment_id'; the empty run keeps observing it, and ``volume`` says why it failed.

Real exports (DuckDB -> Dagster -> HTTP to the sandbox), one real Dagster instance.
"""

from __future__ import annotations

import dagster as dg
import requests

from line_exports import SqlSource, build_export
from line_exports.results_back import RESULTS_CHECK, SEGMENT_READY_CHECK, VOLUME_CHECK
from line_exports.sandbox import SandboxServer
from line_exports_tests.test_linkedin import ACCOUNT, FAST
from line_exports_tests.test_linkedin import resource as linkedin_resource
from line_exports_tests.test_results_back import Clock, Daily, checks_of, instance, observations

__all__ = ["instance"]  # the fixture

NAME = "li_mirror_results"


def day(server: SandboxServer, clock: Clock, members: int) -> Daily:
    """The mirror export of the first ``members`` contacts (the same asset every day)."""
    export = build_export(
        NAME,
        destination="linkedin",
        query=f"select 'm' || range || '@example.com' as email from range({members})",
        settings={
            "ad_account_id": ACCOUNT,
            "segment_name": "mirror seg",
            "sync_mode": "mirror",
            **FAST,
        },
        retry_policy=None,
    )
    resources = {"linkedin": linkedin_resource(server), "sql_source": SqlSource()}
    return Daily(export, resources, clock=clock, days=3)


def meta_of(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [materialization] = result.asset_materializations_for_node(NAME)
    return {k: v.value for k, v in materialization.metadata.items()}


def test_a_mirror_run_that_only_removed_observes_the_segment_the_send_before_named(
    sandbox_server: SandboxServer, instance: dg.DagsterInstance
) -> None:
    requests.put(
        f"{sandbox_server.url}/_sandbox/linkedin/matching",
        json={"build_seconds": 0, "match_rate": 0.5},
    ).raise_for_status()
    clock = Clock(sandbox_server)
    first = day(sandbox_server, clock, 40).send(instance)
    segment = str(meta_of(first)["segment_id"])
    assert checks_of(first)[RESULTS_CHECK].passed

    clock.advance(1)
    removed = day(sandbox_server, clock, 36).send(instance)  # 4 of 40 left (10%): removed
    meta = meta_of(removed)
    assert meta["members_removed"] == 4 and meta["rows_sent"] == 0 and meta["requests"]
    assert "segment_id" not in meta  # it sent no add: the destination names no segment
    checks = checks_of(removed)
    assert checks[RESULTS_CHECK].passed, checks[RESULTS_CHECK].metadata
    assert checks[SEGMENT_READY_CHECK].passed
    seen = observations(instance, NAME)[-1]
    assert (seen["segment_id"], seen["segment_named_in_run"]) == (segment, first.run_id)
    assert seen["sent_in_run"] == removed.run_id and seen["input_count"] == 36  # removed now

    clock.advance(1)
    empty = day(sandbox_server, clock, 0).send(instance)  # nothing removed, nothing sent
    assert meta_of(empty)["requests"] == 0
    checks = checks_of(empty)
    assert checks[RESULTS_CHECK].passed, checks[RESULTS_CHECK].metadata
    assert not checks[VOLUME_CHECK].passed  # says why: the send read 0 rows
    assert "read 0 rows" in str(checks[VOLUME_CHECK].metadata["reason"].value)
    seen = observations(instance, NAME)[-1]
    assert (seen["segment_id"], seen["sent_in_run"], seen["input_count"]) == (
        segment,
        removed.run_id,
        36,
    )
