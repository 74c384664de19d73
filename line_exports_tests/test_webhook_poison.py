"""Poison bodies: every signed body within the size limit is stored and never stops landing.

Over a real uvicorn receiver on loopback and real landing runs into DuckDB and SQLite files:
a 30-digit timestamp, a lone surrogate, nesting 100,000 deep and a 5,000-digit integer are all
acknowledged (200 after fsync) and land (out-of-range values as NULL, the raw body kept), and
everything sent after them lands too, the cursor moves and the spool is pruned. A request the
database itself refuses is quarantined in the rejects table, visible in the asset's metadata.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
import sqlalchemy as sa

from line_exports.webhook.assets import build_webhook_definitions
from line_exports.webhook.landing import land_source
from line_exports.webhook.spool import SpoolReader

try:  # works whether or not line_exports_tests becomes a package
    from line_exports_tests.webhook_helpers import (
        base_event,
        body_of,
        make_source,
        running_server,
        signed_headers,
    )
except ImportError:
    from webhook_helpers import base_event, body_of, make_source, running_server, signed_headers

SECRET = "feedfacecafebeef0123456789abcdef"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINE_EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LINE_CHANNEL_SECRET_SHOP_OA", SECRET)


def _event_json(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def poison_bodies() -> dict[str, bytes]:
    """The four bodies of the security review, each signed and well under 1 MiB."""
    big_ts = base_event("message", 1, message={"id": "1", "type": "text", "text": "ts"})
    big_ts_text = _event_json(big_ts).replace(
        f'"timestamp":{big_ts["timestamp"]}', '"timestamp":' + "9" * 30
    )
    surrogate = base_event("message", 2, message={"id": "2", "type": "text", "text": "SURR"})
    surrogate_text = _event_json(surrogate).replace("SURR", "\\ud800")
    surrogate_text = surrogate_text.replace('"type":"message"', '"type":"message\\udfff"', 1)
    huge_int = base_event("postback", 3, postback={"data": "n"})
    huge_int_text = _event_json(huge_int).replace('"data":"n"', '"data":"n","n":' + "7" * 5000)
    deep = "[" * 100_000 + "]" * 100_000
    return {
        "timestamp_30_digits": ('{"destination":"Uabc","events":[' + big_ts_text + "]}").encode(),
        "lone_surrogate": ('{"destination":"Uabc","events":[' + surrogate_text + "]}").encode(),
        "integer_5000_digits": ('{"destination":"Uabc","events":[' + huge_int_text + "]}").encode(),
        "nested_100000_deep": ('{"destination":"Uabc","events":[' + deep + "]}").encode(),
    }


def _post(url: str, source_id: str, body: bytes) -> int:
    resp = requests.post(
        f"{url}/v1/task/{source_id}", data=body, headers=signed_headers(SECRET, body), timeout=10
    )
    return resp.status_code


def _rows(target_url: str, sql: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(target_url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


@pytest.mark.parametrize("engine_name", ["duckdb", "sqlite"])
def test_poison_bodies_are_acknowledged_stored_and_land_with_everything_after(
    tmp_path: Path, engine_name: str
) -> None:
    source = make_source()
    spool = tmp_path / "spool.sqlite3"
    target = (
        f"duckdb:///{tmp_path / 'w.duckdb'}"
        if engine_name == "duckdb"
        else f"sqlite:///{tmp_path / 'w.sqlite'}"
    )
    poison = poison_bodies()
    good_before = body_of([base_event("follow", 10)])
    good_after = [body_of([base_event("follow", 100 + i)]) for i in range(5)]
    with running_server([source], spool) as url:
        assert _post(url, source.source_id, good_before) == 200
        for name, body in poison.items():
            assert len(body) < 1024 * 1024
            assert _post(url, source.source_id, body) == 200, name
        for body in good_after:
            assert _post(url, source.source_id, body) == 200

    with SpoolReader(spool) as reader:
        kept = list(reader.iter_all(source.source_id))
    assert len(kept) == 2 + len(poison) + 4  # every signed body is stored, byte for byte
    assert {k.body for k in kept} >= set(poison.values())
    deep = next(k for k in kept if k.body == poison["nested_100000_deep"])
    assert deep.parse_error == "JSON nested deeper than the parser allows"

    result = land_source(source, spool_path=spool, target_url=target, retention_days=0)
    assert result.requests_read == len(kept) and result.raw_rows_landed == len(kept)
    assert result.requests_quarantined == 0
    # 30-digit timestamp, the lone surrogates in type and text-free columns, 5,000 digits.
    assert result.null_values_by_column == {
        "(inside JSON)": 1,
        "event_timestamp": 1,
        "event_type": 1,
    }
    events = {
        r["event_webhookeventid"]: r for r in _rows(target, f"SELECT * FROM {source.events_table}")
    }
    assert len(events) == 1 + 3 + 5  # good, three poison events with rows, five after
    big_ts = events[base_event("message", 1)["webhookEventId"]]
    assert big_ts["event_timestamp"] is None and big_ts["event_type"] == "message"
    surrogate = events[base_event("message", 2)["webhookEventId"]]
    assert surrogate["event_type"] is None  # not UTF-8: NULL, the raw body keeps it
    assert json.loads(surrogate["event_message"])["text"] == "\ud800"  # exact, as JSON escape
    huge = events[base_event("postback", 3)["webhookEventId"]]
    assert json.loads(huge["event_postback"]) == {"data": "n", "n": None}
    raw = {r["request_id"]: r for r in _rows(target, f"SELECT * FROM {source.raw_table}")}
    by_body = {k.body: raw[k.request_id] for k in kept}
    assert by_body[poison["integer_5000_digits"]]["body"].count("7" * 5000) == 1
    assert by_body[poison["lone_surrogate"]]["body"] == poison["lone_surrogate"].decode()
    assert by_body[poison["nested_100000_deep"]]["parse_error"].startswith("JSON nested")
    # The cursor moved past everything and the spool was pruned (retention 0).
    assert result.spool_cursor == kept[-1].id
    with SpoolReader(spool) as reader:
        assert reader.pending_count(source.source_id) == (0, 0)
        assert list(reader.iter_all(source.source_id)) == []
    # A second run finds nothing and changes nothing.
    again = land_source(source, spool_path=spool, target_url=target)
    assert again.requests_read == 0 and again.events_landed == 0


def test_a_request_the_database_refuses_is_quarantined_and_the_rest_lands(
    tmp_path: Path,
) -> None:
    """The warehouse refuses one row (here a CHECK constraint the team put on the events table;
    on PostgreSQL a NUL in text does the same): that request goes to the rejects table with the
    database's reason and its exact body, everything before and after it lands, the cursor
    moves, and the Dagster materialization shows it."""
    source = make_source()
    spool = tmp_path / "spool.sqlite3"
    target = f"duckdb:///{tmp_path / 'w.duckdb'}"
    engine = sa.create_engine(target)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {source.events_table} (event_mode TEXT, event_type TEXT"
                " CHECK (length(event_type) <= 32), event_deliverycontext TEXT,"
                " event_timestamp BIGINT, destination TEXT, event_source TEXT,"
                " event_postback TEXT, event_webhookeventid TEXT, event_replytoken TEXT,"
                " record_uuid TEXT, event_message TEXT, time BIGINT, event_unsend TEXT,"
                " event_follow TEXT, event_joined TEXT, event_left TEXT,"
                " event_videoplaycomplete TEXT, event_beacon TEXT, event_link TEXT,"
                " event_membership TEXT, event_module TEXT, event_chatcontrol TEXT,"
                " event_delivery TEXT, event_other TEXT)"
            )
        )
    engine.dispose()
    refused = body_of([base_event("x" * 40, 1)])
    bodies = [body_of([base_event("follow", i)]) for i in range(3)]
    bodies.insert(1, refused)
    with running_server([source], spool) as url:
        for body in bodies:
            assert _post(url, source.source_id, body) == 200

    defs = build_webhook_definitions([source], spool_path=spool, target_url=target)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            list(defs.assets),  # type: ignore[arg-type]
            resources=dict(defs.resources or {}),
            instance=instance,
        )
        assert result.success
        meta = {
            "/".join(m.asset_key.path): m.metadata
            for e in result.get_asset_materialization_events()
            for m in [e.event_specific_data.materialization]  # type: ignore[union-attr]
        }
    raw_meta = meta["shop_oa/line_oa_raw"]
    assert raw_meta["requests_quarantined"].value == 1
    assert raw_meta["quarantine_table"].value == source.rejects_table
    (reason,) = raw_meta["quarantine_reasons"].value
    assert reason.startswith("insert: ") and "CHECK" in reason.upper()
    assert raw_meta["requests_landed"].value == 3
    assert meta["shop_oa/line_oa_events"]["events_landed"].value == 3

    rejects = _rows(target, f"SELECT * FROM {source.rejects_table}")
    assert len(rejects) == 1 and rejects[0]["stage"] == "insert"
    assert base64.b64decode(rejects[0]["body_base64"]) == refused
    landed = _rows(target, f"SELECT event_type FROM {source.events_table}")
    assert [r["event_type"] for r in landed] == ["follow"] * 3
    with SpoolReader(spool) as reader:
        assert reader.pending_count(source.source_id)[0] == 0

    # Later traffic keeps landing; the quarantined request is not retried or duplicated.
    with running_server([source], spool) as url:
        assert _post(url, source.source_id, body_of([base_event("follow", 50)])) == 200
    later = land_source(source, spool_path=spool, target_url=target)
    assert later.events_landed == 1 and later.requests_quarantined == 0
    assert len(_rows(target, f"SELECT * FROM {source.rejects_table}")) == 1


def test_an_outage_is_not_mistaken_for_poison(tmp_path: Path) -> None:
    """If the database refuses even a plain row, nothing is quarantined: the run fails and
    the cursor stays, so the requests land once the database is back."""
    source = make_source()
    spool = tmp_path / "spool.sqlite3"
    target = f"duckdb:///{tmp_path / 'w.duckdb'}"
    engine = sa.create_engine(target)
    with engine.begin() as conn:  # a table nobody can insert into: every row fails
        conn.execute(sa.text(f"CREATE TABLE {source.raw_table} (request_id INTEGER NOT NULL)"))
    engine.dispose()
    with running_server([source], spool) as url:
        assert _post(url, source.source_id, body_of([base_event("follow", 1)])) == 200
    with pytest.raises(Exception):  # noqa: B017 - whatever the database says
        land_source(source, spool_path=spool, target_url=target)
    with SpoolReader(spool) as reader:
        assert reader.pending_count(source.source_id)[0] == 1
    engine = sa.create_engine(target)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {source.raw_table}"))
    engine.dispose()
    fixed = land_source(source, spool_path=spool, target_url=target)
    assert fixed.events_landed == 1 and fixed.requests_quarantined == 0
    assert time.time() > 0
