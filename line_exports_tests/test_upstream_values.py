"""An upstream asset's DataFrame of Python objects meets the same value checks as an engine's
columns (VERIFY-13e F2-F4): a ``datetime`` whose instant leaves 0001-9999 is a ``type`` reject of
its row, not a crashed run; a ``Decimal`` Infinity is a ``type`` reject like a float's; the
rejects file shows a naive timestamp as the wall time it holds. Real Dagster runs over HTTP to
the LINE Conversion API sandbox."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import time

import dagster as dg
import pandas as pd
import pytest

from line_exports import LineConversionResource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import events_of

LA = "America/Los_Angeles"
NAIVE_END = dt.datetime(9999, 12, 31, 23, 59, 59)  # the usual open end; year 10000 UTC in LA
AWARE_END = dt.datetime(9999, 12, 31, 20, tzinfo=dt.timezone.utc)  # year 10000 in Tokyo


def _run(server: SandboxServer, tag: str, titles: pd.Series, timezone: str) -> tuple:
    now = int(time.time()) - 60
    rows = range(len(titles))

    @dg.asset(name=f"up_{tag}")
    def upstream() -> pd.DataFrame:
        return pd.DataFrame(
            {
                "deduplication_key": [f"k{n}" for n in rows],
                "event_type": "conversion",
                "source_type": "web",
                "event_timestamp": now,
                "external_id": [f"x{n}" for n in rows],
                "title": pd.Series(titles).reset_index(drop=True),
            }
        )

    export = build_export(
        f"e_{tag}",
        destination="line_conversion",
        upstream=f"up_{tag}",
        settings={"initial_retry_wait": 1, "max_retry": 1},
        timezone=timezone,
        retry_policy=None,
    )
    result = dg.materialize(
        [upstream, export],
        resources={"line_conversion": LineConversionResource(line_tag_id=tag, base_url=server.url)},
        raise_on_error=False,
    )
    assert result.success
    meta = {
        k: v.value
        for k, v in result.asset_materializations_for_node(f"e_{tag}")[0].metadata.items()
    }
    rejects = {}
    if "rejects_file" in meta:  # written only when a row is rejected
        with open(meta["rejects_file"], newline="", encoding="utf-8") as f:
            rejects = {int(r["_row_number"]): r for r in csv.DictReader(f)}
    events = events_of(server.sandbox, tag)
    sent = {k: e.get("web", {}).get("title") for k, e in events.items()}
    return sent, rejects, meta


@pytest.mark.parametrize(
    ("tag", "timezone", "titles", "words", "shown", "kept"),
    [
        # naive datetimes: wall time in the export's zone; 9999-12-31 23:59:59 in LA is 10000 UTC
        ("naive", LA, [None, NAIVE_END, dt.datetime(2026, 6, 1, 10)],
         "whose instant is in year 10000 UTC", "9999-12-31T23:59:59", "2026-06-01T10:00:00-07:00"),
        # aware datetimes: the instant, written in the export's zone (Tokyo: year 10000)
        ("aware", "Asia/Tokyo",
         [None, AWARE_END, dt.datetime(2026, 6, 1, 1, tzinfo=dt.timezone.utc)],
         "year 10000", "9999-12-31T20:00:00+00:00", "2026-06-01T10:00:00+09:00"),
        # an object column of several types: its datetimes are checked all the same (the run
        # failed on the 9999 one, VERIFY-13g N4)
        ("mixedtypes", LA, [None, NAIVE_END, "x"],
         "whose instant is in year 10000 UTC", "9999-12-31T23:59:59", "x"),
        # Decimal: NaN is missing, Infinity has no JSON number (RFC 8259, section 6)
        ("decimal", "Asia/Tokyo", [None, decimal.Decimal("Infinity"), decimal.Decimal("1.10")],
         "not a finite number", "Infinity", "1.10"),
    ],
)  # fmt: skip
def test_python_objects_upstream_are_checked_like_engine_columns(
    sandbox_server: SandboxServer,
    tag: str,
    timezone: str,
    titles: list[object],
    words: str,
    shown: str,
    kept: str,
) -> None:
    sent, rejects, meta = _run(sandbox_server, tag, pd.Series(titles, dtype=object), timezone)
    assert sorted(rejects) == [2], rejects  # 1-based: the second row
    assert rejects[2]["rule"] == "type" and words in rejects[2]["message"], rejects[2]
    assert rejects[2]["value"] == shown
    assert sent == {"k0": None, "k2": kept}
    assert meta["rows_rejected"] == 1 and meta["rows_accepted"] == 2


@pytest.mark.parametrize(
    ("tag", "timezone", "end", "written"),
    [
        # pandas' own open end, naive, read in a zone west of UTC: its instant is past 2262
        ("nsmax", LA, pd.Timestamp.max, "2262-04-11T23:47:16.854775807-07:00"),
        # the start, east of UTC: Tokyo's local mean time (+09:18:59) is written in UTC
        ("nsmin", "Asia/Tokyo", pd.Timestamp.min, "1677-09-20T14:53:44.145224193+00:00"),
        ("nsmaxtz", "Asia/Tokyo", pd.Timestamp.max.tz_localize("UTC"),
         "2262-04-12T08:47:16.854775807+09:00"),
    ],
)  # fmt: skip
def test_nanosecond_timestamps_at_their_ends_are_sent_with_every_digit(
    sandbox_server: SandboxServer, tag: str, timezone: str, end: pd.Timestamp, written: str
) -> None:
    """A ``datetime64[ns]`` value near 1677-09-21 or 2262-04-11 (``pd.Timestamp.max`` is a usual
    open end) keeps its instant and nanoseconds in a zone that moves it out of the nanosecond
    range; the run failed with OutOfBoundsDatetime (VERIFY-13e F6, upstream path)."""
    other = pd.Timestamp("2026-06-01 10:00", tz="UTC" if end.tz else None)
    titles = pd.Series([pd.NaT, end, other])
    sent, rejects, meta = _run(sandbox_server, tag, titles, timezone)
    assert rejects == {} and meta["rows_accepted"] == 3
    assert sent["k0"] is None and sent["k1"] == written


@pytest.mark.parametrize(
    ("tag", "timezone", "titles", "written"),
    [
        # pd.Timestamp.max in an object column: pandas' end, not DuckDB's 'infinity' marker
        # (it was sent as the text "<infinite_time timestamp[ns] >", VERIFY-13g N1)
        ("objmax", LA, [None, pd.Timestamp.max, pd.Timestamp("2026-06-01 10:00")],
         "2262-04-11T23:47:16.854775807-07:00"),
        # naive then aware: each cell read on its own (the aware one was read as naive, 7 h off,
        # VERIFY-13g N3)
        ("mixed", LA, [None, dt.datetime(2026, 6, 1, 10),
                       dt.datetime(2026, 6, 1, 10, tzinfo=dt.timezone.utc)],
         "2026-06-01T10:00:00-07:00"),
    ],
)  # fmt: skip
def test_object_timestamps_keep_their_instant(
    sandbox_server: SandboxServer, tag: str, timezone: str, titles: list[object], written: str
) -> None:
    sent, rejects, meta = _run(sandbox_server, tag, pd.Series(titles, dtype=object), timezone)
    assert rejects == {} and meta["rows_accepted"] == 3
    assert sent["k1"] == written
    if tag == "mixed":
        assert sent["k2"] == "2026-06-01T03:00:00-07:00"  # 10:00 UTC, in Los Angeles
