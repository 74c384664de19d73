"""The LINE OA import reference's source settings, each doing what the reference says.

TD's "LINE OA Streaming Import Integration": Create Source data settings (Tags, Database, Raw
Table, Events Table) and Data Placement / Schedule (Delay Transfer, Scheduling Timezone, the
storage Timezone). Each is read: Database is the schema the tables land in, Delay Transfer
moves each scheduled run after its tick, the Scheduling Timezone is the cron's zone (the
storage timezone stays the one ``received_at`` is written in), Tags are Dagster tags.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
import requests
import sqlalchemy as sa

from line_exports.destinations.line_messaging.consent import (
    build_suppression_asset,
    load_suppressed,
)
from line_exports.session import SESSION_TIME_TAG
from line_exports.webhook.assets import build_webhook_definitions
from line_exports.webhook.config import SourceConfigError, parse_sources
from line_exports.webhook.landing import land_source

try:  # works whether or not line_exports_tests becomes a package
    from line_exports_tests.webhook_helpers import (
        USER,
        base_event,
        body_of,
        running_server,
        signed_headers,
    )
except ImportError:
    from webhook_helpers import USER, base_event, body_of, running_server, signed_headers

SECRET = "00112233445566778899aabbccddeeff"
SOURCE_ID = "5f0c2f9e-8a1d-4c7b-9e3a-2b6d4f8a1c05"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINE_EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LINE_CHANNEL_SECRET_SHOP_OA", SECRET)


def _source(**settings: object) -> dict[str, object]:
    return {"name": "shop_oa", "source_id": SOURCE_ID, **settings}


def test_delay_and_scheduling_timezone_drive_the_schedule(tmp_path: Path) -> None:
    # As a sources file writes them: delay as a YAML integer, tags as a YAML list.
    (source,) = parse_sources(
        {
            "sources": [
                _source(
                    schedule="@daily",
                    delay=600,
                    timezone="UTC",
                    scheduling_timezone="Asia/Tokyo",
                    tags=["crm", "line.oa"],
                )
            ]
        }
    )
    assert (source.delay, source.scheduling_timezone, source.timezone) == (
        600,
        "Asia/Tokyo",
        "UTC",
    )
    defs = build_webhook_definitions([source], spool_path=tmp_path / "spool.sqlite3")
    schedule = defs.resolve_schedule_def("shop_oa__line_oa_schedule")
    # Tokyo midnight is 15:00 UTC; ten minutes of Delay Transfer: 15:10 UTC.
    assert schedule.cron_schedule == "10 15 * * *"
    with dg.instance_for_test() as instance:
        fire = datetime(2026, 3, 1, 15, 10, tzinfo=timezone.utc)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=fire)
        (request,) = schedule.evaluate_tick(context).run_requests or []
        # The run stands for its tick (Tokyo midnight), not for when it started.
        assert request.tags[SESSION_TIME_TAG] == "2026-03-02T00:00:00+09:00"
        assert request.tags["crm"] == "" and request.tags["line.oa"] == ""
        early = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=fire.replace(minute=0)
        )
        assert schedule.evaluate_tick(early).run_requests == []
    # Tags find the source: on both assets and on the landing job's runs.
    for asset in defs.assets or []:
        for spec in asset.specs:  # type: ignore[union-attr]
            assert {"crm": "", "line.oa": ""}.items() <= spec.tags.items()
    assert defs.resolve_job_def("shop_oa__line_oa_land_job").tags["crm"] == ""


def test_database_is_where_both_tables_land(tmp_path: Path) -> None:
    (source,) = parse_sources({"sources": [_source(database="line_crm", schedule="off")]})
    spool = tmp_path / "spool.sqlite3"
    target_url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    with running_server([source], spool) as url:
        body = body_of(
            [
                base_event("follow", 1, timestamp=1_700_000_000_000),
                base_event("unfollow", 2, timestamp=1_700_000_001_000),
            ]
        )
        requests.post(
            f"{url}/v1/task/{source.source_id}",
            data=body,
            headers=signed_headers(SECRET, body),
            timeout=5,
        ).raise_for_status()
    defs = build_webhook_definitions([source], spool_path=spool, target_url=target_url)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            list(defs.assets),  # type: ignore[arg-type]
            resources=dict(defs.resources or {}),
            instance=instance,
        )
    assert result.success
    tables = {
        m.asset_key.to_user_string(): m.metadata["table"].value  # type: ignore[union-attr]
        for m in result.asset_materializations_for_node("shop_oa__line_oa_land")
    }
    assert tables == {
        "shop_oa/line_oa_raw": "line_crm.line_oa_raw_shop_oa",
        "shop_oa/line_oa_events": "line_crm.line_oa_events_shop_oa",
    }
    engine = sa.create_engine(target_url)
    with engine.connect() as conn:
        landed = conn.execute(
            sa.text("SELECT event_type FROM line_crm.line_oa_events_shop_oa ORDER BY 1")
        ).scalars()
        assert list(landed) == ["follow", "unfollow"]
        placed = conn.execute(
            sa.text("SELECT DISTINCT table_schema FROM information_schema.tables")
        ).scalars()
        assert set(placed) == {"line_crm"}  # nothing in the default schema
    engine.dispose()
    # The LINE exports' suppression list reads the events where they landed.
    suppression = build_suppression_asset([source], target_url)
    assert dg.materialize([suppression]).success
    assert load_suppressed(target_url) == [USER["userId"]]


def test_database_on_a_sqlite_target_is_refused_and_loses_nothing(tmp_path: Path) -> None:
    (source,) = parse_sources({"sources": [_source(database="line_crm")]})
    spool = tmp_path / "spool.sqlite3"
    with running_server([source], spool) as url:
        body = body_of([base_event("follow", 1)])
        requests.post(
            f"{url}/v1/task/{source.source_id}",
            data=body,
            headers=signed_headers(SECRET, body),
            timeout=5,
        ).raise_for_status()
    sqlite = f"sqlite:///{tmp_path / 'w.sqlite'}"
    with pytest.raises(SourceConfigError, match="database 'line_crm' is a schema"):
        land_source(source, spool_path=spool, target_url=sqlite)
    duck = f"duckdb:///{tmp_path / 'w.duckdb'}"
    assert land_source(source, spool_path=spool, target_url=duck).events_landed == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"delay": 600}, "has no scheduled time to delay"),  # schedule: sensor below
        ({"delay": -5}, "whole number of seconds"),
        ({"delay": 1.5}, "whole number of seconds"),
        ({"scheduling_timezone": "Mars/Olympus"}, "unknown scheduling_timezone"),
        ({"tags": [""]}, "non-empty strings"),
        ({"tags": {"a": "b"}}, "non-empty strings"),
        ({"database": "crm db"}, "bad database name"),
        ({"databse": "crm"}, "unknown setting 'databse' \\(did you mean 'database'\\?\\)"),
        ({"td_api_key": "x"}, "no Treasure Data account here"),
        ({"datastore": "plazma"}, "Plazma is TD's storage"),
    ],
)
def test_settings_read_or_refused_with_the_reason(settings: dict, message: str) -> None:
    entry = _source(schedule="sensor", **settings)
    with pytest.raises(SourceConfigError, match=message):
        parse_sources({"sources": [entry]})


def test_bad_tag_and_bad_cron_are_refused_at_definition(tmp_path: Path) -> None:
    (tagged,) = parse_sources({"sources": [_source(tags=["marketing team"])]})
    with pytest.raises(SourceConfigError, match="are not all Dagster tags"):
        build_webhook_definitions([tagged], spool_path=tmp_path / "s.sqlite3")
    (timed,) = parse_sources({"sources": [_source(schedule="61 * * * *")]})
    with pytest.raises(SourceConfigError, match="shop_oa: schedule"):
        build_webhook_definitions([timed], spool_path=tmp_path / "s.sqlite3")


def test_the_example_sources_file_loads_with_every_setting(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "webhook_sources.yaml"
    defs = build_webhook_definitions(sources_path=example, spool_path=tmp_path / "s.sqlite3")
    schedule = defs.resolve_schedule_def("sample_oa__line_oa_schedule")
    assert schedule.cron_schedule == "5 * * * *"  # @hourly + 300 s of Delay Transfer
    dg.Definitions.validate_loadable(defs)
