"""Results back for ``.dig`` workflows: an export task gets the checks, daily job and sensor of
:mod:`line_exports.results_back` with no change to the file (settings in ``result_settings``).

One real workflow folder, a real Dagster instance, MAAC over HTTP to an in-process sandbox on a
free port; the sensor is evaluated a day later and the run it requests is executed.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from line_exports.results_back import MATCH_RATE_CHECK, RESULTS_CHECK, VOLUME_CHECK
from line_exports.sandbox import SandboxServer
from line_exports.workflows import load_folder
from line_exports_tests.test_workflows_run import make_folder

DAY = 86_400

SENT = """
+members:
  td>: members.sql
  result_connection: maac_main
  result_settings:
    data_object: members
    import_key: line_uid
    tags: wf
    min_match_rate: 0.99
"""
OFF = """
+seg:
  td>: segment.sql
  result_connection: maac_main
  result_settings: {data_object: segments, segment_name: s, results_back: false}
"""
BAD = """
+seg:
  td>: segment.sql
  result_connection: maac_main
  result_settings:
    data_object: segments
    segment_name: s
    results_back_days: 31
"""


def test_workflow_export_gets_results_back_and_its_daily_pull(
    tmp_path: Path, sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    folder = make_folder(tmp_path, **{"sent.dig": SENT, "off.dig": OFF, "bad.dig": BAD})
    loaded = load_folder(folder)
    [error] = loaded.errors  # bad.dig: the setting, its line and the rule
    assert error.setting == "result_settings.results_back_days" and error.line == 7
    assert "between 0 and 30" in str(error) and "bad.dig" in str(error)

    offset = [0.0]
    defs = loaded.definitions(clock=lambda: time.time() + offset[0])
    key = dg.AssetKey(["sent", "members"])
    ours = {RESULTS_CHECK, MATCH_RATE_CHECK, VOLUME_CHECK}
    graph = defs.resolve_asset_graph()
    assert ours <= {c.name for c in graph.asset_check_keys if c.asset_key == key}
    assert not ours & {c.name for c in graph.asset_check_keys if c.asset_key.path[0] == "off"}
    sensor = defs.resolve_sensor_def("sent__members_results_back")
    assert sensor.job_name == "sent__members_results_back_job"
    with pytest.raises(dg.DagsterInvariantViolationError):
        defs.resolve_sensor_def("off__seg_results_back")

    with dg.instance_for_test() as instance:
        sent = defs.resolve_job_def("sent").execute_in_process(instance=instance)
        assert sent.success
        evaluated = {
            e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
            for e in sent.all_events
            if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        }
        rows = sent.asset_materializations_for_node("sent__members")[0].metadata
        read, valid = rows["rows_read"].value, rows["rows_valid"].value
        assert evaluated[RESULTS_CHECK].passed and evaluated[VOLUME_CHECK].passed
        # match_rate is (created + updated) / imported, as MAAC reports it.
        [seen] = instance.fetch_observations(key, limit=10).records
        observed = {k: v.value for k, v in seen.asset_observation.metadata.items()}  # type: ignore[union-attr]
        assert observed["import_total"] == valid and 0 < valid <= read
        rate = (observed["import_created"] + observed["import_updated"]) / observed["import_total"]
        assert evaluated[MATCH_RATE_CHECK].passed is (rate >= 0.99)

        context = dg.build_sensor_context(instance=instance, definitions=defs)
        assert "24 h after the send" in str(sensor(context).skip_message)  # type: ignore[union-attr]
        offset[0] = DAY + 60
        request = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert (
            isinstance(request, dg.RunRequest) and request.tags["line_exports/results_day"] == "1"
        )
        pulled = defs.resolve_job_def(sensor.job_name).execute_in_process(
            instance=instance, tags=request.tags
        )
        assert pulled.success
        assert len(instance.fetch_observations(key, limit=10).records) == 2
    assert sandbox_server.sandbox.count("GET", "/openapi/v1/member/import/") >= 2


def _members(name: str) -> str:
    return f"""
+{name}:
  td>: members.sql
  result_connection: maac_main
  result_settings: {{data_object: members, import_key: line_uid, tags: t}}
"""


def test_results_back_names_follow_the_asset_key_and_a_clash_is_a_load_error(
    tmp_path: Path,
) -> None:
    # a_b/c and a/b_c: distinct assets, so distinct results back (once both were a_b_c_...)
    files = {"a.dig": _members("b_c") + _members("b__c"), "a_b.dig": _members("c")}
    files["a__b.dig"] = _members("c")  # a__b/c: op name a__b__c, as a/b__c's: refused
    loaded = load_folder(make_folder(tmp_path, **files))
    [error] = loaded.errors
    assert error.file.name == "a__b.dig" and error.line == 1 and error.task == "c"
    assert "'a__b__c' is already used by a.dig:" in str(error)
    defs = loaded.definitions()
    defs.get_repository_def()  # Dagster's own duplicate-name check passes
    graph = defs.resolve_asset_graph()
    for key in (["a", "b_c"], ["a_b", "c"], ["a", "b__c"]):
        name = "__".join(key)
        sensor = defs.resolve_sensor_def(f"{name}_results_back")
        assert sensor.job_name == f"{name}_results_back_job"
        checks = {c.name for c in graph.asset_check_keys if c.asset_key == dg.AssetKey(key)}
        assert RESULTS_CHECK in checks
