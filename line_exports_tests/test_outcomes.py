"""Outcomes that say what really happened, in every destination (issue 13).

For random tables (hypothesis) of valid rows, invalid rows, duplicates (after normalization)
and rows the sandbox refuses, a real export over HTTP to each destination's sandbox reports
``rows_read = rows_rejected + rows_refused_by_api + rows_unsent + rows_accepted`` and each count
is the number of rows of its kind; a run whose every row the API refused fails with the API's
answer, a partly refused run fails its ``api_refusals`` check, and a stopped run counts the
rows it never sent.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from line_exports import (
    LineConversionResource,
    LinkedInResource,
    MaacResource,
    SqlSource,
    build_export,
)
from line_exports.cli import SUMMARY_COLUMNS, materialization_rows
from line_exports.destinations.line_messaging import LineMessagingResource, sending
from line_exports.destinations.line_messaging import advice as line_advice
from line_exports.run_summary import attention_lines, outcomes
from line_exports.sandbox import Fault, Sandbox, SandboxServer
from line_exports.sandbox.line_conversion import events_of, refuse_events
from line_exports.sandbox.line_messaging import store_of as line_store
from line_exports.sandbox.linkedin import store_of as linkedin_store
from line_exports.sandbox.maac import store_of as maac_store
from line_exports_tests.run_instance import run_instance

FAST = {"initial_retry_wait": 1, "max_retry": 3, "connection_timeout": 30}
NOW = int(time.time())
COUNTER = itertools.count(1)
KINDS = ("valid", "invalid", "duplicate", "refused")


def uid(n: int) -> str:
    return f"U{n:032x}"


@dataclass
class Table:
    """Rows of one random table and, per kind, how many the export must report."""

    frame: pd.DataFrame
    expected: dict[str, int]
    refused_keys: list[str]


def _kinds_to_rows(
    kinds: list[str],
    make: Callable[[int, str], dict[str, Any]],
    key_of: Callable[[dict[str, Any]], str],
    duplicates_rejected: bool = True,
) -> Table:
    """Rows for ``kinds``; a duplicate repeats the previous valid row's key (else is valid)."""
    base = next(COUNTER) * 1000
    rows: list[dict[str, Any]] = []
    expected = {"rejected": 0, "refused": 0, "accepted": 0}
    last_valid: dict[str, Any] | None = None
    refused: list[str] = []
    for i, kind in enumerate(kinds):
        if kind == "duplicate" and last_valid is not None:
            rows.append(dict(last_valid) if duplicates_rejected else make(base + i, "repeat"))
            expected["rejected" if duplicates_rejected else "accepted"] += 1
            continue
        kind = "valid" if kind == "duplicate" else kind
        row = make(base + i, kind)
        rows.append(row)
        if kind == "invalid":
            expected["rejected"] += 1
        elif kind == "refused":
            expected["refused"] += 1
            refused.append(key_of(row))
        else:
            expected["accepted"] += 1
            last_valid = row
    return Table(pd.DataFrame(rows), expected, refused)


# -- one case per destination: its table, its sandbox refusals, its export ---------------------------
def maac_table(kinds: list[str]) -> Table:
    def make(n: int, kind: str) -> dict[str, Any]:
        return {"line_uid": "bad" if kind == "invalid" else uid(n), "customer_id": f"c{n}"}

    return _kinds_to_rows(kinds, make, lambda r: r["line_uid"])


def maac_refuse(sandbox: Sandbox, keys: list[str]) -> None:
    maac_store(sandbox).blocked_uids.update(keys)  # MAAC: not a friend (blocked) -> mismatch


def capi_table(kinds: list[str]) -> Table:
    def make(n: int, kind: str) -> dict[str, Any]:
        return {
            "deduplication_key": f"k{n}",
            "event_type": "conversion",
            "source_type": "web",
            "event_timestamp": NOW - 60,
            "external_id": f"x{n}",
            "url": "ftp://nope" if kind == "invalid" else "https://example.com/",
        }

    return _kinds_to_rows(kinds, make, lambda r: r["deduplication_key"])


def capi_refuse(sandbox: Sandbox, keys: list[str]) -> None:
    refuse_events(sandbox, keys)


def linkedin_table(kinds: list[str]) -> Table:
    def make(n: int, kind: str) -> dict[str, Any]:
        return {"email": "nope" if kind == "invalid" else f" User{n}@Example.com "}

    def key(row: dict[str, Any]) -> str:
        return hashlib.sha256(row["email"].strip().lower().encode()).hexdigest()

    return _kinds_to_rows(kinds, make, key)


def linkedin_refuse(sandbox: Sandbox, keys: list[str]) -> None:
    linkedin_store(sandbox).refused_values.update(keys)


def line_table(kinds: list[str], duplicates_rejected: bool) -> Table:
    last: list[str] = []

    def make(n: int, kind: str) -> dict[str, Any]:
        if kind == "repeat":  # a push to the same user with another message: a second push
            return {"id": last[-1], "name": f"again {n}"}
        row = {"id": "not-a-user" if kind == "invalid" else uid(n), "name": f"n{n}"}
        if kind == "valid":
            last.append(row["id"])
        return row

    return _kinds_to_rows(kinds, make, lambda r: r["id"], duplicates_rejected)


def line_refuse(sandbox: Sandbox, keys: list[str]) -> None:
    line_store(sandbox).unknown_users.update(keys)  # not in this channel: 400


def audience_table(kinds: list[str]) -> Table:
    """LINE adds every well-formed ID to an upload audience (``manage-audience.yml``: a
    non-friend is added too, and gets no message), so a would-be refused ID is accepted."""
    return line_table(["valid" if k == "refused" else k for k in kinds], duplicates_rejected=True)


@dataclass
class Case:
    destination: str
    settings: dict[str, Any]
    table: Callable[[list[str]], Table]
    refuse: Callable[[Sandbox, list[str]], None]
    resource: Callable[[SandboxServer], Any]


CASES = {
    "maac": Case(
        "maac",
        {"data_object": "members", "import_key": "line_uid", "tags": "t"},
        maac_table,
        maac_refuse,
        lambda s: MaacResource(base_url=s.url, poll_seconds=0.05),
    ),
    "line_conversion": Case(
        "line_conversion",
        {},
        capi_table,
        capi_refuse,
        lambda s: LineConversionResource(line_tag_id="tag-o", base_url=s.url),
    ),
    "linkedin": Case(
        "linkedin",
        {"ad_account_id": "512345678", "segment_name": "s", "ignore_invalid_records": True},
        linkedin_table,
        linkedin_refuse,
        lambda s: LinkedInResource(api_url=s.url, new_segment_wait=0),
    ),
    "line_push": Case(
        "line_messaging",
        {
            "target": "push_message",
            "template_message": json.dumps({"type": "text", "text": "Hi {{name}}"}),
        },
        lambda kinds: line_table(kinds, duplicates_rejected=False),
        line_refuse,
        lambda s: LineMessagingResource(base_url=s.url, poll_seconds=0.1),
    ),
    "line_audience": Case(
        "line_messaging",
        {"target": "audience"},
        audience_table,
        line_refuse,
        lambda s: LineMessagingResource(base_url=s.url, poll_seconds=0.05),
    ),
    "line_multicast": Case(
        "line_messaging",
        {
            "target": "multicast_message",
            "template_message_multicast": json.dumps({"type": "text", "text": "Hi"}),
        },
        lambda kinds: line_table(kinds, duplicates_rejected=True),
        line_refuse,
        lambda s: LineMessagingResource(base_url=s.url, poll_seconds=0.1),
    ),
}


def run_case(
    server: SandboxServer, tmp: Path, case: Case, table: Table, **extra: Any
) -> tuple[dg.ExecuteInProcessResult, dict[str, Any]]:
    db = tmp / f"w{next(COUNTER)}.duckdb"
    frame = table.frame  # noqa: F841 - read by DuckDB below
    with duckdb.connect(str(db)) as con:
        con.execute("create table t as select * from frame")
    case.refuse(server.sandbox, table.refused_keys)
    asset = build_export(
        f"o{next(COUNTER)}",
        destination=case.destination,
        query="select * from t",
        settings={**FAST, **case.settings, **extra},
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            case.destination: case.resource(server),
        },
        raise_on_error=False,
        instance=run_instance(),
    )
    return result, outcome_metadata(result)


def outcome_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """The materialization's metadata, or the failure's (a failed run reports its counts too)."""
    events = result.get_asset_materialization_events()
    if events:
        meta = events[0].event_specific_data.materialization.metadata  # type: ignore[union-attr]
    else:
        failure = next(e for e in result.all_events if e.is_step_failure)
        meta = failure.event_specific_data.user_failure_data.metadata  # type: ignore[union-attr]
    return {k: getattr(v, "value", v) for k, v in meta.items()}


def check_of(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation | None:
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if evaluation.check_name == name:  # type: ignore[union-attr]
                return evaluation  # type: ignore[return-value]
    return None


def table_row(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """The run's one row of the CLI's summary table, by column."""
    (row,) = materialization_rows(result)
    return dict(zip([c for c, _ in SUMMARY_COLUMNS], row, strict=True))


def adds_up(meta: dict[str, Any]) -> bool:
    return "rows_unaccounted" not in meta and meta["rows_read"] == (
        meta["rows_rejected"]
        + meta["rows_refused_by_api"]
        + meta["rows_unsent"]
        + meta["rows_delivery_unknown"]
        + meta["rows_accepted"]
    )


@pytest.mark.parametrize("name", list(CASES))
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# At most 9 rows: CAPI stops a run after 10 refusals with nothing accepted (a wrong request).
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=9))
def test_counts_add_up_for_random_tables(
    sandbox_server: SandboxServer, tmp_path: Path, name: str, kinds: list[str]
) -> None:
    case = CASES[name]
    table = case.table(kinds)
    # A new audience per example (the sandbox lives across examples).
    extra = {"audience_name": f"outcomes {next(COUNTER)}"} if name == "line_audience" else {}
    result, meta = run_case(sandbox_server, tmp_path, case, table, **extra)
    assert adds_up(meta), meta
    assert meta["rows_read"] == len(table.frame)
    assert meta["rows_valid"] == meta["rows_read"] - meta["rows_rejected"], meta
    # The CLI's table says the same, whether the run succeeded or failed.
    row = table_row(result)
    for column, name in SUMMARY_COLUMNS[2:10]:
        assert row[column] == meta[name], (column, row, meta)
    assert meta["rows_rejected"] == table.expected["rejected"], meta
    assert meta["rows_refused_by_api"] == table.expected["refused"], meta
    assert meta["rows_accepted"] == table.expected["accepted"], meta
    assert meta["rows_unsent"] == 0 and meta["rows_delivery_unknown"] == 0
    if name == "line_audience" and table.expected["accepted"]:
        # The repeats never reach LINE: the audience holds each accepted ID once.
        assert meta["audience_ids_uploaded"] == table.expected["accepted"]
        assert meta["audience_count"] == table.expected["accepted"], meta
    if table.expected["accepted"] == 0 and (
        table.expected["refused"] or len(table.frame) > table.expected["rejected"]
    ):
        assert not result.success  # the API accepted none of the valid rows
    elif table.expected["accepted"]:
        assert result.success
        refusals = check_of(result, "api_refusals")
        assert refusals is not None and refusals.passed == (table.expected["refused"] == 0)


def test_maac_run_whose_every_member_is_refused_fails_with_the_reason(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    table = maac_table(["refused", "refused", "invalid"])
    result, meta = run_case(sandbox_server, tmp_path, CASES["maac"], table)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = failure.event_specific_data.user_failure_data.description  # type: ignore[union-attr]
    assert "accepted none of 2 valid rows" in text and "2 refused by the API" in text
    assert meta["rows_refused_by_api"] == 2 and meta["rows_rejected"] == 1 and adds_up(meta)


def test_push_run_whose_every_request_is_refused_fails(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    table = line_table(["refused", "refused"], duplicates_rejected=False)
    result, meta = run_case(sandbox_server, tmp_path, CASES["line_push"], table)
    assert not result.success and meta["rows_refused_by_api"] == 2 and adds_up(meta)


def test_min_accepted_ratio_fails_a_mostly_refused_run(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    table = capi_table(["valid", "refused", "refused", "refused"])
    case = CASES["line_conversion"]
    lenient, meta = run_case(sandbox_server, tmp_path, case, table)
    assert lenient.success and meta["rows_accepted"] == 1 and meta["rows_refused_by_api"] == 3
    check = check_of(lenient, "api_refusals")
    assert check is not None and not check.passed
    assert check.metadata["rows_refused_by_api"].value == 3  # type: ignore[union-attr]
    table = capi_table(["valid", "refused", "refused", "refused"])
    strict, meta = run_case(sandbox_server, tmp_path, case, table, min_accepted_ratio=0.5)
    assert not strict.success and adds_up(meta)
    failure = next(e for e in strict.all_events if e.is_step_failure)
    text = failure.event_specific_data.user_failure_data.description  # type: ignore[union-attr]
    assert "under min_accepted_ratio 50.0%" in text and "LINE Conversion API refused" in text


def test_stopped_run_counts_the_rows_it_never_sent(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """LinkedIn's default stops at the first refused element: the later batches are unsent."""
    table = linkedin_table(["valid", "refused", "valid", "valid"])
    case = CASES["linkedin"]
    result, meta = run_case(
        sandbox_server, tmp_path, case, table, ignore_invalid_records=False, batch_size=2
    )
    assert not result.success
    assert meta["rows_unsent"] == 2 and meta["rows_refused_by_api"] == 1
    assert meta["rows_accepted"] == 1 and adds_up(meta)


def test_capi_events_outside_the_window_are_rejected_not_refused(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    table = capi_table(["valid", "valid", "valid"])
    table.frame.loc[1, "event_timestamp"] = NOW - 91 * 86_400
    table.expected.update(rejected=1, accepted=2)
    result, meta = run_case(sandbox_server, tmp_path, CASES["line_conversion"], table)
    assert result.success
    assert meta["rows_rejected"] == 1 and meta["rows_refused_by_api"] == 0 and adds_up(meta)
    assert meta["rows_valid"] == 2  # read - rejected: the window's rejects are not valid too
    assert meta["rejects_by_rule"] == {"event_timestamp: time_window": 1}
    # Every row outside the window: nothing to send, as if validation had rejected them all.
    table = capi_table(["valid", "valid"])
    table.frame["event_timestamp"] = NOW - 91 * 86_400
    result, meta = run_case(sandbox_server, tmp_path, CASES["line_conversion"], table)
    assert result.success and meta["rows_valid"] == 0 and meta["rows_rejected"] == 2
    not_empty = check_of(result, "not_empty")
    assert not_empty is not None and not not_empty.passed
    assert not_empty.metadata["rows_read"].value == 2
    # empty_result: fail fails such a run instead, its counts on the failure.
    result, meta = run_case(
        sandbox_server, tmp_path, CASES["line_conversion"], table, empty_result="fail"
    )
    assert not result.success and meta["rows_rejected"] == 2 and meta["rows_read"] == 2


def test_capi_event_without_a_user_identifier_is_rejected(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    table = capi_table(["valid", "valid"])
    table.frame.loc[1, "external_id"] = None
    result, meta = run_case(sandbox_server, tmp_path, CASES["line_conversion"], table)
    assert result.success and meta["rows_rejected"] == 1 and meta["rows_accepted"] == 1
    assert meta["rejects_by_rule"] == {
        "line_uid or click_id or ifa or browser_id or phone or email or external_id: user_identifier": 1
    }


def test_audience_ids_repeated_are_rejected_as_duplicates_and_uploaded_once(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    table = audience_table(["valid", "duplicate", "valid", "duplicate", "invalid"])
    name = f"dups {next(COUNTER)}"
    result, meta = run_case(
        sandbox_server, tmp_path, CASES["line_audience"], table, audience_name=name
    )
    assert result.success and adds_up(meta)
    assert meta["rows_duplicate"] == 2 and meta["rows_rejected"] == 3
    assert meta["rejects_by_rule"] == {"id: duplicate": 2, "id: pattern": 1}
    assert meta["audience_ids_uploaded"] == 2 and meta["rows_accepted"] == 2
    audience = next(
        a for a in line_store(sandbox_server.sandbox).audiences.values() if a.description == name
    )
    assert audience.ids == set(table.frame["id"].iloc[[0, 2]])


def test_push_whose_answer_was_lost_a_day_ago_is_counted_as_delivery_unknown(
    sandbox_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LINE took two pushes but its answers were lost (the sandbox acts, then cuts the
    connection), and the run stopped. Re-run 25 hours later, when LINE no longer knows their
    retry keys: resending could deliver twice, so they are neither resent nor counted as
    accepted or refused, but as ``delivery_unknown``; the run is not a clean success."""
    sandbox = sandbox_server.sandbox
    db = tmp_path / "unknown.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            f"create table t as select * from (values ('{uid(1)}', 'a'), ('{uid(2)}', 'b')) v(id, name)"
        )
    asset = build_export(
        "unknown_push",
        destination="line_messaging",
        query="select * from t",
        settings={**FAST, "max_retry": 1, **CASES["line_push"].settings},
        retry_policy=None,
    )
    resources = {
        "sql_source": SqlSource(url=f"duckdb:///{db}"),
        "line_messaging": CASES["line_push"].resource(sandbox_server),
    }
    tick = {"dagster/scheduled_execution_time": "2026-05-01T09:00:00+00:00"}
    sandbox.add_fault(Fault(path="/v2/bot/message/push", lose_answer=True, times=-1))
    first = dg.materialize(
        [asset], resources=resources, tags=tick, raise_on_error=False, instance=run_instance()
    )
    assert not first.success
    sandbox.clear_faults()
    store = line_store(sandbox)
    assert [len(store.received(uid(n))) for n in (1, 2)] == [1, 1]  # LINE did take them

    with duckdb.connect(str(db)) as con:  # the same tick, two more recipients since
        con.execute(f"insert into t values ('{uid(3)}', 'c'), ('{uid(4)}', 'd')")
    later = time.time() + 25 * 3600
    monkeypatch.setattr(sending, "time", type("Clock", (), {"time": staticmethod(lambda: later)}))
    second = dg.materialize(
        [asset], resources=resources, tags=tick, raise_on_error=False, instance=run_instance()
    )
    meta = outcome_metadata(second)
    assert second.success and adds_up(meta), meta
    assert meta["rows_delivery_unknown"] == 2 and meta["rows_accepted"] == 2
    assert meta["rows_refused_by_api"] == 0 and meta["push_delivery_unknown"] == 2
    assert [len(store.received(uid(n))) for n in (1, 2, 3, 4)] == [1, 1, 1, 1]  # none twice
    check = check_of(second, "api_refusals")
    assert check is not None and not check.passed
    assert check.metadata["rows_delivery_unknown"].value == 2  # type: ignore[union-attr]
    rejects = pd.read_csv(meta["rejects_file"])
    assert sorted(rejects.loc[rejects["rule"] == "delivery_unknown", "_row_number"]) == [1, 2]
    # The CLI's table and warnings say so too.
    columns = [c for c, _ in SUMMARY_COLUMNS]
    row = dict(zip(columns, materialization_rows(second)[0], strict=True))
    assert (row["read"], row["unknown"], row["accepted"], row["refused"]) == (4, 2, 2, 0)
    said = "\n".join(attention_lines(outcomes(second)))
    assert "2 rows of unknown delivery" in said and "check api_refusals failed" in said
    # A run that succeeded keeps LINE messages' own advice too (metadata and the CLI warning).
    assert meta["delivery_unknown_advice"] == line_advice.MESSAGES, meta
    assert f"; {line_advice.MESSAGES}" in said, said


def test_capi_external_id_undefined_identifies_no_one(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """LINE reads ``external_id: "undefined"`` as not sent: alone it is no identifier (rejected
    before sending; the sandbox refuses it), beside another one it is left out."""
    table = capi_table(["valid", "valid"])
    table.frame["external_id"] = "undefined"
    table.frame.loc[1, "click_id"] = "c-1"
    result, meta = run_case(sandbox_server, tmp_path, CASES["line_conversion"], table)
    assert result.success and meta["rows_rejected"] == 1 and meta["rows_accepted"] == 1
    assert list(meta["rejects_by_rule"]) == [
        "line_uid or click_id or ifa or browser_id or phone or email or external_id: user_identifier"
    ]
    (kept,) = events_of(sandbox_server.sandbox, "tag-o").values()
    assert kept["user"] == {"click_id": "c-1"}  # external_id not sent
    event = {
        "event": {
            "deduplication_key": "k-undefined",
            "event_type": "conversion",
            "source_type": "web",
            "event_timestamp": NOW - 60,
        },
        "user": {"external_id": "undefined"},
    }
    answer = requests.post(
        f"{sandbox_server.url}/v1/tag-o/events",
        json=[event],
        headers={
            "X-Line-TagAccessToken": next(iter(sandbox_server.sandbox.tokens["line_conversion"]))
        },
        timeout=10,
    )
    assert answer.status_code == 400 and "user must carry" in answer.text


def test_failed_multicast_counts_its_repeated_recipients_as_duplicates(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """A repeat is a ``duplicate`` reject found before sending, whatever LINE answers later."""
    table = line_table(["refused", "valid"], duplicates_rejected=True)
    table.frame.loc[1, "id"] = table.frame.loc[0, "id"]  # the refused recipient, twice
    result, meta = run_case(sandbox_server, tmp_path, CASES["line_multicast"], table)
    assert not result.success and adds_up(meta)
    assert (meta["rows_rejected"], meta["rows_refused_by_api"], meta["rows_unsent"]) == (1, 1, 0)
    assert meta["rejects_by_rule"] == {"id: duplicate": 1} and meta["rows_duplicate"] == 1
    assert meta["distinct_recipients"] == 1 and meta["rows_valid"] == 1


def test_partly_refused_run_says_how_many_and_why(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    table = line_table(["valid", "refused", "valid"], duplicates_rejected=False)
    result, meta = run_case(sandbox_server, tmp_path, CASES["line_push"], table)
    assert result.success and meta["rows_refused_by_api"] == 1
    said = "\n".join(attention_lines(outcomes(result)))
    assert "check api_refusals failed: 1 of 3 rows sent refused by the API" in said, said
    assert ": 1 refused by the API: LINE refused: " in said and "rejects file: " in said


@pytest.mark.parametrize("why", ["line_channel_id", "unknown_columns"])
def test_failure_before_sending_carries_the_counts(
    sandbox_server: SandboxServer, tmp_path: Path, why: str
) -> None:
    """A run stopped before any request (a CAPI line_uid without the resource's
    line_channel_id; a column the destination does not know with ``unknown_columns: fail``)
    counts its valid rows unsent."""
    table = capi_table(["valid", "invalid", "valid"])
    extra: dict[str, Any] = {}
    if why == "line_channel_id":
        table.frame["line_uid"] = uid(7)
    else:
        table.frame["nope"] = "x"
        extra["unknown_columns"] = "fail"
    result, meta = run_case(sandbox_server, tmp_path, CASES["line_conversion"], table, **extra)
    assert not result.success and adds_up(meta)
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_unsent"]) == (3, 1, 2)
    assert table_row(result)["valid"] == 2
    assert events_of(sandbox_server.sandbox, "tag-o") == {}


REFUSED_PUSH_DIG = """
+push:
  td>: queries/push.sql
  result_connection: line_messaging_sample
  result_settings:
    target: push_message
    template_message: '{"type": "text", "text": "Hi {{name}}"}'
"""


def test_cli_run_of_a_refused_push_shows_its_counts_and_rejects_file(
    sandbox_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``line-exports run`` of a push LINE refused whole (7 rows, 1 invalid): the table shows
    what the failure's metadata holds, and the summary names the reasons and the rejects file."""
    from line_exports_tests.cli_helpers import workflow_folder
    from line_exports_tests.test_workflows_run import cli

    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    rows = ", ".join(f"('{uid(n)}', 'n{n}')" for n in range(1, 7)) + ", ('not-a-user', 'x')"
    folder = workflow_folder(
        tmp_path,
        {"refuse": REFUSED_PUSH_DIG},
        {"push.sql": f"SELECT * FROM (VALUES {rows}) v(id, name)"},
    )
    sandbox_server.sandbox.add_fault(Fault(path="/v2/bot/message/push", status=400, times=-1))
    code, out = cli("run", "refuse", "--workflows", str(folder))
    assert code == 1, out
    #              task  status   read  valid rejected sent refused unsent unknown accepted
    assert re.search(r"push\s+failed\s+7\s+6\s+1\s+6\s+6\s+0\s+0\s+0\s", out), out
    assert "push: 1 rejected: id: pattern 1" in out
    assert "push: 6 refused by the API: LINE refused: sandbox fault 400 (6)" in out
    assert "rejects file: " in out


def test_run_stopped_by_an_unexpected_api_error_counts_what_it_did(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """MAAC takes the first import, then answers 403: the failure counts the batch accepted,
    the batch MAAC answered 403 for as refused by the API (with its answer) and the rows never
    sent (the destination's report so far), and the table shows them."""
    table = maac_table(["valid"] * 5)
    path = "/openapi/v1/member/import/"
    sandbox_server.sandbox.add_fault(Fault(path=path, method="POST"))  # passes through
    sandbox_server.sandbox.add_fault(Fault(path=path, method="POST", status=403, times=-1))
    result, meta = run_case(sandbox_server, tmp_path, CASES["maac"], table, batch_size=2)
    assert not result.success and adds_up(meta)
    assert (meta["rows_accepted"], meta["rows_unsent"], meta["rows_refused_by_api"]) == (2, 1, 2)
    row = table_row(result)
    assert (row["read"], row["accepted"], row["refused"]) == (5, 2, 2)
    assert row["export"].endswith("(failed)")
