"""Two columns of one name, or a column named by a number, fail the run clearly (VERIFY-13n N6).

A query's ``SELECT 'a' AS title, 'b' AS title`` (DuckDB, SQLAlchemy; with a DuckDB UNION column
too) or an upstream frame from ``pd.concat(axis=1)`` (numpy or Arrow dtypes) crashed the run
(``AttributeError: 'DataFrame' object has no attribute 'dtype'``); an upstream column named
``5`` crashed it in ``names.closest`` (``TypeError``). Now two columns of one name fail the
run before sending, naming the name(s) and the source, nothing sent; a number name is its
text (``'5'``, an unknown column) unless a column already has that text. Real Dagster runs
over HTTP to the LINE Conversion API sandbox; real DuckDB and SQLite files.
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import textwrap
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest

from line_exports import LineConversionResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import events_of
from line_exports.workflows.cli import register
from line_exports_tests.test_outcomes import COUNTER, adds_up

NOW = int(time.time()) - 60
BASE = (
    "SELECT 'k1' AS deduplication_key, 'conversion' AS event_type, 'web' AS source_type, "
    f"{NOW} AS event_timestamp, 'x' AS external_id"
)


def _base(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "deduplication_key": [f"k{n}" for n in range(rows)],
            "event_type": "conversion",
            "source_type": "web",
            "event_timestamp": NOW,
            "external_id": [f"x{n}" for n in range(rows)],
        }
    )


def _outcome(result: dg.ExecuteInProcessResult, node: str) -> tuple[str | None, dict[str, Any]]:
    """The step failure's message (None when the run succeeded) and the export's metadata."""
    message = None
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            message = str(event.event_specific_data.error.message)
    mats = result.asset_materializations_for_node(node)
    meta = {k: getattr(v, "value", v) for k, v in mats[0].metadata.items()} if mats else {}
    return message, meta


def _query_run(server: SandboxServer, url: str, query: str) -> tuple[str, str | None, dict]:
    tag = f"names_q{next(COUNTER)}"
    export = build_export(tag, destination="line_conversion", query=query, retry_policy=None)
    result = dg.materialize(
        [export],
        resources={
            "sql_source": SqlSource(url=url),
            "line_conversion": LineConversionResource(line_tag_id=tag, base_url=server.url),
        },
        raise_on_error=False,
    )
    return tag, *_outcome(result, tag)


def _upstream_run(server: SandboxServer, frame: pd.DataFrame) -> tuple[str, str | None, dict]:
    tag = f"names_up{next(COUNTER)}"

    @dg.asset(name=f"{tag}_rows")
    def upstream() -> pd.DataFrame:
        return frame

    export = build_export(
        tag, destination="line_conversion", upstream=f"{tag}_rows", retry_policy=None
    )
    result = dg.materialize(
        [upstream, export],
        resources={"line_conversion": LineConversionResource(line_tag_id=tag, base_url=server.url)},
        raise_on_error=False,
    )
    return tag, *_outcome(result, tag)


def _refused_clearly(message: str | None, *named: str) -> None:
    assert message is not None, "the run should fail"
    assert "Error" not in message and "Traceback" not in message, message
    assert "nothing was sent" in message, message
    for text in named:
        assert text in message, message


@pytest.mark.parametrize("engine", ["duckdb", "sqlite"])
def test_a_query_naming_two_columns_alike_fails_before_sending(
    sandbox_server: SandboxServer, tmp_path: Path, engine: str
) -> None:
    if engine == "duckdb":
        path = tmp_path / "w.duckdb"
        duckdb.connect(str(path)).close()
        url = f"duckdb:///{path}"
    else:
        path = tmp_path / "w.sqlite"
        sqlite3.connect(path).close()
        url = f"sqlite:///{path}"
    query = BASE + ", 'a' AS title, 'b' AS title, 'y' AS external_id"
    tag, message, _ = _query_run(sandbox_server, url, query)
    _refused_clearly(
        message,
        f"{tag}: the query returns",
        "2 columns named 'external_id'",
        "2 columns named 'title'",
    )
    assert events_of(sandbox_server.sandbox, tag) == {}


def test_a_duckdb_union_column_named_like_another_fails_before_sending(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """A UNION column is cast to text in DuckDB first (by name: the cast took the other
    column of that name, and Arrow's union crashed the run)."""
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    query = BASE + ", union_value(n := 1) AS title, 'b' AS title"
    tag, message, _ = _query_run(sandbox_server, f"duckdb:///{path}", query)
    _refused_clearly(message, "the query returns 2 columns named 'title'")
    assert events_of(sandbox_server.sandbox, tag) == {}


@pytest.mark.parametrize("arrow", [False, True], ids=["numpy", "arrow"])
def test_an_upstream_frame_naming_two_columns_alike_fails_before_sending(
    sandbox_server: SandboxServer, arrow: bool
) -> None:
    first = _base(2).assign(title=["a", "b"])
    frame = pd.concat([first, pd.DataFrame({"title": ["c", "d"]})], axis=1)
    if arrow:
        frame = frame.convert_dtypes(dtype_backend="pyarrow")
    tag, message, _ = _upstream_run(sandbox_server, frame)
    _refused_clearly(message, f"upstream asset {tag}_rows returns 2 columns named 'title'")
    assert events_of(sandbox_server.sandbox, tag) == {}


def test_an_upstream_column_named_by_a_number_is_its_text(sandbox_server: SandboxServer) -> None:
    frame = _base(2).assign(title=["a", "b"])
    frame[5] = ["p", "q"]
    tag, message, meta = _upstream_run(sandbox_server, frame)
    assert message is None, message
    assert adds_up(meta) and meta["rows_accepted"] == 2, meta
    assert list(meta["unknown_columns"]) == ["5"], meta
    events = events_of(sandbox_server.sandbox, tag)
    assert sorted(e["web"]["title"] for e in events.values()) == ["a", "b"], events


def test_a_number_name_and_its_text_together_are_two_columns_alike(
    sandbox_server: SandboxServer,
) -> None:
    frame = _base(2)
    frame[5] = ["p", "q"]
    frame["5"] = ["r", "s"]
    tag, message, _ = _upstream_run(sandbox_server, frame)
    _refused_clearly(message, "2 columns named '5' (named 5, not a text)")
    assert events_of(sandbox_server.sandbox, tag) == {}


def test_plan_names_two_columns_alike(tmp_path: Path) -> None:
    """``line-exports plan`` reads the query as a run does: the same message, not a crash."""
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "connections.yaml").write_text("connections:\n  maac_main:\n    type: maac\n")
    (folder / "q.sql").write_text("SELECT line_uid, line_uid FROM segment_users LIMIT 4\n")
    (folder / "daily.dig").write_text(
        textwrap.dedent(
            """
            timezone: Asia/Tokyo
            +seg:
              td>: q.sql
              result_connection: maac_main
              result_settings:
                data_object: segments
                segment_name: daily
            """
        )
    )
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["plan", "daily", "--workflows", str(folder)])
    out = io.StringIO()
    code = ns.func(ns, out)
    text = out.getvalue()
    assert code != 0, text
    assert "error: the query returns 2 columns named 'line_uid'" in text, text
    assert "Error" not in text, text


@pytest.mark.parametrize("engine", ["duckdb", "sqlite"])
def test_a_query_of_no_row_naming_two_columns_alike_fails_too(
    sandbox_server: SandboxServer, tmp_path: Path, engine: str
) -> None:
    """NOTE-columns "Left": the names were checked per chunk, so a query returning no row
    (today's rows filtered out) ran as an empty result; its names are wrong whatever rows
    come. A query of no row with distinct names still ends as an empty result (no failure)."""
    if engine == "duckdb":
        path = tmp_path / "w.duckdb"
        duckdb.connect(str(path)).close()
        url = f"duckdb:///{path}"
    else:
        path = tmp_path / "w.sqlite"
        sqlite3.connect(path).close()
        url = f"sqlite:///{path}"
    none = BASE + ", 'a' AS title, 'b' AS title WHERE 1 = 0"  # (a subquery would rename one)
    tag, message, _ = _query_run(sandbox_server, url, none)
    _refused_clearly(message, f"{tag}: the query returns", "2 columns named 'title'")
    tag, message, meta = _query_run(sandbox_server, url, BASE + ", 'a' AS title WHERE 1 = 0")
    assert message is None and meta["rows_read"] == 0, (message, meta)
    assert events_of(sandbox_server.sandbox, tag) == {}


def test_an_upstream_frame_of_no_row_naming_two_columns_alike_fails_too(
    sandbox_server: SandboxServer,
) -> None:
    first = _base(0).assign(title=pd.Series([], dtype=object))
    frame = pd.concat([first, pd.DataFrame({"title": pd.Series([], dtype=object)})], axis=1)
    tag, message, _ = _upstream_run(sandbox_server, frame)
    _refused_clearly(message, f"upstream asset {tag}_rows returns 2 columns named 'title'")
    tag, message, meta = _upstream_run(sandbox_server, first)
    assert message is None and meta["rows_read"] == 0, (message, meta)
