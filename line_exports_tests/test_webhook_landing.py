"""Landing what the real server received into SQLite and DuckDB: types, duplicates, modes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from line_exports.webhook.events import EVENT_COLUMNS, REFERENCE_COLUMNS
from line_exports.webhook.landing import land_source
from line_exports.webhook.spool import SpoolReader

try:  # works whether or not line_exports_tests becomes a package
    from line_exports_tests.webhook_helpers import (
        DESTINATION,
        DETAIL_BY_TYPE,
        base_event,
        body_of,
        every_event_type,
        make_source,
        running_server,
        signed_headers,
    )
except ImportError:
    from webhook_helpers import (
        DESTINATION,
        DETAIL_BY_TYPE,
        base_event,
        body_of,
        every_event_type,
        make_source,
        running_server,
        signed_headers,
    )

SECRET = "fedcba9876543210fedcba9876543210"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINE_EXPORTS_HOME", str(tmp_path / "home"))
    for name in ("SHOP_OA", "OTHER_OA"):
        monkeypatch.setenv(f"LINE_CHANNEL_SECRET_{name}", SECRET)


@pytest.fixture(params=["sqlite", "duckdb"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"


def _post_all(url: str, source_id: str, bodies: list[bytes]) -> None:
    with requests.Session() as http:
        for body in bodies:
            resp = http.post(
                f"{url}/v1/task/{source_id}",
                data=body,
                headers=signed_headers(SECRET, body),
                timeout=5,
            )
            assert resp.status_code == 200, resp.text


def _rows(target_url: str, table: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(target_url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(f'SELECT * FROM "{table}"'))]
    finally:
        engine.dispose()


def test_every_event_type_lands_with_no_field_lost(tmp_path: Path, target_url: str) -> None:
    source = make_source(timezone="Asia/Tokyo")
    spool = tmp_path / "spool.sqlite3"
    sent = every_event_type()
    body = body_of(sent)
    with running_server([source], spool) as url:
        _post_all(url, source.source_id, [body])
    result = land_source(source, spool_path=spool, target_url=target_url)

    rows = {r["event_webhookeventid"]: r for r in _rows(target_url, source.events_table)}
    assert len(rows) == len(sent) == result.events_landed
    assert set(_rows(target_url, source.events_table)[0]) == {c for c, _ in EVENT_COLUMNS}
    assert {c for c, _ in REFERENCE_COLUMNS} <= set(rows[sent[0]["webhookEventId"]])
    for event in sent:
        row = rows[event["webhookEventId"]]
        assert row["event_type"] == event["type"]
        assert row["event_mode"] == "active"
        assert row["destination"] == DESTINATION
        assert row["event_timestamp"] == event["timestamp"]
        assert json.loads(row["event_source"]) == event["source"]
        assert row["event_deliverycontext"] == '{"isRedelivery":false}'  # reference's format
        assert row["event_replytoken"] == event.get("replyToken")
        assert isinstance(row["time"], int) and abs(row["time"] - event["timestamp"] / 1000) < 60
        # Every key LINE sent is somewhere in the row.
        restored = {
            "type": row["event_type"],
            "mode": row["event_mode"],
            "timestamp": row["event_timestamp"],
            "webhookEventId": row["event_webhookeventid"],
            "deliveryContext": json.loads(row["event_deliverycontext"]),
            "source": json.loads(row["event_source"]),
        }
        if row["event_replytoken"] is not None:
            restored["replyToken"] = row["event_replytoken"]
        for key, column in {v[0]: v[1] for v in DETAIL_BY_TYPE.values()}.items():
            if row[column] is not None:
                restored[key] = json.loads(row[column])
        if row["event_other"] is not None:
            restored.update(json.loads(row["event_other"]))
        assert restored == event
        if event["type"] in DETAIL_BY_TYPE:
            key, column = DETAIL_BY_TYPE[event["type"]]
            assert json.loads(row[column]) == event[key]
    message_types = sorted(
        json.loads(r["event_message"])["type"]
        for r in rows.values()
        if r["event_type"] == "message"
    )
    assert message_types == sorted(
        ["text", "image", "video", "audio", "file", "location", "sticker"]
    )
    assert result.events_by_type["message"] == 7 and result.events_by_type["teleport"] == 1
    assert result.lag_seconds_max is not None and 0 <= result.lag_seconds_max < 60

    raw = _rows(target_url, source.raw_table)
    assert len(raw) == 1 and raw[0]["body"] == body.decode()
    assert raw[0]["signature_ok"] in (True, 1) and raw[0]["event_count"] == len(sent)
    assert raw[0]["received_at"].endswith("+09:00")  # storage timezone
    assert raw[0]["source_id"] == source.source_id


def test_redelivered_and_duplicate_events_land_once(tmp_path: Path, target_url: str) -> None:
    source = make_source()
    spool = tmp_path / "spool.sqlite3"
    a = base_event("message", 1, replyToken="r1", message={"id": "1", "type": "text", "text": "a"})
    b = base_event("follow", 2, replyToken="r2", follow={"isUnblocked": False})
    c = base_event("postback", 3, replyToken="r3", postback={"data": "x"})
    a_again = {**a, "deliveryContext": {"isRedelivery": True}}
    with running_server([source], spool) as url:
        _post_all(
            url,
            source.source_id,
            [
                body_of([a, b]),
                body_of([a_again, c]),  # LINE redelivery
                body_of([a, b]),  # plain duplicate delivery, not flagged
                body_of([c, c]),  # duplicate inside one request
            ],
        )
        first = land_source(source, spool_path=spool, target_url=target_url)
        _post_all(url, source.source_id, [body_of([a_again]), body_of([b])])
        second = land_source(source, spool_path=spool, target_url=target_url)

    events = _rows(target_url, source.events_table)
    assert sorted(e["event_webhookeventid"] for e in events) == sorted(
        [a["webhookEventId"], b["webhookEventId"], c["webhookEventId"]]
    )
    first_a = next(e for e in events if e["event_webhookeventid"] == a["webhookEventId"])
    assert first_a["event_deliverycontext"] == '{"isRedelivery":false}'  # first delivery wins
    assert first.events_landed == 3 and first.duplicates_dropped == 5
    assert second.events_landed == 0 and second.duplicates_dropped == 2
    assert len(_rows(target_url, source.raw_table)) == 6  # one raw row per request


def test_relanding_after_a_crash_before_the_cursor_moved_is_idempotent(
    tmp_path: Path, target_url: str
) -> None:
    source = make_source()
    spool = tmp_path / "spool.sqlite3"
    events = [base_event("unfollow", n) for n in range(50)]
    with running_server([source], spool) as url:
        _post_all(url, source.source_id, [body_of(events[:25]), body_of(events[25:])])
    land_source(source, spool_path=spool, target_url=target_url)
    with SpoolReader(spool) as reader:  # as if the process died between commit and cursor move
        reader._conn.execute("UPDATE cursors SET request_done = 0")
    again = land_source(source, spool_path=spool, target_url=target_url)
    assert again.requests_read == 2 and again.events_landed == 0 and again.raw_rows_landed == 0
    uuids = [r["record_uuid"] for r in _rows(target_url, source.events_table)]
    assert len(uuids) == 50 == len(set(uuids))
    assert len(_rows(target_url, source.raw_table)) == 2


@pytest.mark.parametrize("mode", ["append", "replace", "replace_on_new_data"])
def test_landing_modes(tmp_path: Path, target_url: str, mode: str) -> None:
    source = make_source(mode=mode)
    spool = tmp_path / "spool.sqlite3"
    first = [
        base_event("message", n, message={"id": str(n), "type": "text", "text": "1"})
        for n in range(3)
    ]
    second = [
        base_event("message", n, message={"id": str(n), "type": "text", "text": "2"})
        for n in range(3, 5)
    ]

    def ids() -> list[str]:
        return sorted(r["event_webhookeventid"] for r in _rows(target_url, source.events_table))

    with running_server([source], spool) as url:
        _post_all(url, source.source_id, [body_of(first)])
        land_source(source, spool_path=spool, target_url=target_url)
        assert ids() == sorted(e["webhookEventId"] for e in first)
        _post_all(url, source.source_id, [body_of(second)])
        land_source(source, spool_path=spool, target_url=target_url)
        after_second = ids()
        land_source(source, spool_path=spool, target_url=target_url)  # nothing new
        after_empty = ids()

    everything = sorted(e["webhookEventId"] for e in first + second)
    only_second = sorted(e["webhookEventId"] for e in second)
    expected = {
        "append": (everything, everything),
        "replace": (only_second, []),  # always replace: an empty run empties the table
        "replace_on_new_data": (only_second, only_second),  # empty run leaves it alone
    }[mode]
    assert (after_second, after_empty) == expected
    raw_count = len(_rows(target_url, source.raw_table))
    assert raw_count == {"append": 2, "replace": 0, "replace_on_new_data": 1}[mode]


def test_partition_column_event_timestamp_and_sources_kept_apart(tmp_path: Path) -> None:
    target_url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    shop = make_source(partition_column="event_timestamp")
    other = make_source("other_oa")
    spool = tmp_path / "spool.sqlite3"
    old = base_event("follow", 1, follow={"isUnblocked": True})
    old["timestamp"] = 1_600_000_000_123
    with running_server([shop, other], spool) as url:
        _post_all(url, shop.source_id, [body_of([old])])
        _post_all(url, other.source_id, [body_of([old])])
    a = land_source(shop, spool_path=spool, target_url=target_url)
    b = land_source(other, spool_path=spool, target_url=target_url)
    assert a.events_landed == 1 and b.events_landed == 1
    shop_row = _rows(target_url, shop.events_table)[0]
    other_row = _rows(target_url, other.events_table)[0]
    assert shop_row["time"] == 1_600_000_000  # seeded from event_timestamp
    assert other_row["time"] > 1_700_000_000  # ingest time
    assert shop_row["record_uuid"] != other_row["record_uuid"]  # per-source identity
