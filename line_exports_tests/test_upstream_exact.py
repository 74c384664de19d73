"""An upstream asset's DataFrame is sent exactly, or its row is a ``type`` reject naming why, in
every destination's row path (CAPI, MAAC, LinkedIn, LINE push text), never a crashed run nor a
value in another form (VERIFY-13j):

* J1: a nanosecond ``pd.Timestamp`` next to a datetime outside 1677-2262 (``datetime(9999, 12,
  31)``, year 1600) failed the run (OutOfBoundsDatetime); each value is now sent with every
  digit, one outside 0001-9999 is a reject;
* J7: an aware ``datetime`` whose instant is outside 0001-9999 (``datetime.min`` /
  ``datetime.max`` with a ``tzinfo``) was sent (``0001-01-01 00:00:00.000000+0918``, year 0000
  or 10000); it is a reject naming its year, as DuckDB's TIMESTAMPTZ there is; an offset in
  seconds (a local mean time) is written in UTC, never ``+0918``;
* J8: the same values in a typed ``datetime64[us, tz]`` column failed the run (year 10000 is
  out of range);
* J2: ``np.datetime64`` cells of an object column were sent without offset and unchecked at
  0001/9999: they are naive date-times, wall time in the export's zone;
* J4: a string with a lone UTF-16 surrogate failed the run (UnicodeEncodeError): it is a reject.

``rules.validate`` with each destination's own rule set checks every case; one real export per
destination sends them over HTTP to the sandbox, which records each request's body.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from line_exports import (
    LineConversionResource,
    LineMessagingResource,
    LinkedInResource,
    MaacResource,
    build_export,
)
from line_exports.destinations import get_destination
from line_exports.rules import validate
from line_exports.sandbox import Sandbox, SandboxServer
from line_exports.sandbox.line_conversion import events_of
from line_exports.sandbox.maac import store_of as maac_store

LA, TOKYO = "America/Los_Angeles", "Asia/Tokyo"
JST, PACIFIC, UTC = ZoneInfo(TOKYO), ZoneInfo(LA), dt.timezone.utc
NS = pd.Timestamp("2026-06-01 10:00:00.000000001")  # naive, nanoseconds
NS_UTC = pd.Timestamp("2026-06-01 10:00:00.000000001", tz="UTC")
NO_START = dt.datetime.min.replace(tzinfo=JST)  # instant 0000-12-31T14:41:01Z: 1 BC
NO_END = dt.datetime.max.replace(tzinfo=PACIFIC)  # instant 10000-01-01T07:59:59.999999Z
PLUS14 = dt.timezone(dt.timedelta(hours=14))
Y10000, BC1, NOT_UNICODE = "year 10000", "year 1 BC", "is not Unicode text"


def _reject(words: str) -> tuple[str, str]:
    return ("reject", words)


def _marked(value: str) -> bool:
    """A rejects file value in a form the value does not have: an internal marker, an offset with
    seconds (``+0918``, ``+09:18:59``: RFC 3339 has none; such instants are shown in UTC), a
    surrogate the CSV could not hold (it is escaped, ``\\ud83d``)."""
    return "<" in value or "+0918" in value or "+09:18" in value or "\ud83d" in value


# name: (export timezone, column, what each row becomes: its text, or a reject's words)
CASES: dict[str, tuple[str, pd.Series, list[Any]]] = {
    # J1: one column of naive values, one with nanoseconds, others outside 1677-2262
    "naive_ns": (LA, pd.Series(
        [NS, dt.datetime(9999, 12, 31, 23, 59, 59), dt.datetime(2300, 1, 1), pd.Timestamp.max],
        dtype=object),
        ["2026-06-01T10:00:00.000000001-07:00", _reject(Y10000), "2300-01-01T00:00:00-08:00",
         "2262-04-11T23:47:16.854775807-07:00"]),
    # J7: aware values of several zones; the instants of the sentinels are in 1 BC and 10000;
    # 1600 in Tokyo is its local mean time (+09:18:59): written in UTC
    "aware": (TOKYO, pd.Series(
        [NO_START, dt.datetime(2026, 6, 1, 10, tzinfo=JST), NO_END,
         dt.datetime(1600, 1, 1, tzinfo=UTC), dt.datetime(1, 1, 1, tzinfo=PLUS14)], dtype=object),
        [_reject(BC1), "2026-06-01T10:00:00+09:00", _reject(Y10000), "1600-01-01T00:00:00+00:00",
         _reject(BC1)]),
    # J8: pandas' default column of such values: datetime64[us, America/Los_Angeles]
    "typed_end": ("UTC", pd.Series([NO_END, dt.datetime(2026, 6, 1, 10, tzinfo=PACIFIC)]),
                  [_reject(Y10000), "2026-06-01T17:00:00+00:00"]),
    "typed_start": (TOKYO, pd.Series([NO_START, dt.datetime(2026, 6, 1, 10, tzinfo=JST)]),
                    [_reject(BC1), "2026-06-01T10:00:00+09:00"]),
    # the same in an Arrow column of an upstream frame (types_mapper=pd.ArrowDtype): its
    # reject shows the instant in UTC, not with the local mean time's +0918
    "arrow_start": (TOKYO, pd.Series(pd.arrays.ArrowExtensionArray(pa.array(
        [NO_START, dt.datetime(2026, 6, 1, 10, tzinfo=JST)], pa.timestamp("us", tz=TOKYO)))),
        [_reject(BC1), "2026-06-01T10:00:00+09:00"]),
    # J2: numpy's datetimes in an object column are naive: wall time in the export's zone
    "numpy": (LA, pd.Series(
        [np.datetime64("2026-06-01T10:00:00"), np.datetime64("2026-06-01T10:00:00.123456789"),
         np.datetime64("9999-12-31T23:59:59")], dtype=object),
        ["2026-06-01T10:00:00-07:00", "2026-06-01T10:00:00.123456789-07:00", _reject(Y10000)]),
    # J1, J7, J2 and J4 in an object column of several types (written cell by cell)
    "mixed": (LA, pd.Series(
        ["x", NS, dt.datetime(9999, 12, 31, 23, 59, 59), NO_START, NO_END,
         np.datetime64("2026-06-01T10:00:00"), np.datetime64("9999-12-31T23:59:59"),
         "\ud83d broken", NS_UTC, dt.datetime(1600, 1, 1, tzinfo=UTC)], dtype=object),
        ["x", "2026-06-01T10:00:00.000000001-07:00", _reject(Y10000), _reject(BC1),
         _reject(Y10000), "2026-06-01T10:00:00-07:00", _reject(Y10000), _reject(NOT_UNICODE),
         "2026-06-01T03:00:00.000000001-07:00", "1600-01-01T00:00:00+00:00"]),
    # J4: an object column of strings, one with a lone surrogate
    "text": (TOKYO, pd.Series(["ok", "\ud83d broken", "e\U0001f600"], dtype=object),
             ["ok", _reject(NOT_UNICODE), "e\U0001f600"]),
}  # fmt: skip

FAST = {"initial_retry_wait": 1, "max_retry": 1}


def _uid(case: int, row: int) -> str:
    return f"U{case:08x}{row:024x}"


def _email(case: int, row: int) -> str:
    return f"c{case}r{row}@example.com"


# destination: (the field the column goes to, settings, other columns of row i of case c)
DESTINATIONS: dict[str, tuple[str, dict[str, Any], Callable[[int, int], dict[str, Any]]]] = {
    "line_conversion": ("title", {}, lambda c, i: {
        "deduplication_key": f"k{i}", "event_type": "conversion", "source_type": "web",
        "event_timestamp": int(time.time()) - 60, "external_id": f"x{i}"}),
    "maac": ("customer_id", {"data_object": "members", "import_key": "line_uid", "tags": "t"},
             lambda c, i: {"line_uid": _uid(c, i)}),
    "linkedin": ("company", {"ad_account_id": "512345678", "ignore_invalid_records": True},
                 lambda c, i: {"email": _email(c, i)}),
    "line_messaging": ("v", {"target": "push_message",
                             "template_message": json.dumps({"type": "text", "text": "v={{v}}"})},
                       lambda c, i: {"id": _uid(c, i)}),
}  # fmt: skip


def _frame(destination: str, case: int, column: pd.Series) -> pd.DataFrame:
    field, _, extra = DESTINATIONS[destination]
    rows = pd.DataFrame([extra(case, i) for i in range(len(column))])
    rows[field] = column.reset_index(drop=True)
    return rows


def _expected_text(destination: str, text: str) -> str:
    return f"v={text}" if destination == "line_messaging" else text


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("destination", list(DESTINATIONS))
def test_each_case_is_sent_exactly_or_rejected_by_validate(destination: str, name: str) -> None:
    field, settings, _ = DESTINATIONS[destination]
    dest = get_destination(destination)
    config = dest.settings_class(**{**settings, "segment_name": "s"} if destination == "linkedin"
                                 else settings)  # fmt: skip
    zone, column, expected = CASES[name]
    frame = _frame(destination, list(CASES).index(name), column)
    checked = validate(frame, dest.ruleset(config), config.model_dump(), timezone=zone)
    sent = dict(zip(checked.valid["_row_number"] - 1, checked.valid[field], strict=True))
    rejects = {r["_row_number"] - 1: r for r in checked.rejects.to_dict("records")}
    for row, want in enumerate(expected):
        if isinstance(want, tuple):
            assert row not in sent, (row, sent.get(row))
            reject = rejects[row]
            assert (reject["column"], reject["rule"]) == (field, "type"), reject
            assert want[1] in reject["message"], reject
            assert not _marked(reject["value"]), reject
        else:
            assert sent.get(row) == want, row
    assert len(checked.valid) + checked.rejects["_row_number"].nunique() == len(frame)


class RecordingServer(SandboxServer):
    """The sandbox server, recording the path and body of every POST it answers."""

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        self.bodies: list[tuple[str, bytes]] = []
        inner = self._server.config.app

        async def record(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["method"] != "POST":
                return await inner(scope, receive, send)
            chunks: list[bytes] = []

            async def reading() -> Any:
                message = await receive()
                if message["type"] == "http.request":
                    chunks.append(message.get("body", b""))
                return message

            await inner(scope, reading, send)
            self.bodies.append((scope["path"], b"".join(chunks)))

        self._server.config.app = record


def _received(
    server: RecordingServer, destination: str, case: int, rows: int
) -> dict[int, str | None]:
    """What the sandbox received per row of ``case`` for the destination's field (None: the
    row arrived without it); rows that did not arrive are absent."""
    got: dict[int, str | None] = {}
    if destination == "line_conversion":
        for key, event in events_of(server.sandbox, f"t{case}").items():
            got[int(key[1:])] = event.get("web", {}).get("title")
    elif destination == "maac":
        uids = {_uid(case, i): i for i in range(rows)}
        for member in maac_store(server.sandbox).members.values():
            if member.get("line_uid") in uids:
                got[uids[member["line_uid"]]] = member.get("customer_id")
    elif destination == "linkedin":
        hashes = {hashlib.sha256(_email(case, i).encode()).hexdigest(): i for i in range(rows)}
        for path, body in server.bodies:
            if path.endswith("/users") and body:  # a 404 of a new segment reads no body
                for element in json.loads(body).get("elements", []):
                    row = hashes.get(element["userIds"][0]["idValue"])
                    if row is not None:
                        got[row] = element.get("company")
    else:
        uids = {_uid(case, i): i for i in range(rows)}
        for path, body in server.bodies:
            if path.endswith("/push"):
                message = json.loads(body)
                if message["to"] in uids:
                    got[uids[message["to"]]] = message["messages"][0]["text"]
    return got


def _resources(destination: str, server: SandboxServer, case: int) -> dict[str, Any]:
    if destination == "line_conversion":
        return {"line_conversion": LineConversionResource(line_tag_id=f"t{case}",
                                                          base_url=server.url)}  # fmt: skip
    if destination == "maac":
        return {"maac": MaacResource(base_url=server.url, poll_seconds=0.05)}
    if destination == "linkedin":
        return {"linkedin": LinkedInResource(api_url=server.url, new_segment_wait=0)}
    return {"line_messaging": LineMessagingResource(base_url=server.url, poll_seconds=0.05)}


def _upstream(name: str, frame: pd.DataFrame) -> dg.AssetsDefinition:
    @dg.asset(name=f"up_{name}")
    def upstream() -> pd.DataFrame:
        return frame

    return upstream


@pytest.mark.parametrize("destination", list(DESTINATIONS))
def test_every_case_is_sent_exactly_or_rejected_over_http(destination: str) -> None:
    """One run per case (an upstream asset and its export), each to the sandbox over HTTP."""
    field, settings, _ = DESTINATIONS[destination]
    server = RecordingServer(Sandbox(rate_scale=100, job_seconds=0.05))
    with server:
        for case, (name, (zone, column, expected)) in enumerate(CASES.items()):
            upstream = _upstream(name, _frame(destination, case, column))
            extra = {"segment_name": f"s{case}"} if destination == "linkedin" else {}
            export = build_export(
                f"e_{name}",
                destination=destination,
                upstream=f"up_{name}",
                settings={**FAST, **settings, **extra},
                timezone=zone,
                retry_policy=None,
            )
            result = dg.materialize(
                [upstream, export],
                resources=_resources(destination, server, case),
                raise_on_error=False,
            )
            assert result.success, (name, destination)
            meta = {
                k: v.value
                for k, v in result.asset_materializations_for_node(f"e_{name}")[0].metadata.items()
            }
            refused = [row for row, want in enumerate(expected) if isinstance(want, tuple)]
            assert meta["rows_read"] == len(expected), name
            assert meta["rows_rejected"] == len(refused), (name, meta)
            assert meta["rows_accepted"] == len(expected) - len(refused), (name, meta)
            with open(meta["rejects_file"], newline="", encoding="utf-8") as f:
                rejects = {int(r["_row_number"]) - 1: r for r in csv.DictReader(f)}
            got = _received(server, destination, case, len(expected))
            for row, want in enumerate(expected):
                if isinstance(want, tuple):
                    assert row not in got, (name, row, got.get(row))
                    assert rejects[row]["rule"] == "type" and want[1] in rejects[row]["message"]
                    assert not _marked(rejects[row]["value"]), rejects[row]
                else:
                    assert got.get(row) == _expected_text(destination, want), (name, row)
