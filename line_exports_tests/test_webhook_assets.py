"""Dagster side: real materializations of ``line_oa_raw``/``line_oa_events``, schedules, sensors."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest
import requests
import sqlalchemy as sa

from line_exports.webhook.assets import LineOaWebhookResource, build_webhook_definitions
from line_exports.webhook.signature import sign

try:  # works whether or not line_exports_tests becomes a package
    from line_exports_tests.webhook_helpers import (
        base_event,
        body_of,
        every_event_type,
        make_source,
        running_server,
        signed_headers,
    )
except ImportError:
    from webhook_helpers import (
        base_event,
        body_of,
        every_event_type,
        make_source,
        running_server,
        signed_headers,
    )

SECRET = "00112233445566778899aabbccddeeff"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINE_EXPORTS_HOME", str(tmp_path / "home"))
    for name in ("SHOP_OA", "CAFE_OA", "ONCE_OA"):
        monkeypatch.setenv(f"LINE_CHANNEL_SECRET_{name}", SECRET)


def _materialize(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, dict]:
    result = dg.materialize(
        list(defs.assets),  # type: ignore[arg-type]
        resources=dict(defs.resources or {}),
        instance=instance,
    )
    assert result.success
    return {
        "/".join(m.asset_key.path): m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.event_specific_data.materialization]  # type: ignore[union-attr]
    }


def test_materialize_lands_events_with_metadata(tmp_path: Path) -> None:
    shop = make_source(schedule="0 * * * *", timezone="Asia/Tokyo")
    spool = tmp_path / "spool.sqlite3"
    target_url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    defs = build_webhook_definitions([shop], spool_path=spool, target_url=target_url)
    sent = every_event_type()
    redelivered = {**sent[0], "deliveryContext": {"isRedelivery": True}}
    with running_server([shop], spool) as url:
        endpoint = f"{url}/v1/task/{shop.source_id}"
        for body in (body_of(sent), body_of([redelivered])):
            assert requests.post(
                endpoint, data=body, headers=signed_headers(SECRET, body), timeout=5
            ).ok
        bad = body_of([base_event("follow", 99)])
        for _ in range(3):
            resp = requests.post(
                endpoint, data=bad, headers={"x-line-signature": sign("wrong", bad)}, timeout=5
            )
            assert resp.status_code == 403
        time.sleep(1.3)  # let the writer flush its reject counters

    with dg.instance_for_test() as instance:
        meta = _materialize(defs, instance)
        events = meta["shop_oa/line_oa_events"]
        raw = meta["shop_oa/line_oa_raw"]
        assert events["events_landed"].value == len(sent)
        assert events["duplicates_dropped"].value == 1
        assert events["bad_signatures_seen"].value == 3
        by_type = events["events_by_type"].value
        assert (
            by_type["message"] == 7 and by_type["messageEdited"] == 1 and by_type["teleport"] == 1
        )
        assert sum(by_type.values()) == len(sent)
        assert 0 <= events["lag_seconds_p99"].value <= events["lag_seconds_max"].value < 60
        assert raw["requests_landed"].value == 2 and raw["bad_signatures_seen"].value == 3
        # The channel secret is never part of metadata.
        assert SECRET not in repr(meta)

        # A second run finds nothing new and says so; the tables keep their rows.
        meta2 = _materialize(defs, instance)
        assert meta2["shop_oa/line_oa_events"]["events_landed"].value == 0
        assert meta2["shop_oa/line_oa_events"]["bad_signatures_seen"].value == 0

    engine = sa.create_engine(target_url)
    with engine.connect() as conn:
        count = conn.execute(sa.text(f"SELECT COUNT(*) FROM {shop.events_table}")).scalar()
    engine.dispose()
    assert count == len(sent)


def test_definitions_schedules_and_sensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shop = make_source(schedule="@hourly")
    cafe = make_source("cafe_oa", schedule="sensor")
    once = make_source("once_oa", schedule="off")
    spool = tmp_path / "spool.sqlite3"
    monkeypatch.setenv("LINE_OA_TARGET_URL", f"sqlite:///{tmp_path / 'w.sqlite'}")
    defs = build_webhook_definitions(
        [shop, cafe, once], spool_path=spool, target_url_env="LINE_OA_TARGET_URL"
    )
    keys = {k.to_user_string() for a in defs.assets for k in a.keys}  # type: ignore[union-attr]
    assert keys == {
        f"{n}/line_oa_{t}" for n in ("shop_oa", "cafe_oa", "once_oa") for t in ("raw", "events")
    }
    schedule = defs.resolve_schedule_def("shop_oa__line_oa_schedule")
    assert schedule.cron_schedule == "0 * * * *" and schedule.execution_timezone == "UTC"
    assert [s.name for s in defs.schedules or []] == ["shop_oa__line_oa_schedule"]
    sensor = defs.resolve_sensor_def("cafe_oa__line_oa_sensor")
    assert defs.resolve_job_def("once_oa__line_oa_land_job") is not None
    resource = defs.resources["line_oa_webhook"]  # type: ignore[index]
    assert isinstance(resource.target_url, dg.EnvVar)  # secret-capable URL stays an env ref

    resources = {"line_oa_webhook": LineOaWebhookResource(spool_path=str(spool))}
    with dg.build_sensor_context(resources=resources) as ctx:
        assert isinstance(sensor(ctx), dg.SkipReason)
    with running_server([cafe], spool) as url:
        body = body_of([base_event("join", 1, replyToken="r")])
        requests.post(
            f"{url}/v1/task/{cafe.source_id}",
            data=body,
            headers=signed_headers(SECRET, body),
            timeout=5,
        ).raise_for_status()
    with dg.build_sensor_context(resources=resources) as ctx:
        request = sensor(ctx)
    assert isinstance(request, dg.RunRequest) and request.run_key.startswith("cafe_oa-")

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [a for a in defs.assets if "cafe_oa" in a.node_def.name],  # type: ignore[union-attr]
            resources=dict(defs.resources or {}),
            instance=instance,
        )
        assert result.success
    with dg.build_sensor_context(resources=resources) as ctx:
        assert isinstance(sensor(ctx), dg.SkipReason)  # landed: nothing pending


def test_definitions_from_sources_file(tmp_path: Path) -> None:
    shop = make_source(schedule="@daily", timezone="Asia/Tokyo", mode="replace_on_new_data")
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(
        "sources:\n"
        f"  - name: {shop.name}\n"
        f"    source_id: {shop.source_id}\n"
        "    mode: replace_on_new_data\n"
        "    timezone: Asia/Tokyo\n"
        "    schedule: '@daily'\n"
    )
    defs = build_webhook_definitions(sources_path=sources_file)
    schedule = defs.resolve_schedule_def("shop_oa__line_oa_schedule")
    # @daily in Asia/Tokyo (the storage timezone, no scheduling_timezone given): 15:00 UTC.
    assert schedule.cron_schedule == "0 15 * * *" and schedule.execution_timezone == "UTC"
    dg.Definitions.validate_loadable(defs)
