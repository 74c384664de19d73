"""Loading .dig workflows: the reference examples, interpolation, includes, secrets, the TD CLI
JSON form, connections, the component, and every kind of bad input (one clear message each,
while the other workflows still load)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from line_exports.destinations import destinations
from line_exports.workflows import WorkflowErrors, load_folder, load_workflows, parse_td_result
from line_exports.workflows.digfile import SecretRef

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "workflows"
REFERENCE = Path("/work/shared/reference")

MAAC_CONNECTIONS = """
connections:
  maac_main:
    type: maac
    api_token_env: MAAC_WF_TEST_TOKEN
"""


def require_destination(type_name: str) -> None:
    """Skip only while the destination module has not landed in the registry."""
    if type_name not in destinations():
        pytest.skip(
            f"destination {type_name!r} is not registered yet (line_exports/destinations/{type_name}.py)"
        )


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return folder


GOOD = """
+members:
  td>: q.sql
  result_connection: maac_main
  result_settings:
    data_object: members
    import_key: line_uid
    tags: a, b
"""


def project(tmp_path: Path, **workflows: str) -> Path:
    return write(
        tmp_path / "wf",
        {
            "connections.yaml": MAAC_CONNECTIONS,
            "q.sql": "SELECT line_uid FROM line_members\n",
            "good.dig": GOOD,
            **{f"{k}.dig": v for k, v in workflows.items()},
        },
    )


def single_error(folder: Path) -> str:
    loaded = load_folder(folder)
    assert [w.name for w in loaded.workflows] == ["good"], "the good workflow must still load"
    assert len(loaded.errors) == 1, [str(e) for e in loaded.errors]
    return str(loaded.errors[0])


# --- the reference examples -------------------------------------------------------------------


@pytest.mark.skipif(
    not (REFERENCE / "maac-crescendo-export.txt").exists(),
    reason="reference docs not on this machine",
)
def test_maac_reference_workflow_is_shipped_exactly_as_written() -> None:
    reference = (REFERENCE / "maac-crescendo-export.txt").read_text(encoding="utf-8")
    block = reference.split("Example Workflow for Line via Crescendo")[1].split("```")[1]
    assert (EXAMPLES / "maac_crescendo.dig").read_text(encoding="utf-8").strip() == block.strip()


def test_examples_load_with_reference_settings() -> None:
    folder = load_folder(EXAMPLES)
    assert folder.errors == []
    maac = folder.get("maac_crescendo").tasks[0]
    assert maac.key == dg.AssetKey(["maac_crescendo", "td_result_into_line"])
    # `api_token: ###` is a YAML comment: null, so the token comes from the connection.
    assert maac.settings == {
        "data_object": "members",
        "import_key": "line_uid",
        "tags": "import210707, apple product interested",
    }
    assert maac.resource_key == "your_connection_name" and maac.database == "sample_datasets"
    daily = folder.get("maac_daily").schedule
    # `daily>: 07:10:00` read as digdag means (not YAML 1.1's base-60 integer).
    assert (
        daily.form == "daily> 07:10:00"
        and daily.delay_seconds == 7 * 3600 + 600
        and daily.timezone == "Asia/Tokyo"
    )
    defs = folder.definitions()
    assert {j.name for j in defs.jobs} >= {
        "maac_crescendo",
        "maac_daily",
        "line_messaging",
        "line_conversion",
    }
    assert isinstance(defs.resources["sql_source"], dg.ConfigurableResource)


def test_line_messaging_example_loads() -> None:
    require_destination("line_messaging")
    task = load_folder(EXAMPLES).get("line_messaging").tasks[0]
    assert task.settings == {
        "audience_name": "audience_name_abc",
        "use_audience_id": False,
        "is_ifa_audience": True,
    }
    assert task.database == "td.database" and task.connection == "line_messaging_sample"


def test_line_conversion_example_loads_with_tag_on_the_resource() -> None:
    require_destination("line_conversion")
    task = load_folder(EXAMPLES).get("line_conversion").tasks[0]
    assert task.settings == {"ignore_invalid_records": True}
    assert (
        task.resource.line_tag_id == "tag_id_1234"
    )  # a credential field: resource, not run config


def test_component_defs_yaml_loads_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dg project whose defs folder holds a defs.yaml like the example's, pointing at the
    example workflows, loads them through Dagster's own component loader."""
    defs_yaml = (
        (EXAMPLES / "defs.yaml").read_text(encoding="utf-8").replace("path: .", f"path: {EXAMPLES}")
    )
    write(
        tmp_path,
        {
            "pyproject.toml": '[tool.dg]\ndirectory_type = "project"\n\n[tool.dg.project]\nroot_module = "wfproj"\n',
            "wfproj/__init__.py": "",
            "wfproj/defs/__init__.py": "",
            "wfproj/defs/workflows/defs.yaml": defs_yaml,
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    defs = dg.load_from_defs_folder(path_within_project=tmp_path)
    assert "maac_daily_schedule" in {s.name for s in defs.schedules}
    assert defs.resolve_assets_def(dg.AssetKey(["maac_daily", "segment"])) is not None
    assert {"maac_crescendo", "maac_daily"} <= {j.name for j in defs.jobs}


# --- interpolation, includes, secrets ---------------------------------------------------------


def test_exports_interpolation_and_includes(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        {
            "connections.yaml": MAAC_CONNECTIONS,
            "common.yml": "td:\n  database: from_include\nprefix: seg\n",
            "tasks/segment.yml": "data_object: segments\nsegment_name: ${prefix}_${td.database}_${tier}\n",
            "queries/q.sql": "SELECT line_uid FROM segment_users -- ${td.database} ${session_date}\n",
            "wf.dig": """
            timezone: Asia/Tokyo
            _export:
              !include : common.yml
              tier: gold
            +first:
              td>: queries/q.sql
              result_connection: maac_main
              result_settings: !include tasks/segment.yml
            +second:
              _export:
                tier: silver
              td>: queries/q.sql
              database: other_db
              result_connection: maac_main
              result_settings: !include tasks/segment.yml
        """,
        },
    )
    loaded = load_folder(folder)
    assert loaded.errors == []
    first, second = loaded.get("wf").tasks
    assert first.settings["segment_name"] == "seg_from_include_gold"
    assert (
        second.settings["segment_name"] == "seg_other_db_silver"
    )  # task database: wins, task _export scoped
    assert "-- from_include ${session_date}" in first.sql  # session vars wait for the run
    assert second.deps == [first.key]


def test_secret_reference_goes_to_the_resource_never_run_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAC_WF_TOKEN", "token-value-123")
    folder = project(
        tmp_path,
        secret="""
        +t:
          td>: q.sql
          result_connection: maac_main
          result_settings:
            api_token: ${secret:maac.wf_token}
            data_object: segments
            segment_name: s
    """,
    )
    loaded = load_folder(folder)
    assert loaded.errors == []
    task = loaded.get("secret").tasks[0]
    assert "api_token" not in task.settings
    assert (
        isinstance(task.resource.api_token, dg.EnvVar)
        and task.resource.api_token.env_var_name == "MAAC_WF_TOKEN"
    )
    asset = loaded.definitions().resolve_assets_def(task.key)
    assert "api_token" not in asset.op.config_schema.config_type.fields
    assert "token-value-123" not in repr(asset.op.config_schema.config_type.fields)


def test_secret_must_be_set(tmp_path: Path) -> None:
    message = single_error(
        project(
            tmp_path,
            unset="""
        +t:
          td>: q.sql
          result_connection: maac_main
          result_settings:
            api_token: ${secret:maac.nowhere_token}
            data_object: segments
            segment_name: s
    """,
        )
    )
    assert (
        "unset.dig:5, task +t, setting result_settings.api_token: secret 'maac.nowhere_token' is not set: export the environment variable MAAC_NOWHERE_TOKEN"
        in message
    )


def test_secret_only_for_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_TOKEN", "x")
    message = single_error(
        project(
            tmp_path,
            leak="""
        +t:
          td>: q.sql
          result_connection: maac_main
          result_settings:
            data_object: segments
            segment_name: ${secret:some_token}
    """,
        )
    )
    assert (
        "leak.dig:6, task +t, setting result_settings.segment_name: ${secret:some_token} is only allowed as the value of a credential"
        in message
    )


def test_connection_reads_env_only_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = project(tmp_path)
    task = load_folder(folder).get("good").tasks[0]
    assert task.resource.api_token is None and task.resource.base_url is None  # the sandbox
    monkeypatch.setenv("MAAC_WF_TEST_TOKEN", "t0k3n")
    task = load_folder(folder).get("good").tasks[0]
    assert isinstance(task.resource.api_token, dg.EnvVar)


def test_connection_credential_literal_is_refused(tmp_path: Path) -> None:
    folder = project(tmp_path)
    (folder / "connections.yaml").write_text(
        "connections:\n  maac_main:\n    type: maac\n    api_token: abc\n"
    )
    loaded = load_folder(folder)
    assert "api_token is a credential: write api_token_env" in str(loaded.errors[0])
    assert "connections.yaml:4, task connection maac_main, setting api_token" in str(
        loaded.errors[0]
    )


# --- the TD CLI --result JSON form ------------------------------------------------------------


def test_td_cli_result_json_as_string_and_file(tmp_path: Path) -> None:
    payload = {"type": "maac", "data_object": "members", "import_key": "email", "tags": "x"}
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "result.json").write_text(json.dumps(payload))
    folder = project(
        tmp_path,
        td_json=f"""
        +inline:
          td>: q.sql
          result: '{json.dumps(payload)}'
        +from_file:
          td>: q.sql
          result: result.json
    """,
    )
    loaded = load_folder(folder)
    assert loaded.errors == []
    inline, from_file = loaded.get("td_json").tasks
    assert (
        inline.settings
        == from_file.settings
        == {"data_object": "members", "import_key": "email", "tags": "x"}
    )
    assert inline.destination.type_name == "maac"


def test_td_cli_line_messaging_json_keeps_token_off_run_config(tmp_path: Path) -> None:
    require_destination("line_messaging")
    result = {
        "type": "line_messaging",
        "access_token": "xxxx",
        "auth_method": "channel_access_token",
        "target": "audience",
        "audience_name": "test group",
        "use_audience_id": True,
        "audience_id": 33948315694,
        "is_ifa_audience": True,
    }
    folder = project(tmp_path, lm=f"+push:\n  td>: q.sql\n  result: '{json.dumps(result)}'\n")
    loaded = load_folder(folder)
    assert loaded.errors == []
    task = loaded.get("lm").tasks[0]
    assert "access_token" not in task.settings and "auth_method" not in task.settings
    assert task.settings["audience_id"] == 33948315694 and task.resource.access_token == "xxxx"


def test_parse_td_result_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_td_result('{"type": "maac",')
    with pytest.raises(ValueError, match="missing 'type'"):
        parse_td_result('{"data_object": "members"}')
    with pytest.raises(ValueError, match="neither a JSON object nor an existing file"):
        parse_td_result("nope.json", tmp_path)


# --- bad input: one clear message, the others still load ---------------------------------------


def test_malformed_dig(tmp_path: Path) -> None:
    message = single_error(project(tmp_path, broken="+t:\n  td>: q.sql\n result_connection: [x\n"))
    assert "broken.dig:" in message and "malformed YAML" in message


def test_unknown_destination_type(tmp_path: Path) -> None:
    message = single_error(
        project(
            tmp_path,
            typo="""
        +t:
          td>: q.sql
          result_settings:
            type: maak
            data_object: members
    """,
        )
    )
    assert (
        "typo.dig:4, task +t, setting type: unknown destination type 'maak' (did you mean 'maac'?)"
        in message
    )


def test_missing_required_setting(tmp_path: Path) -> None:
    message = single_error(
        project(
            tmp_path,
            missing="""
        +t:
          td>: q.sql
          result_connection: maac_main
          result_settings:
            import_key: line_uid
    """,
        )
    )
    assert (
        "missing.dig:4, task +t, setting result_settings.data_object: missing required setting data_object"
        in message
    )


def test_misspelled_setting_suggests_the_closest(tmp_path: Path) -> None:
    message = single_error(
        project(
            tmp_path,
            misspelled="""
        +t:
          td>: q.sql
          result_connection: maac_main
          result_settings:
            data_object: members
            import_kye: line_uid
            tags: a
    """,
        )
    )
    assert (
        "misspelled.dig:6, task +t, setting result_settings.import_kye: unknown setting 'import_kye' for maac (did you mean 'import_key'?)"
        in message
    )


def test_required_by_another_setting(tmp_path: Path) -> None:
    message = single_error(
        project(
            tmp_path,
            members="""
        +t:
          td>: q.sql
          result_connection: maac_main
          result_settings:
            data_object: members
            tags: a
    """,
        )
    )
    assert (
        "task +t, setting result_settings.import_key: import_key is required when data_object is members"
        in message
    )


def test_value_out_of_range_names_the_range(tmp_path: Path) -> None:
    message = single_error(
        project(
            tmp_path,
            big="""
        +t:
          td>: q.sql
          result_connection: maac_main
          result_settings:
            data_object: segments
            segment_name: s
            batch_size: 10001
    """,
        )
    )
    assert (
        "big.dig:7, task +t, setting result_settings.batch_size: batch_size must be between 1 and 10,000 (got 10001)"
        in message
    )


def test_batch_size_multicast_501_is_out_of_range(tmp_path: Path) -> None:
    require_destination("line_messaging")
    message = single_error(
        project(
            tmp_path,
            multicast="""
        +t:
          td>: q.sql
          result_settings:
            type: line_messaging
            target: multicast_message
            template_message_multicast: '{"type": "text", "text": "hi"}'
            batch_size_multicast: 501
    """,
        )
    )
    assert "multicast.dig:7, task +t, setting result_settings.batch_size_multicast: " in message
    assert "501" in message and "between 1 and 500" in message


def test_missing_query_file(tmp_path: Path) -> None:
    message = single_error(
        project(
            tmp_path,
            noquery="""
        +t:
          td>: queries/missing.sql
          result_connection: maac_main
          result_settings: {data_object: segments, segment_name: s}
    """,
        )
    )
    assert (
        "noquery.dig:2, task +t, setting td>: query file queries/missing.sql not found" in message
    )


def test_unresolved_variable_in_settings_and_query(tmp_path: Path) -> None:
    message = single_error(
        project(
            tmp_path,
            unresolved="""
        _export:
          segment_prefix: x
        +t:
          td>: q.sql
          result_connection: maac_main
          result_settings:
            data_object: segments
            segment_name: ${segment_prefx}_1
    """,
        )
    )
    assert (
        "unresolved.dig:8, task +t, setting result_settings.segment_name: unresolved variable ${segment_prefx} (did you mean 'segment_prefix'?)"
        in message
    )
    (tmp_path / "wf" / "unresolved.dig").unlink()
    (tmp_path / "wf" / "bad.sql").write_text("SELECT line_uid FROM ${table}\n")
    message = single_error(
        project(
            tmp_path,
            in_query="+t:\n  td>: bad.sql\n  result_connection: maac_main\n  result_settings: {data_object: segments, segment_name: s}\n",
        )
    )
    assert "in_query.dig:2, task +t, setting td> bad.sql: unresolved variable ${table}" in message


def test_unknown_connection_and_schedule_and_timezone(tmp_path: Path) -> None:
    folder = project(
        tmp_path,
        several="""
        timezone: Mars/Olympus
        schedule:
          dayly>: 07:00:00
        +t:
          td>: q.sql
          result_connection: maac_mian
          result_settings: {data_object: segments, segment_name: s}
    """,
    )
    loaded = load_folder(folder)
    errors = "\n".join(str(e) for e in loaded.errors)
    assert "several.dig:1, setting timezone: unknown timezone 'Mars/Olympus'" in errors
    assert (
        "several.dig:2, setting schedule: unknown schedule option 'dayly>' (did you mean 'daily>'?)"
        in errors
    )
    assert (
        "several.dig:6, task +t, setting result_connection: connection 'maac_mian' is not declared in"
        in errors
    )
    assert "(did you mean 'maac_main'?)" in errors
    assert [w.name for w in loaded.workflows] == ["good"]


def test_unsupported_operator_is_reported(tmp_path: Path) -> None:
    message = single_error(project(tmp_path, shell="+t:\n  sh>: echo hi\n"))
    assert (
        "shell.dig:2, task +t, setting sh>: 'sh>': the sh> operator is not supported (supported: td>, echo>, fail>, td_ddl>, wait>, mail>, call>, if>, for_each>, for_range>, loop>)"
        in message
    )


def test_load_workflows_keeps_good_ones_or_raises_when_strict(tmp_path: Path) -> None:
    folder = project(tmp_path, broken="+t: [\n")
    defs = load_workflows(folder)
    # The broken workflow stays visible (issue 15): a job of its name carrying the error.
    # (besides the daily results-back job of good's export, line_exports.results_back)
    jobs = sorted(j.name for j in defs.jobs if not j.name.endswith("_results_back_job"))
    assert jobs == ["broken", "good"]
    assert "malformed YAML" in defs.resolve_job_def("broken").description
    assert "broken.dig" in defs.metadata["workflow_errors"].value
    with pytest.raises(WorkflowErrors, match="broken.dig"):
        load_workflows(folder, strict=True)


def test_secret_ref_maps_names_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SecretRef("maac.api-token").env == "MAAC_API_TOKEN"
    monkeypatch.setenv("exact.name", "x")
    assert SecretRef("exact.name").env == "exact.name"


def test_include_cycle_and_missing_include(tmp_path: Path) -> None:
    folder = project(tmp_path, loop="_export:\n  !include : a.yml\n+t:\n  td>: q.sql\n")
    write(folder, {"a.yml": "!include : b.yml\n", "b.yml": "!include : a.yml\n"})
    loaded = load_folder(folder)
    assert "!include cycle: loop.dig -> a.yml -> b.yml -> a.yml" in str(loaded.errors[0])
    (folder / "b.yml").unlink()
    assert "a.yml:1: !include b.yml: no such file" in str(load_folder(folder).errors[0])


def test_retry_maps_to_a_dagster_retry_policy(tmp_path: Path) -> None:
    folder = project(
        tmp_path,
        retry="""
        _retry: 2
        +a:
          td>: q.sql
          result_connection: maac_main
          result_settings: {data_object: segments, segment_name: a}
        +b:
          _retry:
            limit: 4
            interval: 10
            interval_type: exponential
          td>: q.sql
          result_connection: maac_main
          result_settings: {data_object: segments, segment_name: b}
    """,
    )
    a, b = load_folder(folder).get("retry").tasks
    assert a.retry == dg.RetryPolicy(max_retries=2)
    assert b.retry == dg.RetryPolicy(max_retries=4, delay=10, backoff=dg.Backoff.EXPONENTIAL)
