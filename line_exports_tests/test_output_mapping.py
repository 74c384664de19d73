"""Audience Studio's Output Mapping: renamed columns and built strings reach the API.

Reference (every export reference, "Activate a Segment in Audience Studio"): Attribute Columns
(Export All Columns, or Add Columns with an Output Column Name) and String Builder (String,
Timestamp "the date and time of the export", Segment Id, Segment Name, Audience Id).
"""

from __future__ import annotations

import argparse
import io
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from line_exports import MaacResource, build_export
from line_exports.output_mapping import parse_output_mapping
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.maac import store_of
from line_exports.workflows.cli import register

FAST_RETRY = {"initial_retry_wait": 1, "max_retry": 3, "connection_timeout": 30}
TICK = {"dagster/scheduled_execution_time": "2026-11-01T00:00:00+00:00"}


def uid(i: int) -> str:
    return f"U{i:032x}"


@dg.asset
def vip_members() -> pd.DataFrame:
    """The segment: the CRM's own column names, and one column not to send."""
    return pd.DataFrame(
        {
            "uid": [uid(i) for i in range(3)],
            "mail": [f"m{i}@example.jp" for i in range(3)],
            "score": [0.5, 0.7, 0.9],
        }
    )


MAPPING = {
    "columns": [{"source": "uid", "output": "line_uid"}, {"source": "mail", "output": "email"}],
    "strings": [
        {
            "output": "tags",
            "parts": [
                {"string": "seg_"},
                "segment_name",
                {"string": "_"},
                "segment_id",
                {"string": "_"},
                {"timestamp": "yyyyMMdd"},
            ],
        },
        {"output": "display_name", "parts": [{"string": "sent "}, "timestamp"]},
    ],
    "segment": {"id": "1234", "audience_id": "77"},
}


def test_activation_renames_a_column_and_sends_a_constant_and_a_timestamp(
    sandbox_server: SandboxServer,
) -> None:
    export = build_export(
        "vip_to_maac",
        destination="maac",
        upstream="vip_members",
        settings={
            **FAST_RETRY,
            "data_object": "members",
            "import_key": "line_uid",
            "tags": "crm",
            "output_mapping": MAPPING,
        },
        timezone="Asia/Tokyo",
    )
    result = dg.materialize(
        [vip_members, export],
        resources={"maac": MaacResource(base_url=sandbox_server.url, poll_seconds=0.05)},
        tags=TICK,
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("vip_to_maac")
    meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    assert meta["rows_accepted"] == 3
    assert "line_uid <- uid" in meta["output_mapping"]
    store = store_of(sandbox_server.sandbox)
    member = store.members[store.by_key["line_uid"][uid(1)]]
    assert member["email"] == "m1@example.jp"  # renamed from mail
    # The run's time is its tick, in the export's timezone: 2026-11-01 09:00 JST.
    assert member["tags"] == {"crm", "seg_vip_members_1234_20261101"}
    assert member["line_display_name"] == "sent 2026-11-01T09:00:00+09:00"
    assert "score" not in member and "uid" not in member


def test_every_column_unchanged_unless_columns_are_listed() -> None:
    frame = pd.DataFrame({"a": [1], "b": ["x"]})
    from line_exports.output_mapping import apply

    every = parse_output_mapping({"strings": [{"output": "c", "parts": [{"string": "k"}]}]})
    assert every is not None and every.export_all_columns
    assert apply(frame, every, {"c": "k"}).to_dict("records") == [{"a": 1, "b": "x", "c": "k"}]
    chosen = parse_output_mapping({"columns": ["b"]})
    assert chosen is not None and not chosen.export_all_columns
    assert apply(frame, chosen, {}).to_dict("records") == [{"b": "x"}]


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"export_all_columns": True, "columns": ["a"]}, "list columns only without it"),
        ({"columns": ["a", {"source": "b", "output": "a"}]}, "'a' is given more than once"),
        ({"strings": [{"output": "s", "parts": ["segment_size"]}]}, "unknown part 'segment_size'"),
        ({"strings": [{"output": "s", "parts": [{"timestamp": "yyyy-bb"}]}]}, "'b'"),
        ({"columns": [{"source": "a", "rename": "b"}]}, r"columns\.0\.rename"),
        (
            {"strings": [{"output": "s", "parts": ["audience_id"]}]},
            "segment.audience_id is not set",
        ),
    ],
)
def test_a_wrong_mapping_fails_when_definitions_load(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        build_export(
            "x",
            destination="maac",
            query="select 1",
            settings={"data_object": "segments", "segment_name": "s", "output_mapping": mapping},
        )


def test_a_missing_source_column_fails_the_run_naming_it(sandbox_server: SandboxServer) -> None:
    export = build_export(
        "vip_to_maac",
        destination="maac",
        upstream="vip_members",
        settings={
            **FAST_RETRY,
            "data_object": "members",
            "import_key": "line_uid",
            "tags": "crm",
            "output_mapping": {"columns": [{"source": "user_id", "output": "line_uid"}]},
        },
    )
    result = dg.materialize(
        [vip_members, export],
        resources={"maac": MaacResource(base_url=sandbox_server.url)},
        raise_on_error=False,
    )
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None and "source column 'user_id' is not in the rows" in error.message
    assert "uid, mail, score" in error.message


def test_dig_result_settings_output_mapping_shown_in_plan(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "connections.yaml").write_text("connections:\n  maac_main:\n    type: maac\n")
    (folder / "q.sql").write_text("SELECT line_uid AS uid FROM segment_users LIMIT 4\n")
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
                output_mapping:
                  columns:
                    - {source: uid, output: line_uid}
                  strings:
                    - output: note
                      parts: [{string: "run "}, {timestamp: "yyyy-MM-dd HH:mm"}, segment_name]
                  segment: {name: " spring"}
            """
        )
    )
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(
        ["plan", "daily", "--workflows", str(folder), "--session-time", "2026-11-01T09:00:00+09:00"]
        + ["--preview", "2"]
    )
    out = io.StringIO()
    code = ns.func(ns, out)
    text = out.getvalue()
    assert "output mapping:" in text and "line_uid <- uid" in text, text
    assert "note = 'run 2026-11-01 09:00 spring'" in text
    assert "read 4" in text and "valid 4" in text
    assert code == 0, text
