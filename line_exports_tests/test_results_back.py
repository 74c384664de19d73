"""Results back into Dagster: observations and checks from what each API reports after a send.

Real exports (DuckDB -> Dagster -> HTTP to an in-process sandbox on a free port), one real
Dagster instance per test, the daily sensor evaluated against it and its job run; the sandbox's
clock (``/_sandbox/clock``) and results-back's clock move forward together, "days later".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
import requests

from line_exports import LineMessagingResource, MaacResource, SqlSource, build_export
from line_exports.results_back import (
    MATCH_RATE_CHECK,
    RESULTS_CHECK,
    SEGMENT_READY_CHECK,
    VOLUME_CHECK,
    build_results_back,
)
from line_exports.results_back.maac import observe as observe_maac
from line_exports.results_back.observed import SentExport
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging.insight import store_of as insight_store
from line_exports.sandbox.maac import store_of as maac_store
from line_exports_tests.test_linkedin import ACCOUNT, FAST
from line_exports_tests.test_linkedin import resource as linkedin_resource

DAY = 86_400


class Clock:
    """results-back's "now", moved with the sandbox's clock."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, days: float) -> None:
        self.offset += days * DAY
        answer = requests.post(f"{self.server.url}/_sandbox/clock", json={"advance_days": days})
        assert answer.status_code == 200, answer.text


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }


def observations(instance: dg.DagsterInstance, key: str) -> list[dict[str, Any]]:
    """Every observation of the export, oldest first, as plain values."""
    records = instance.fetch_observations(dg.AssetKey(key), limit=100, ascending=True).records
    return [
        {k: v.value for k, v in r.asset_observation.metadata.items()}  # type: ignore[union-attr]
        for r in records
    ]


class Daily:
    """The definitions of one export with results back; a sensor tick and the run it asks."""

    def __init__(
        self, export: dg.AssetsDefinition, resources: dict[str, Any], **kwargs: Any
    ) -> None:
        self.export = export
        self.back = build_results_back(export, **kwargs)
        self.defs = dg.Definitions.merge(
            dg.Definitions(assets=[export], resources=resources), self.back
        )
        [self.sensor] = self.back.sensors or []

    def send(self, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        return result

    def tick(self, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult | str:
        """Evaluate the sensor; run what it requests (or return why it skipped)."""
        context = dg.build_sensor_context(instance=instance, definitions=self.defs)
        answer = self.sensor(context)
        if isinstance(answer, dg.SkipReason):
            return str(answer.skip_message)
        assert isinstance(answer, dg.RunRequest)
        job = self.defs.resolve_job_def(self.sensor.job_name)
        return job.execute_in_process(instance=instance, tags=answer.tags)


# -- LinkedIn ----------------------------------------------------------------------------------
def test_linkedin_segment_builds_then_ready_and_its_match_rate(
    sandbox_server: SandboxServer, instance: dg.DagsterInstance
) -> None:
    url = sandbox_server.url
    # LinkedIn takes up to 48 h; this segment takes 60 h, and LinkedIn matches 25% of it.
    requests.put(
        f"{url}/_sandbox/linkedin/matching", json={"build_seconds": 60 * 3600, "match_rate": 0.25}
    ).raise_for_status()
    clock = Clock(sandbox_server)
    export = build_export(
        "li_results",
        destination="linkedin",
        query="select 'user' || range || '@example.com' as email from range(400)",
        settings={"ad_account_id": ACCOUNT, "segment_name": "results seg", **FAST},
        retry_policy=None,
    )
    daily = Daily(
        export,
        {"linkedin": linkedin_resource(sandbox_server), "sql_source": SqlSource()},
        clock=clock,
        days=5,
    )
    sent = daily.send(instance)
    checks = checks_of(sent)  # the send's own run pulled once, right after the send
    assert checks[RESULTS_CHECK].passed and checks[VOLUME_CHECK].passed
    assert checks[SEGMENT_READY_CHECK].passed
    assert checks[MATCH_RATE_CHECK].metadata["evaluated"].value is False
    assert "24 h after the send" in str(daily.tick(instance))  # not due on the day of the send

    statuses = []
    for day in (1, 2, 3):
        clock.advance(1)
        run = daily.tick(instance)
        assert isinstance(run, dg.ExecuteInProcessResult) and run.success
        checks = checks_of(run)
        assert VOLUME_CHECK not in checks  # the daily job pulls; volume is judged per send
        statuses.append((day, checks[SEGMENT_READY_CHECK].passed))
    # Day 1: BUILDING for 24 h (fine); day 2: still BUILDING 48 h after creation (failed);
    # day 3: READY at 72 h, 25% matched: below the 30% threshold.
    assert statuses == [(1, True), (2, False), (3, True)]
    assert "48 h" in checks_of_day2(instance)
    assert not checks[MATCH_RATE_CHECK].passed
    assert "matchedCount" in str(checks[MATCH_RATE_CHECK].metadata["basis"].value)

    seen = observations(instance, "li_results")
    assert [o["segment_status"] for o in seen] == ["BUILDING"] * 3 + ["READY"]
    assert seen[-1]["input_count"] == 400 and "matched_count" not in seen[0]
    assert 60 <= seen[-1]["matched_count"] <= 140  # about 25% of 400, drawn per member
    assert seen[-1]["match_rate"] == pytest.approx(seen[-1]["matched_count"] / 400, abs=1e-4)
    assert [round(o["days_since_send"]) for o in seen] == [0, 1, 2, 3]

    clock.advance(3)  # 6 days after the send: past days=5, nothing more to pull
    assert "nothing more to pull" in str(daily.tick(instance))


def test_a_diff_run_that_sends_nothing_keeps_results_back_on_the_last_send(
    sandbox_server: SandboxServer, instance: dg.DagsterInstance
) -> None:
    requests.put(
        f"{sandbox_server.url}/_sandbox/linkedin/matching",
        json={"build_seconds": 0, "match_rate": 0.5},
    ).raise_for_status()
    clock = Clock(sandbox_server)
    export = build_export(
        "li_diff_results",
        destination="linkedin",
        query="select 'd' || range || '@example.com' as email from range(40)",
        settings={
            "ad_account_id": ACCOUNT,
            "segment_name": "diff seg",
            "sync_mode": "diff",
            **FAST,
        },
        retry_policy=None,
    )
    resources = {"linkedin": linkedin_resource(sandbox_server), "sql_source": SqlSource()}
    daily = Daily(export, resources, clock=clock, days=3)
    first = daily.send(instance)
    again = daily.send(instance)  # the same rows: diff sends nothing, names no segment
    [meta] = [m.metadata for m in again.asset_materializations_for_node("li_diff_results")]
    assert meta["rows_sent"].value == 0 and meta["requests"].value == 0
    assert checks_of(again)[RESULTS_CHECK].passed  # it observes the send before it
    seen = observations(instance, "li_diff_results")
    assert [o["sent_in_run"] for o in seen] == [first.run_id] * 2
    assert seen[-1]["segment_status"] == "READY"
    clock.advance(1.1)
    run = daily.tick(instance)  # day 1 of the first send: the day count goes on
    assert (
        isinstance(run, dg.ExecuteInProcessResult)
        and run.dagster_run.tags["line_exports/results_day"] == "1"
    )
    assert checks_of(run)[RESULTS_CHECK].passed
    assert observations(instance, "li_diff_results")[-1]["sent_in_run"] == first.run_id


def checks_of_day2(instance: dg.DagsterInstance) -> str:
    """The reason the segment_ready check gave when it failed."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("li_results"), SEGMENT_READY_CHECK), limit=10
    )
    reasons = [
        r.event.dagster_event.asset_check_evaluation_data.metadata.get("reason")
        for r in records
        if r.event and r.event.dagster_event
    ]
    return " ".join(str(r.value) for r in reasons if r is not None)


# -- LINE --------------------------------------------------------------------------------------
def test_line_unit_statistics_and_delivery_counts_over_days(
    sandbox_server: SandboxServer, instance: dg.DagsterInstance
) -> None:
    clock = Clock(sandbox_server)
    export = build_export(
        "line_results",
        destination="line_messaging",
        query="select 'U' || md5(range::varchar) as id from range(300)",
        settings={
            "target": "multicast_message",
            "template_message_multicast": '{"type": "text", "text": "Sale: https://example.com/sale"}',
            "custom_aggregation_units": "spring_sale",
        },
        retry_policy=None,
    )
    resources = {
        "line_messaging": LineMessagingResource(base_url=sandbox_server.url, poll_seconds=0.1),
        "sql_source": SqlSource(),
    }
    daily = Daily(export, resources, clock=clock, days=4, line_statistics=True)
    sent = daily.send(instance)
    assert checks_of(sent)[RESULTS_CHECK].passed
    for _ in range(2):
        clock.advance(1)
        run = daily.tick(instance)
        assert isinstance(run, dg.ExecuteInProcessResult)
        assert checks_of(run)[RESULTS_CHECK].passed

    seen = observations(instance, "line_results")
    assert [o["unit"] for o in seen] == ["spring_sale"] * 3
    # Right after the send nobody has opened it yet: LINE withholds figures under 20.
    assert "unique_impressions" not in seen[0]
    assert "uniqueImpression" in seen[0]["withheld"]["fields"]
    opened = [o["unique_impressions"] for o in seen[1:]]
    assert opened == sorted(opened) and opened[0] < opened[-1]  # more open it each day
    # 60% open within 7 days, sooner rather than later: sqrt(2/7) = 53% of them in 2 days.
    assert 0.6 * 300 * 0.4 < opened[-1] < 0.6 * 300 * 0.7
    assert seen[-1]["clicks"] >= seen[-1]["unique_clicks"] >= 20
    [row] = seen[-1]["clicks_by_url"].records
    assert row.data["url"] == "https://example.com/sale" and row.data["click"] == seen[-1]["clicks"]
    # The account's delivery counts of the send's day: unready that day, then 300 multicast.
    assert seen[0]["account_deliveries_status"] == "unready"
    assert seen[1]["account_deliveries_status"] == "ready"
    assert seen[1]["account_multicast_messages"] == 300

    # An account LINE has not granted per-unit statistics: the pull says so, a check fails.
    insight_store(sandbox_server.sandbox).per_unit_granted = False
    clock.advance(1)
    run = daily.tick(instance)
    assert isinstance(run, dg.ExecuteInProcessResult)
    failed = checks_of(run)[RESULTS_CHECK]
    assert not failed.passed
    assert "403" in str(failed.metadata["problems"].value)

    # A push carries its unit too (one per request, LINE's rule), so its statistics are the
    # unit's as well.
    push = build_export(
        "line_push_results",
        destination="line_messaging",
        query="select 'U' || md5((range + 1000)::varchar) as id from range(5)",
        settings={
            "target": "push_message",
            "template_message": '{"type": "text", "text": "Hi {{id}}"}',
            "custom_aggregation_units": "coupon_a",
        },
        retry_policy=None,
    )
    Daily(push, resources).send(instance)
    units = [d.unit for d in insight_store(sandbox_server.sandbox).deliveries if d.kind == "push"]
    assert units == ["coupon_a"] * 5

    # An audience export is observed by its audience's state.
    audience = build_export(
        "line_audience_results",
        destination="line_messaging",
        query="select 'U' || md5(range::varchar) as id from range(50)",
        settings={"target": "audience", "audience_name": "results audience"},
        retry_policy=None,
    )
    Daily(audience, resources, clock=clock).send(instance)
    [group] = observations(instance, "line_audience_results")
    assert (group["audience_status"], group["audience_count"]) == ("READY", 50)

    # Without line_statistics nothing is asked of that API (opt in).
    calls = sandbox_server.sandbox.count("GET", "/v2/bot/insight/message/event/aggregation")
    Daily(export, resources, clock=clock).tick(instance)
    assert sandbox_server.sandbox.count("GET", "/v2/bot/insight/message/event") == calls


# -- MAAC --------------------------------------------------------------------------------------
def maac_export(rows: int) -> dg.AssetsDefinition:
    return build_export(
        "maac_results",
        destination="maac",
        query=f"select 'U' || md5(range::varchar) as line_uid from range({rows})",
        settings={"data_object": "members", "import_key": "line_uid", "tags": "spring"},
        retry_policy=None,
    )


def test_maac_import_results_mismatch_file_and_volume(
    sandbox_server: SandboxServer, instance: dg.DagsterInstance
) -> None:
    import hashlib

    blocked = {"U" + hashlib.md5(str(n).encode()).hexdigest() for n in range(6, 10)}
    maac_store(sandbox_server.sandbox).blocked_uids.update(blocked)
    resources = {
        "maac": MaacResource(base_url=sandbox_server.url, poll_seconds=0.05),
        "sql_source": SqlSource(),
    }
    sent = Daily(maac_export(10), resources, min_match_rate=0.7).send(instance)
    checks = checks_of(sent)
    assert checks[RESULTS_CHECK].passed and checks[VOLUME_CHECK].passed
    rate = checks[MATCH_RATE_CHECK]
    assert not rate.passed and rate.metadata["match_rate"].value == 0.6
    [seen] = observations(instance, "maac_results")
    assert (seen["import_created"], seen["import_mismatched"], seen["import_total"]) == (6, 4, 10)
    assert seen["mismatch_rows"] == 4  # the rows of the file MAAC links to
    assert seen["mismatch_file"].startswith(sandbox_server.url)

    # Far fewer rows than the last send, then none: the volume check fails, saying why.
    smaller = checks_of(Daily(maac_export(3), resources).send(instance))[VOLUME_CHECK]
    assert (
        not smaller.passed and "30% of the previous send's 10" in smaller.metadata["reason"].value
    )
    empty = checks_of(Daily(maac_export(0), resources).send(instance))[VOLUME_CHECK]
    assert not empty.passed and empty.metadata["reason"].value == "the send read 0 rows"

    # A segment export: its member count against the UIDs sent.
    segment = build_export(
        "maac_segment_results",
        destination="maac",
        query="select 'U' || md5(range::varchar) as line_uid from range(8)",
        settings={"data_object": "segments", "segment_name": "results segment"},
        retry_policy=None,
    )
    rate = checks_of(Daily(segment, resources).send(instance))[MATCH_RATE_CHECK]
    assert rate.passed and rate.metadata["match_rate"].value == 1.0
    [seen] = observations(instance, "maac_segment_results")
    assert seen["segment_member_count"] == 8

    # A task or segment MAAC does not know (404): each call's problem, named, nothing observed.
    key = dg.AssetKey("maac_results")
    gone = observe_maac(resources["maac"], SentExport(key, 1, "r", 0.0, {"api_job_ids": [9999]}))
    assert len(gone.problems) == 1 and gone.problems[0].startswith("import task 9999: "), gone
    assert "404" in gone.problems[0] and gone.match_rate is None
    gone = observe_maac(resources["maac"], SentExport(key, 1, "r", 0.0, {"segment_id": 9999}))
    assert gone.problems[0].startswith("segment 9999: ") and "404" in gone.problems[0]
    assert gone.match_rate is None and not gone.metadata


def test_insight_endpoints_refuse_what_line_refuses(sandbox_server: SandboxServer) -> None:
    """insight.yml's parameter rules, over HTTP, with the sandbox's channel token."""
    url = f"{sandbox_server.url}/v2/bot/insight/message"
    auth = {"Authorization": "Bearer sandbox-line-channel-token"}

    def status(path: str, **params: str) -> int:
        return requests.get(f"{url}/{path}", params=params, headers=auth).status_code

    ok = {"customAggregationUnit": "unit_a", "from": "20261101", "to": "20261201"}
    assert status("event/aggregation", **ok) == 200
    assert status("event/aggregation", **{**ok, "customAggregationUnit": "has-dash"}) == 400
    assert status("event/aggregation", **{**ok, "to": "20261202"}) == 400  # over 30 days
    assert status("event/aggregation", **{**ok, "to": "20261031"}) == 400  # before from
    assert status("event/aggregation", **{**ok, "from": "20261131"}) == 400  # no such day
    assert status("delivery", date="20261201") == 200
    assert status("delivery", date="2026-12-01") == 400
    assert requests.get(f"{url}/delivery", params={"date": "20261201"}).status_code == 401
