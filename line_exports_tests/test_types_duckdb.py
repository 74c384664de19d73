"""Every DuckDB type a query can give reaches the API as DuckDB holds it, or is a ``type``
reject naming it: never another number, never a crashed run (issue 13, VERIFY-13e F5-F10).

Real DuckDB files, real export runs to the sandbox over HTTP; what the sandbox received is
compared with the digits DuckDB itself writes (``CAST(v AS VARCHAR)``). DuckDB's types:
https://duckdb.org/docs/stable/sql/data_types/overview (integers, UHUGEINT, BIGNUM/VARINT,
BIT, TIME, UNION).
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from line_exports import LineConversionResource, LineMessagingResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import events_of
from line_exports.sandbox.line_messaging import store_of
from line_exports.values import to_text

FAST = {"initial_retry_wait": 1, "max_retry": 1, "connection_timeout": 30}
NOW = int(time.time()) - 60

# DuckDB's integer types and their ranges ("Numeric Types"), BIGNUM beyond any of them.
INTEGERS = {
    "TINYINT": (-(2**7), 2**7 - 1),
    "SMALLINT": (-(2**15), 2**15 - 1),
    "INTEGER": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
    "HUGEINT": (-(2**127), 2**127 - 1),
    "UTINYINT": (0, 2**8 - 1),
    "USMALLINT": (0, 2**16 - 1),
    "UINTEGER": (0, 2**32 - 1),
    "UBIGINT": (0, 2**64 - 1),
    "UHUGEINT": (0, 2**128 - 1),
    "VARINT": (-(10**60) + 7, 10**60 - 7),
}


def _user(n: int) -> str:
    return f"U{n:032x}"


def _push_all(server: SandboxServer, db: Path, name: str, columns: list[str]) -> dict[int, str]:
    """Push each row of table ``t`` (``n``, then ``columns``) to user ``n`` as one text
    ``c1|c2|...`` (a push template; a row with a NULL is a ``required`` reject); returns the
    text each user received (row ``n`` -> text)."""
    template = json.dumps({"type": "text", "text": "|".join(f"{{{{{c}}}}}" for c in columns)})
    asset = build_export(
        name,
        destination="line_messaging",
        query="select 'U' || lpad(printf('%x', n), 32, '0') as id, * exclude (n) from t",
        settings={**FAST, "target": "push_message", "template_message": template},
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}", chunk_size=1000),
            "line_messaging": LineMessagingResource(base_url=server.url, poll_seconds=0.05),
        },
    )
    assert result.success
    store = store_of(server.sandbox)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = [r[0] for r in con.execute("select n from t").fetchall()]
    return {n: store.received(_user(n))[-1][0]["text"] for n in rows if store.received(_user(n))}


def test_every_duckdb_integer_type_arrives_with_its_digits_at_both_ends(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """Each integer type at its minimum and maximum, next to a NULL in the same chunk, and
    DECIMAL(38, s) at full width: the pushed text is DuckDB's own text of the value. UHUGEINT
    from 2**127 up arrived negative (DuckDB's Arrow export is a signed decimal128), BIGNUM was
    a "binary data (a BLOB)" reject."""
    db = tmp_path / "w.duckdb"
    names = [f"c_{t.lower()}" for t in INTEGERS] + ["d38_0", "d38_10", "d38_38"]
    values = {
        1: [f"'{low}'::{t}" for t, (low, _) in INTEGERS.items()]
        + ["'-99999999999999999999999999999999999999'::DECIMAL(38,0)"]
        + ["'-9999999999999999999999999999.9999999999'::DECIMAL(38,10)"]
        + ["'-0.' || repeat('9', 38)"],
        2: ["NULL"] * len(names),
        3: [f"'{high}'::{t}" for t, (_, high) in INTEGERS.items()]
        + ["'99999999999999999999999999999999999999'::DECIMAL(38,0)"]
        + ["'0.0000000001'::DECIMAL(38,10)"]
        + ["'0.' || repeat('0', 37) || '1'"],
        4: [f"'{2**127 if t == 'UHUGEINT' else high}'::{t}" for t, (_, high) in INTEGERS.items()]
        + ["0", "0", "0"],
    }
    with duckdb.connect(str(db)) as con:
        typed = ", ".join(
            f"{c}::{t} as {c}"
            for c, t in zip(
                names,
                [*INTEGERS, "DECIMAL(38,0)", "DECIMAL(38,10)", "DECIMAL(38,38)"],
                strict=True,
            )
        )
        rows = " union all ".join(
            "select {} as n, {}".format(
                n, ", ".join(f"{v} as {c}" for v, c in zip(row, names, strict=True))
            )
            for n, row in values.items()
        )
        con.execute(f"create table t as select n, {typed} from ({rows}) order by n")
        expected = {  # DuckDB writes DECIMAL(38,38) as -.999...: the same digits, led by a 0
            n: "|".join(re.sub(r"^(-?)\.", r"\g<1>0.", str(v)) for v in row)
            for n, *row in con.execute(
                "select n, " + ", ".join(f"CAST({c} AS VARCHAR)" for c in names) + " from t"
            ).fetchall()
        }
    received = _push_all(sandbox_server, db, "ints", names)
    assert sorted(received) == [1, 3, 4]  # row 2 (its NULLs) is rejected
    assert received == {n: expected[n] for n in (1, 3, 4)}
    assert str(2**128 - 1) in received[3] and str(-(2**127)) in received[1]
    assert str(2**127) in received[4] and "-" not in received[4]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(INTEGERS)).flatmap(
        lambda t: st.tuples(
            st.just(t),
            st.lists(st.integers(*INTEGERS[t]) | st.none(), min_size=1, max_size=6),
        )
    )
)
@example(("UHUGEINT", [2**128 - 1, None, 2**127]))
@example(("VARINT", [None, -(10**59)]))
def test_duckdb_integers_read_back_as_their_digits(case: tuple[str, list[int | None]]) -> None:
    """Any values of any DuckDB integer type, NULLs anywhere, through the source and the text
    every destination sends (:func:`~line_exports.values.to_text`): each is its digits."""
    kind, values = case
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "h.duckdb"
        with duckdb.connect(str(db)) as con:
            rows = ", ".join(
                f"({i}, {'NULL' if v is None else repr(str(v))}::{kind})"
                for i, v in enumerate(values)
            )
            con.execute(f"create table t as select * from (values {rows}) v(n, v)")
        frames = list(SqlSource(url=f"duckdb:///{db}").read_chunks("select v from t order by n"))
        text = to_text(frames[0]["v"])
        sent = [
            None if missing else value for value, missing in zip(text, text.isna(), strict=True)
        ]
    assert sent == [None if v is None else str(v) for v in values]


def _capi(
    server: SandboxServer, db: Path, tag: str, zone: str = "UTC", event_type: str = "'conversion'"
) -> dict[str, Any]:
    """Export table ``t`` (``n``, ``v``) as CAPI events titled ``v`` (of ``event_type``, an
    SQL expression) in ``zone``; the run's metadata, the titles the sandbox kept by row and
    the rejects file's rows."""
    asset = build_export(
        tag,
        destination="line_conversion",
        query=f"""select 'k' || n as deduplication_key, {event_type} as event_type,
                  'web' as source_type, {NOW} as event_timestamp, 'x' || n as external_id,
                  v as title from t order by n""",
        settings=FAST,
        timezone=zone,
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "line_conversion": LineConversionResource(line_tag_id=tag, base_url=server.url),
        },
        raise_on_error=False,
    )
    assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
    meta = {k: v.value for k, v in result.asset_materializations_for_node(tag)[0].metadata.items()}
    events = events_of(server.sandbox, tag)
    titles = {int(k[1:]): e.get("web", {}).get("title") for k, e in events.items()}
    rejects: list[dict[str, str]] = []
    if meta.get("rejects_file"):
        with open(meta["rejects_file"], encoding="utf-8", newline="") as f:
            rejects = list(csv.DictReader(f))
    return {"meta": meta, "titles": titles, "rejects": rejects}


def _table(db: Path, *values: str) -> None:
    rows = " union all ".join(f"select {n} as n, {v} as v" for n, v in enumerate(values, 1))
    with duckdb.connect(str(db)) as con:
        con.execute(f"create or replace table t as {rows}")


TIMES = {
    "TIME 24:00:00": ("'24:00:00'::TIME", "24:00:00"),
    "TIME with a fraction": ("'12:34:56.5'::TIME", "12:34:56.5"),
    "TIME_NS": ("'12:34:56.123456789'::TIME_NS", "12:34:56.123456789"),
    "TIMETZ 24:00:00": ("'24:00:00+09'::TIMETZ", "24:00:00+09:00"),
    "BIT": ("'0101'::BIT", "0101"),
}


@pytest.mark.parametrize("case", list(TIMES))
def test_duckdb_time_and_bit_arrive_as_duckdb_writes_them(
    sandbox_server: SandboxServer, tmp_path: Path, case: str
) -> None:
    """TIME ``24:00:00`` (DuckDB and PostgreSQL take it) crashed the run with "hour must be in
    0..23"; TIME_NS lost its nanoseconds; BIT was a BLOB reject. Each is sent as DuckDB's text,
    the NULL row next to it sent without a title."""
    expression, text = TIMES[case]
    db = tmp_path / "w.duckdb"
    _table(db, expression, "NULL", expression)
    got = _capi(sandbox_server, db, "t" + str(abs(hash(case)) % 10**6))
    assert got["titles"] == {1: text, 2: None, 3: text}, got
    assert got["meta"]["rows_accepted"] == 3 and got["meta"]["rows_rejected"] == 0


def test_a_duckdb_union_is_a_type_reject_naming_it(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """A UNION crashed the run (pandas has no form of an Arrow union); it is a ``type`` reject
    as a LIST/STRUCT/MAP is, naming UNION, and the NULL row is sent."""
    db = tmp_path / "w.duckdb"
    kind = "UNION(num INT, str VARCHAR)"
    _table(
        db, f"union_value(num := 2)::{kind}", f"NULL::{kind}", f"union_value(str := 'a')::{kind}"
    )
    got = _capi(sandbox_server, db, "tagunion")
    assert got["titles"] == {2: None}
    assert [(r["_row_number"], r["rule"]) for r in got["rejects"]] == [("1", "type"), ("3", "type")]
    assert all("UNION" in r["message"] for r in got["rejects"])
    meta = got["meta"]
    assert meta["rows_read"] == 3 == meta["rows_rejected"] + meta["rows_accepted"]


def test_the_rejects_file_keeps_each_value_one_field(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """A rejected value holding a bare CR (or CRLF, a quote, a comma, a NUL) is one quoted
    field (RFC 4180): a CSV reader gets each reject back whole, with its value exact. A bare CR
    was written unquoted, so readers split the row."""
    db = tmp_path / "w.duckdb"
    odd = ["ma\rle", "a\r\nb", 'q"r,s', "x\x00y", "plain"]
    # Each is refused as an event_type (page_view or conversion only), so the file shows it.
    _table(db, *("||".join(f"chr({ord(c)})" for c in value) for value in odd))
    got = _capi(sandbox_server, db, "tagcsv", event_type="v")
    assert got["titles"] == {}
    rejects = got["rejects"]
    assert [(r["_row_number"], r["column"], r["rule"]) for r in rejects] == [
        (str(n), "event_type", "allowed") for n in range(1, 6)
    ], rejects
    assert [r["value"] for r in rejects] == odd


NS_MAX, NS_MIN = "'2262-04-11 23:47:16.854775'", "'1677-09-21 00:12:43.145225'"
# (zone, values of rows 1-3, the title each row's event carries, or its reject's words)
EDGES = {
    "TIMESTAMP_NS ends, west": (
        "Etc/GMT+12",
        [f"{NS_MAX}::TIMESTAMP_NS", "NULL::TIMESTAMP_NS", f"{NS_MIN}::TIMESTAMP_NS"],
        ["2262-04-11T23:47:16.854775-12:00", None, "1677-09-21T00:12:43.145225-12:00"],
    ),
    "TIMESTAMP_NS ends, east": (
        "Etc/GMT-14",
        [f"{NS_MAX}::TIMESTAMP_NS", "NULL::TIMESTAMP_NS", f"{NS_MIN}::TIMESTAMP_NS"],
        ["2262-04-11T23:47:16.854775+14:00", None, "1677-09-21T00:12:43.145225+14:00"],
    ),
    "TIMESTAMP_NS in Los Angeles": (
        "America/Los_Angeles",
        [f"{NS_MAX}::TIMESTAMP_NS", "NULL", "'2026-06-01 10:00:00'::TIMESTAMP_NS"],
        ["2262-04-11T23:47:16.854775-07:00", None, "2026-06-01T10:00:00-07:00"],
    ),
    "TIMESTAMP_NS max with nanoseconds": (
        "Etc/GMT+12",
        [
            "'2262-04-11 23:47:16.854775806'::TIMESTAMP_NS",
            "NULL",
            "'2000-01-01 00:00:00.123456789'::TIMESTAMP_NS",
        ],
        ["2262-04-11T23:47:16.854775806-12:00", None, "2000-01-01T00:00:00.123456789-12:00"],
    ),
    "TIMESTAMP_NS max and 'infinity'": (
        "Etc/GMT-14",
        [
            "'2262-04-11 23:47:16.854775806'::TIMESTAMP_NS",
            "'infinity'::TIMESTAMP_NS",
            "'2000-01-01 00:00:00.123456789'::TIMESTAMP_NS",
        ],
        [
            "2262-04-11T23:47:16.854775806+14:00",
            "reject: infinite",
            "2000-01-01T00:00:00.123456789+14:00",
        ],
    ),
    "TIMESTAMP_S and _MS ends": (
        "Etc/GMT-14",
        [
            "'9999-12-31 09:59:59'::TIMESTAMP_S",
            "NULL",
            "'0001-01-01 14:00:00.001'::TIMESTAMP_MS",
        ],
        ["9999-12-31T09:59:59+14:00", None, "0001-01-01T14:00:00.001000+14:00"],
    ),
    "TIMESTAMPTZ ends": (
        "Etc/GMT+12",
        [
            "'9999-12-31 23:59:59+00'::TIMESTAMPTZ",
            "NULL",
            "'0001-01-01 12:00:00+00'::TIMESTAMPTZ",
        ],
        ["9999-12-31T11:59:59-12:00", None, "0001-01-01T00:00:00-12:00"],
    ),
}


@pytest.mark.parametrize("case", list(EDGES))
def test_duckdb_timestamps_at_their_types_ends_keep_instant_and_digits(
    sandbox_server: SandboxServer, tmp_path: Path, case: str
) -> None:
    """A TIMESTAMP_NS near its type's end (2262-04-11 23:47:16.854775) in a zone west of UTC
    crashed the run (OutOfBoundsDatetime: its instant leaves the nanosecond range); it is sent
    with its instant, offset and every digit, as the other ends and units are, also next to
    values with nanoseconds or an 'infinity' (a ``type`` reject of its own row)."""
    zone, values, expected = EDGES[case]
    db = tmp_path / "w.duckdb"
    _table(db, *values)
    got = _capi(sandbox_server, db, "edge" + str(abs(hash(case)) % 10**6), zone)
    rejected = {int(r["_row_number"]): r["message"] for r in got["rejects"]}
    for n, want in enumerate(expected, 1):
        if want is not None and want.startswith("reject: "):
            assert n not in got["titles"] and want[len("reject: ") :] in rejected[n], got
        elif want is not None and want.startswith("start: "):
            assert got["titles"][n].startswith(want[len("start: ") :]), (n, got)
        else:
            assert got["titles"].get(n, "(not sent)") == want, (n, got)
    meta = got["meta"]
    assert meta["rows_read"] == 3 == meta["rows_rejected"] + meta["rows_accepted"]
