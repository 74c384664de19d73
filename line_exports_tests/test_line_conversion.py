"""LINE Conversion API exports end to end: DuckDB file -> rules -> real HTTP -> sandbox."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest

from line_exports import SqlSource, build_export
from line_exports.destinations.line_conversion import LineConversionResource, LineConversionSettings
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_conversion import (
    events_of,
    fail_next_partially,
    refuse_events,
    register_tag,
    store_of,
)

TAG = "tag-0001"
CHANNEL = "1657000000"
NOW = int(time.time())
STAMP = NOW - 3600
# Known digests (also checked with coreutils: printf '%s' '+818012345678' | sha256sum).
PHONE_DIGEST = "8b664e742106a6db1edb1a51c79ced6d56b2541557fdfab1c41e98204c1b3713"  # +818012345678
EMAIL_DIGEST = "72c7d01963513283884d192b33db2cf123a88d4a3b570c356054e2cc568f3771"  # user@example.jp
UUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def base_row(key: str) -> dict[str, Any]:
    """A valid event with every one of the reference's 17 columns."""
    return {
        "referrer": "https://www.google.com/",
        "ip_address": "203.0.113.7",
        "title": "Thanks",
        "user_agent": "Mozilla/5.0",
        "url": "https://shop.example.jp/thanks",
        "deduplication_key": key,
        "event_type": "conversion",
        "event_name": "Conversion",
        "source_type": "web",
        "event_timestamp": str(STAMP),
        "browser_id": UUID,
        "click_id": "clk_1",
        "phone": "+818012345678",
        "ifa": UUID.upper(),
        "external_id": "ext-1",
        "line_uid": "U" + "0123456789abcdef" * 2,
        "email": "user@example.jp",
    }


def write_table(db: Path, frame: pd.DataFrame, table: str = "events") -> None:
    frame = frame.copy()
    frame.insert(0, "seq", range(len(frame)))
    with duckdb.connect(str(db)) as con:
        con.register("frame", frame)
        con.execute(f"create or replace table {table} as select * from frame")


def run_export(
    db: Path,
    url: str,
    settings: dict[str, Any] | None = None,
    *,
    channel: str | None = CHANNEL,
    tag: str = TAG,
    token: str | None = None,
    name: str = "capi_events",
    instance: dg.DagsterInstance | None = None,
) -> tuple[dg.ExecuteInProcessResult, dict[str, Any]]:
    asset = build_export(
        name,
        destination="line_conversion",
        query="SELECT * EXCLUDE (seq) FROM events ORDER BY seq",
        settings={"initial_retry_wait": 1, **(settings or {})},
        retry_policy=None,
    )
    resource = LineConversionResource(
        line_tag_id=tag,
        base_url=url,
        line_channel_id=channel,
        access_token=dg.EnvVar("TEST_CAPI_TOKEN") if token else None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(duckdb_path=str(db), sample_tables=False),
            "line_conversion": resource,
        },
        instance=instance,
        raise_on_error=False,
    )
    events = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in events[0].materialization.metadata.items()} if events else {}
    return result, meta


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(
        str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.duckdb"


# -- every column rule: one materialization, a valid and an invalid value each ---------------
# (column, value, expected rule or None for valid)
CASES: list[tuple[str, Any, str | None]] = [
    ("referrer", "r" * 2048, None),
    ("referrer", "r" * 2049, "max_length"),
    ("ip_address", "2001:db8::1", None),
    ("ip_address", "::ffff:192.0.2.1", None),
    ("ip_address", "256.1.1.1", "ip"),
    ("ip_address", "2001:db8::g", "ip"),
    ("title", "t" * 1024, None),
    ("title", "t" * 1025, "max_length"),
    ("user_agent", "curl/8.0 (no rule: any text)", None),
    ("url", "http://a", None),
    ("url", "ftp://example.jp/", "pattern"),
    ("url", "https://" + "a" * 2041, "max_length"),
    ("deduplication_key", "Order_2026-0001", None),
    ("deduplication_key", "k" * 256, None),
    ("deduplication_key", "bad key", "pattern"),
    ("deduplication_key", "k" * 257, "pattern"),
    ("deduplication_key", "undefined", "pattern"),
    ("deduplication_key", None, "required"),
    ("event_type", "page_view", None),
    ("event_type", "purchase", "allowed"),
    ("event_type", None, "required"),
    ("event_name", "Purchase_1-x", None),
    ("event_name", "a" * 21, "pattern"),
    ("event_name", "bad name", "pattern"),
    ("source_type", "web", None),
    ("source_type", "app", "allowed"),
    ("source_type", None, "required"),
    ("event_timestamp", f" {STAMP - 60} ", None),
    ("event_timestamp", "yesterday-ish", "type"),
    ("event_timestamp", "0", "min_value"),
    ("event_timestamp", "-5", "min_value"),
    ("event_timestamp", None, "required"),
    ("browser_id", UUID.upper(), None),
    ("browser_id", "3f2504e0-4f89-11d3-9a0c", "pattern"),
    ("click_id", "abc_DEF-123", None),
    ("click_id", "abc 123", "pattern"),
    ("phone", "+81 80-1234-5678", None),
    ("phone", PHONE_DIGEST.upper(), None),
    ("phone", "08012345678", "phone"),  # local, and no default_region set
    ("ifa", UUID, None),
    ("ifa", "not-a-uuid", "pattern"),
    ("external_id", "e" * 512, None),
    ("external_id", "e" * 513, "pattern"),
    ("external_id", "ext id", "pattern"),
    ("line_uid", "U" + "f" * 32, None),
    ("line_uid", "U" + "F" * 32, "pattern"),
    ("line_uid", "U123", "pattern"),
    ("email", " User@Example.JP ", None),
    ("email", EMAIL_DIGEST, None),
    ("email", "not-an-email", "pattern"),
]


def test_every_column_rule_valid_and_invalid_over_http(
    sandbox_server: SandboxServer, db: Path
) -> None:
    rows = []
    for i, (column, value, _) in enumerate(CASES):
        row = base_row(f"case-{i}")
        row[column] = value
        rows.append(row)
    write_table(db, pd.DataFrame(rows))
    result, meta = run_export(db, sandbox_server.url)
    assert result.success, failure_text(result)

    rejects = pd.read_csv(meta["rejects_file"])
    refused = {(int(r["_row_number"]), r["column"], r["rule"]) for _, r in rejects.iterrows()}
    expected = {(i + 1, c, rule) for i, (c, _, rule) in enumerate(CASES) if rule}
    assert refused == expected
    kept = events_of(sandbox_server.sandbox, TAG)
    valid_keys = {
        rows[i]["deduplication_key"] for i, (_, _, rule) in enumerate(CASES) if rule is None
    }
    assert set(kept) == valid_keys
    assert meta["rows_read"] == len(CASES)
    assert meta["rows_rejected"] == len(expected)
    assert meta["rows_sent"] == meta["rows_accepted"] == len(valid_keys)
    assert meta["requests"] == 1
    assert meta["rejects_by_rule"]["url: pattern"] == 1
    # the values as LINE received them
    by_case = {int(k.split("-")[1]): v for k, v in kept.items() if k.startswith("case-")}
    index = {(c, str(v)): i for i, (c, v, rule) in enumerate(CASES) if rule is None}
    assert (
        by_case[index[("event_timestamp", f" {STAMP - 60} ")]]["event"]["event_timestamp"]
        == STAMP - 60
    )
    assert by_case[index[("phone", PHONE_DIGEST.upper())]]["user"]["phone"] == PHONE_DIGEST
    assert by_case[index[("email", EMAIL_DIGEST)]]["user"]["email"] == EMAIL_DIGEST
    assert by_case[index[("event_type", "page_view")]]["event"]["event_type"] == "page_view"
    assert by_case[index[("ip_address", "2001:db8::1")]]["web"]["ip_address"] == "2001:db8::1"


def test_raw_phone_and_email_are_hashed_and_hashed_ones_pass_unchanged(
    sandbox_server: SandboxServer, db: Path
) -> None:
    raw = base_row("raw")
    raw.update(phone=" +81 (80) 1234-5678 ", email="  USER@example.JP")
    hashed = base_row("hashed")
    other_phone = hashlib.sha256(b"+14155550123").hexdigest()
    hashed.update(phone=other_phone, email=hashlib.sha256(b"someone@example.com").hexdigest())
    write_table(db, pd.DataFrame([raw, hashed]))
    result, _ = run_export(db, sandbox_server.url)
    assert result.success, failure_text(result)
    kept = events_of(sandbox_server.sandbox, TAG)
    assert kept["raw"]["user"]["phone"] == PHONE_DIGEST
    assert kept["raw"]["user"]["email"] == EMAIL_DIGEST
    assert kept["hashed"]["user"]["phone"] == other_phone
    assert kept["hashed"]["user"]["email"] == hashlib.sha256(b"someone@example.com").hexdigest()
    # a raw value never left the process, in any request
    text = str(kept)
    assert "8012345678" not in text and "example.jp" not in text.replace("shop.example.jp", "")


@pytest.mark.parametrize("kind", ["bigint", "varchar", "timestamp"])
def test_event_timestamp_from_ints_digit_strings_and_timestamps(
    sandbox_server: SandboxServer, db: Path, kind: str
) -> None:
    stamp = STAMP - STAMP % 60
    frame = pd.DataFrame([base_row("t")])
    if kind == "bigint":
        frame["event_timestamp"] = pd.Series([stamp], dtype="int64")
    elif kind == "varchar":
        frame["event_timestamp"] = str(stamp)
    else:
        frame["event_timestamp"] = pd.Series([pd.Timestamp(stamp, unit="s")])  # naive UTC
    write_table(db, frame)
    result, _ = run_export(db, sandbox_server.url)
    assert result.success, failure_text(result)
    assert events_of(sandbox_server.sandbox, TAG)["t"]["event"]["event_timestamp"] == stamp


def test_batches_at_the_configured_size(sandbox_server: SandboxServer, db: Path) -> None:
    write_table(db, pd.DataFrame([base_row(f"e{i}") for i in range(2_500)]))
    result, meta = run_export(db, sandbox_server.url, {"max_records": 1_000})
    assert result.success, failure_text(result)
    assert store_of(sandbox_server.sandbox).request_sizes == [1_000, 1_000, 500]
    assert meta["batches"] == 3 and meta["requests"] == 3 and meta["rows_accepted"] == 2_500
    assert len(events_of(sandbox_server.sandbox, TAG)) == 2_500


def test_refused_events_are_isolated_and_the_rest_delivered(
    sandbox_server: SandboxServer, db: Path
) -> None:
    write_table(db, pd.DataFrame([base_row(f"e{i}") for i in range(1_000)]))
    refuse_events(sandbox_server.sandbox, {"e3", "e500", "e999"})
    result, meta = run_export(db, sandbox_server.url)
    assert result.success, failure_text(result)
    kept = events_of(sandbox_server.sandbox, TAG)
    assert len(kept) == 997 and not {"e3", "e500", "e999"} & set(kept)
    assert (
        meta["rows_refused_by_api"] == 3
        and meta["rows_accepted"] == 997
        and meta["rows_sent"] == 1_000
    )
    rejects = pd.read_csv(meta["rejects_file"])
    assert sorted(rejects["_row_number"]) == [4, 501, 1000]
    assert set(rejects["rule"]) == {"api_refused"}
    # binary search: far fewer requests than one per event
    assert meta["requests"] < 70 and meta["split_requests"] > 0


def test_refused_event_fails_the_run_when_invalid_records_are_not_ignored(
    sandbox_server: SandboxServer, db: Path
) -> None:
    write_table(db, pd.DataFrame([base_row(f"e{i}") for i in range(8)]))
    refuse_events(sandbox_server.sandbox, {"e5"})
    result, _ = run_export(db, sandbox_server.url, {"ignore_invalid_records": False})
    assert not result.success
    assert "row 6" in failure_text(result)


def test_ignore_invalid_records_false_sends_nothing(
    sandbox_server: SandboxServer, db: Path
) -> None:
    bad = base_row("bad")
    bad["url"] = "ftp://nope"
    write_table(db, pd.DataFrame([base_row("good"), bad]))
    result, _ = run_export(db, sandbox_server.url, {"ignore_invalid_records": False})
    assert not result.success
    assert "ignore_invalid_records is false" in failure_text(result)
    assert sandbox_server.sandbox.count("POST", "/v1/") == 0


def test_ignore_invalid_records_true_sends_the_valid_rows(
    sandbox_server: SandboxServer, db: Path
) -> None:
    bad = base_row("bad")
    bad["url"] = "ftp://nope"
    write_table(db, pd.DataFrame([base_row("good"), bad, base_row("good")]))
    result, meta = run_export(db, sandbox_server.url)
    assert result.success
    assert set(events_of(sandbox_server.sandbox, TAG)) == {"good"}
    # LINE counts the repeated (event_name, deduplication_key) once: sent once, a duplicate.
    assert meta["rows_rejected"] == 2 and meta["rows_accepted"] == 1
    assert meta["rows_duplicate"] == 1
    assert meta["rejects_by_rule"] == {
        "url: pattern": 1,
        "event_name+deduplication_key: duplicate": 1,
    }


def test_events_outside_lines_time_window_are_rejected_not_sent(
    sandbox_server: SandboxServer, db: Path
) -> None:
    old = base_row("old")
    old["event_timestamp"] = str(NOW - 91 * 86_400)
    ahead = base_row("ahead")
    ahead["event_timestamp"] = str(NOW + 2 * 86_400)
    write_table(db, pd.DataFrame([base_row("now"), old, ahead]))
    result, meta = run_export(db, sandbox_server.url)
    assert result.success, failure_text(result)
    assert set(events_of(sandbox_server.sandbox, TAG)) == {"now"}
    assert meta["events_outside_time_window"] == 2
    assert meta["rejects_by_rule"] == {"event_timestamp: time_window": 2}
    assert store_of(sandbox_server.sandbox).refused_requests == 0

    strict, _ = run_export(
        db, sandbox_server.url, {"ignore_invalid_records": False}, name="capi_strict"
    )
    assert not strict.success and "nothing was sent" in failure_text(strict)


def test_bad_token_fails_with_401_and_never_shows_the_token(
    sandbox_server: SandboxServer, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_tag(sandbox_server.sandbox, TAG, "the-right-token-123")
    monkeypatch.setenv("TEST_CAPI_TOKEN", "a-wrong-token-456")
    write_table(db, pd.DataFrame([base_row("e1")]))
    result, _ = run_export(db, sandbox_server.url, token="env")
    assert not result.success
    text = failure_text(result)
    assert "401" in text and "a-wrong-token-456" not in text
    assert sandbox_server.sandbox.count("POST", f"/v1/{TAG}/events", 401) == 1  # 401 is not retried

    monkeypatch.setenv("TEST_CAPI_TOKEN", "the-right-token-123")
    ok, meta = run_export(db, sandbox_server.url, token="env", name="capi_ok")
    assert ok.success and meta["rows_accepted"] == 1


def test_500_is_retried_and_dedup_keys_keep_each_event_once(
    sandbox_server: SandboxServer, db: Path
) -> None:
    write_table(db, pd.DataFrame([base_row(f"e{i}") for i in range(1_200)]))
    fail_next_partially(sandbox_server.sandbox)  # first request keeps 500 events, answers 500
    sandbox_server.sandbox.add_fault(Fault(path=f"/v1/{TAG}/events", status=500, times=1))
    started = time.monotonic()
    result, meta = run_export(db, sandbox_server.url)
    assert result.success, failure_text(result)
    store = store_of(sandbox_server.sandbox)
    assert len(events_of(sandbox_server.sandbox, TAG)) == 1_200
    assert store.duplicate_events == 500  # re-sent after the partial 500, counted once by key
    assert meta["retries"] == 2 and meta["rows_accepted"] == 1_200
    assert time.monotonic() - started < 20


def test_rerun_resends_the_same_dedup_keys_and_line_counts_once(
    sandbox_server: SandboxServer, db: Path
) -> None:
    write_table(db, pd.DataFrame([base_row(f"e{i}") for i in range(50)]))
    with dg.instance_for_test() as instance:
        first, _ = run_export(db, sandbox_server.url, instance=instance)
        second, _ = run_export(db, sandbox_server.url, instance=instance)
    assert first.success and second.success
    store = store_of(sandbox_server.sandbox)
    assert len(events_of(sandbox_server.sandbox, TAG)) == 50
    assert store.received_events == 100 and store.duplicate_events == 50


def test_line_uid_without_channel_id_fails_before_sending(
    sandbox_server: SandboxServer, db: Path
) -> None:
    write_table(db, pd.DataFrame([base_row("e1")]))
    result, _ = run_export(db, sandbox_server.url, channel=None)
    assert not result.success and "line_channel_id" in failure_text(result)
    assert sandbox_server.sandbox.count("POST", "/v1/") == 0

    no_uid = pd.DataFrame([base_row("e2")]).drop(columns=["line_uid"])
    write_table(db, no_uid)
    ok, _ = run_export(db, sandbox_server.url, channel=None, name="capi_no_uid")
    assert ok.success, failure_text(ok)
    assert "e2" in events_of(sandbox_server.sandbox, TAG)


def test_minimal_query_like_the_reference_example(sandbox_server: SandboxServer, db: Path) -> None:
    """The reference's custom query: a string literal timestamp, only a few columns."""
    with duckdb.connect(str(db)) as con:
        con.execute("create table events as select 1 as seq")
    asset = build_export(
        "capi_literal",
        destination="line_conversion",
        query=(
            f"SELECT 'elizabetho@fb.com' AS email, 'Purchase' AS event_name, 'conversion' AS event_type, "
            f"'web' AS source_type, '{STAMP}' AS event_timestamp, 'dedup_key_123' AS deduplication_key FROM events"
        ),
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(duckdb_path=str(db), sample_tables=False),
            "line_conversion": LineConversionResource(line_tag_id=TAG, base_url=sandbox_server.url),
        },
    )
    assert result.success
    event = events_of(sandbox_server.sandbox, TAG)["dedup_key_123"]
    assert event == {
        "event": {
            "deduplication_key": "dedup_key_123",
            "event_type": "conversion",
            "event_name": "Purchase",
            "source_type": "web",
            "event_timestamp": STAMP,
        },
        "user": {"email": hashlib.sha256(b"elizabetho@fb.com").hexdigest()},
    }


# -- settings and resource ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "low", "high", "text"),
    [
        ("max_records", 1_000, 100_000, "between 1,000 and 100,000"),
        ("max_retry", 1, 10, "between 1 and 10"),
        ("initial_retry_wait", 1, 30, "between 1 and 30"),
        ("max_retry_wait", 100, 7_200, "between 100 and 7,200"),
        ("connection_timeout", 10, 600, "between 10 and 600"),
    ],
)
def test_settings_ranges_follow_the_reference(name: str, low: int, high: int, text: str) -> None:
    assert getattr(LineConversionSettings(**{name: low}), name) == low
    assert getattr(LineConversionSettings(**{name: high}), name) == high
    for wrong in (low - 1, high + 1):
        with pytest.raises(ValueError, match=text):
            LineConversionSettings(**{name: wrong})
    with pytest.raises(ValueError, match=text):
        build_export(
            "capi_bad", destination="line_conversion", query="select 1", settings={name: high + 1}
        )


def test_defaults_are_the_references() -> None:
    settings = LineConversionSettings()
    assert (settings.ignore_invalid_records, settings.max_records, settings.max_retry) == (
        True,
        1_000,
        8,
    )
    assert (settings.initial_retry_wait, settings.max_retry_wait, settings.connection_timeout) == (
        15,
        3600,
        300,
    )


def test_out_of_range_run_config_fails_the_run(sandbox_server: SandboxServer, db: Path) -> None:
    write_table(db, pd.DataFrame([base_row("e1")]))
    asset = build_export(
        "capi_cfg",
        destination="line_conversion",
        query="SELECT * EXCLUDE (seq) FROM events",
        retry_policy=None,
    )
    with pytest.raises(Exception, match="between 1,000 and 100,000"):
        dg.materialize(
            [asset],
            resources={
                "sql_source": SqlSource(duckdb_path=str(db), sample_tables=False),
                "line_conversion": LineConversionResource(
                    line_tag_id=TAG, base_url=sandbox_server.url, line_channel_id=CHANNEL
                ),
            },
            run_config={"ops": {"capi_cfg": {"config": {"max_records": 100_001}}}},
        )
    assert sandbox_server.sandbox.count("POST", "/v1/") == 0


def test_credentials_belong_on_the_resource() -> None:
    with pytest.raises(ValueError, match="credential"):
        build_export(
            "capi_cred",
            destination="line_conversion",
            query="select 1",
            settings={"access_token": "x"},
        )
    schema = LineConversionResource.model_json_schema()["properties"]
    assert schema["access_token"].get("dagster__is_secret") is True


def test_from_env_uses_env_vars_or_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "LINE_CONVERSION_ACCESS_TOKEN",
        "LINE_CONVERSION_TAG_ID",
        "LINE_CONVERSION_CHANNEL_ID",
        "LINE_CONVERSION_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    sandbox = LineConversionResource.from_env()
    assert (
        sandbox.access_token is None
        and sandbox.base_url is None
        and sandbox.line_tag_id == "sandbox-tag"
    )
    monkeypatch.setenv("LINE_CONVERSION_ACCESS_TOKEN", "real-token-xyz")
    with pytest.raises(ValueError, match="LINE_CONVERSION_TAG_ID"):
        LineConversionResource.from_env()
    monkeypatch.setenv("LINE_CONVERSION_TAG_ID", "tag-real")
    real = LineConversionResource.from_env()
    assert (
        real.access_token != "real-token-xyz"
    )  # an EnvVar reference, resolved by Dagster at run time
    assert "real-token-xyz" not in repr(real)


def test_resource_refuses_a_non_numeric_channel_and_a_remote_url_without_token() -> None:
    with pytest.raises(ValueError, match="digits"):
        LineConversionResource(
            line_tag_id=TAG, base_url="http://127.0.0.1:1", line_channel_id="abc"
        ).endpoint()
    with pytest.raises(ValueError, match="access_token is required"):
        LineConversionResource(line_tag_id=TAG, base_url="https://proxy.example.com").endpoint()


def test_example_query_over_the_sample_table(sandbox_server: SandboxServer, tmp_path: Path) -> None:
    query = Path(__file__).parents[1] / "examples" / "queries" / "line_conversion_events.sql"
    asset = build_export(
        "line_conversion_events", destination="line_conversion", query=query, retry_policy=None
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(duckdb_path=str(tmp_path / "samples.duckdb")),
            "line_conversion": LineConversionResource(
                line_tag_id=TAG, base_url=sandbox_server.url, line_channel_id=CHANNEL
            ),
        },
    )
    meta = {
        k: v.value
        for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()
    }
    # the sample table's deliberate mistakes: event_type, url and deduplication_key, 1 row in 100 each
    assert meta["rows_read"] == 3_000 and meta["rows_rejected"] == 90
    assert meta["rejects_by_rule"] == {
        "event_type: allowed": 30,
        "url: pattern": 30,
        "deduplication_key: pattern": 30,
    }
    assert meta["rows_accepted"] == 2_910 and meta["requests"] == 3
    kept = events_of(sandbox_server.sandbox, TAG)
    assert kept["evt-0"]["user"]["email"] == hashlib.sha256(b"user0@example.jp").hexdigest()
    assert kept["evt-0"]["user"]["phone"] == hashlib.sha256(b"+818000000000").hexdigest()
