"""digdag's control operators (call>, if>, for_each>, for_range>, loop>, _parallel) with digdag's
documented examples and the expected outputs of digdag's own operator tests
(digdag-standards/src/test/resources/io/digdag/standards/operator/*), then real Dagster runs."""

from __future__ import annotations

import argparse
import io
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.maac import MaacStore
from line_exports.session import SESSION_TIME_TAG
from line_exports.workflows import cli, load_folder
from line_exports.workflows.control import ControlError, for_each, for_range, loop, to_boolean


def write(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def run(
    folder: Path, job: str, session: str = "2026-11-30T00:00:00+09:00"
) -> dg.ExecuteInProcessResult:
    defs = load_folder(folder).definitions()
    with dg.instance_for_test() as instance:
        return defs.resolve_job_def(job).execute_in_process(
            instance=instance, tags={SESSION_TIME_TAG: session}, raise_on_error=False
        )


def messages(result: dg.ExecuteInProcessResult) -> list[tuple[str, str]]:
    """(asset key, echo> message) of every materialization, in the order they happened."""
    out = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            if "message" in materialization.metadata:
                out.append(
                    (
                        materialization.asset_key.to_user_string(),
                        materialization.metadata["message"].value,
                    )
                )
    return out


# -- the operators' expansion, against digdag's own test fixtures ---------------------------


def test_for_each_matches_digdags_fixtures() -> None:
    # basic.yml / parallel_complex.yml / parse_nested_arrays.yml / parse_nested_map.yml
    assert for_each({"a": [1, 2]}) == [("+for-0=a=0=1", {"a": 1}), ("+for-0=a=1=2", {"a": 2})]
    expected = [
        ("+for-0=a=0=1&1=b=0=3", {"a": 1, "b": 3}),
        ("+for-0=a=0=1&1=b=1=4", {"a": 1, "b": 4}),
        ("+for-0=a=1=2&1=b=0=3", {"a": 2, "b": 3}),
        ("+for-0=a=1=2&1=b=1=4", {"a": 2, "b": 4}),
    ]
    assert for_each({"a": [1, 2], "b": [3, 4]}) == expected
    assert for_each({"a": "[1,2]", "b": "[3,4]"}) == expected
    assert for_each('{"a":[1,2]}') == [("+for-0=a=0=1", {"a": 1}), ("+for-0=a=1=2", {"a": 2})]
    # duplicate_values.yml, escape_keys.yml, escape_values.yml, truncate_task_names.yml
    assert [n for n, _ in for_each({"a": [1, 1]})] == ["+for-0=a=0=1", "+for-0=a=1=1"]
    assert [n for n, _ in for_each({"!?": [1]})] == ["+for-0=%21%3F=0=1"]
    values = ["!?", "^$", "%==", "|~", "[<{}>]", "#:", "/@", "+ "]
    assert [n for n, _ in for_each({"u": values})] == [
        "+for-0=u=0=%21%3F",
        "+for-0=u=1=%5E%24",
        "+for-0=u=2=%25%3D%3D",
        "+for-0=u=3=%7C%7E",
        "+for-0=u=4=%5B%3C%7B%7D%3E%5D",
        "+for-0=u=5=%23%3A",
        "+for-0=u=6=%2F%40",
        "+for-0=u=7=%2B%20",
    ]
    long = {"name" * 40: ["v1" + "v" * 300]}
    assert for_each(long)[0][0] == "+for-0=namename=0=v1vvvvvv"
    with pytest.raises(ControlError, match="Too many for_each subtasks"):
        for_each({"a": list(range(100)), "b": list(range(11))})


def test_for_range_matches_digdags_docs_and_fixtures() -> None:
    # docs/operators/for_range.md
    assert [e["range"] for _, e in for_range({"from": 10, "to": 50, "step": 10})] == [
        {"from": f, "to": f + 10, "index": i} for i, f in enumerate((10, 20, 30, 40))
    ]
    assert [n for n, _ in for_range({"from": 10, "to": 50, "step": 10})][0] == (
        "+range-from=10&to=20"
    )
    assert [e["range"] for _, e in for_range({"from": 0, "to": 10, "step": 3})] == [
        {"from": 0, "to": 3, "index": 0},
        {"from": 3, "to": 6, "index": 1},
        {"from": 6, "to": 9, "index": 2},
        {"from": 9, "to": 10, "index": 3},
    ]
    assert [e["range"] for _, e in for_range({"from": 0, "to": 10, "slices": 3})] == [
        {"from": 0, "to": 4, "index": 0},
        {"from": 4, "to": 8, "index": 1},
        {"from": 8, "to": 10, "index": 2},
    ]
    # slices.yml, step.yml, parse.yml, parallel.yml
    assert [n for n, _ in for_range({"from": 1, "to": 8, "slices": 3})] == [
        "+range-from=1&to=4",
        "+range-from=4&to=7",
        "+range-from=7&to=8",
    ]
    assert for_range({"from": 1, "to": 8, "step": 3}) == for_range(
        {"from": 1, "to": 8, "slices": 3}
    )
    assert len(for_range('{"from":0,"to":10,"slices":3}')) == 3
    assert len(for_range({"from": 0, "to": 4, "slices": 4})) == 4
    with pytest.raises(ControlError, match="Setting both step and slices"):
        for_range({"from": 0, "to": 4, "step": 1, "slices": 2})
    with pytest.raises(ControlError, match="step or slices option is required"):
        for_range({"from": 0, "to": 4})
    with pytest.raises(ControlError, match="step option must be same or greater than 1"):
        for_range({"from": 0, "to": 4, "step": 0})


def test_loop_and_if_values() -> None:
    assert loop(3) == [("+loop-0", {"i": 0}), ("+loop-1", {"i": 1}), ("+loop-2", {"i": 2})]
    assert loop("2") == loop(2) and loop(0) == []
    assert [to_boolean(v) for v in (True, "true", "false", False, 0, 1)] == [
        True,
        True,
        False,
        False,
        False,
        True,
    ]
    with pytest.raises(ControlError, match="if> needs true or false"):
        to_boolean("yes")


# -- loading: the expanded tree, digdag's order and _parallel -------------------------------

DOCS = """
timezone: UTC
_export:
  param: true
+repeat:
  loop>: 7
  _do:
    +step1:
      echo>: ${moment(session_time).add(i, 'days')} is ${i} days later than ${session_date}
    +step2:
      echo>: ${moment(session_time).add(i, 'hours')} is ${i} hours later than ${session_local_time}.
+fruits:
  for_each>:
    fruit: [apple, orange]
    verb: [eat, throw]
  _parallel:
    limit: 2
  _do:
    echo>: ${verb} ${fruit}
+ranges:
  for_range>:
    from: 10
    to: 50
    step: 10
  _do:
    echo>: processing from ${range.from} to ${range.to}.
+run_if_param_is_true:
  if>: ${param}
  _do:
    echo>: ${param} == true
+run_if_param_is_false:
  if>: ${!param}
  _do:
    echo>: never
  _else_do:
    echo>: ${param} == false
+after:
  echo>: after all
"""


def test_known_values_expand_at_load_into_assets_in_digdags_order(tmp_path: Path) -> None:
    folder = write(tmp_path / "wf", **{"docs.dig": DOCS})
    loaded = load_folder(folder)
    assert loaded.errors == []
    steps = {s.key.to_user_string(): s for s in loaded.get("docs").steps}
    assert len(steps) == 14 + 4 + 4 + 2 + 1
    deps = {k: [d.to_user_string() for d in s.deps] for k, s in steps.items()}
    assert deps["docs/repeat/loop_0/step2"] == ["docs/repeat/loop_0/step1"]
    assert deps["docs/repeat/loop_1/step1"] == ["docs/repeat/loop_0/step2"]
    # _parallel: {limit: 2}: two at a time, the second pair after the whole first one
    first = [
        "docs/fruits/for_0_fruit_0_apple_1_verb_0_eat",
        "docs/fruits/for_0_fruit_0_apple_1_verb_1_throw",
    ]
    assert deps[first[0]] == deps[first[1]] == ["docs/repeat/loop_6/step2"]
    assert deps["docs/fruits/for_0_fruit_1_orange_1_verb_0_eat"] == first
    assert deps["docs/fruits/for_0_fruit_1_orange_1_verb_1_throw"] == first
    assert len(deps["docs/ranges/range_from_10_to_20"]) == 4  # after the whole for_each group
    assert steps["docs/ranges/range_from_40_to_50"].text == "processing from 40 to 50."
    assert steps["docs/run_if_param_is_true"].text == "true == true"
    assert steps["docs/run_if_param_is_false"].text == "true == false"
    assert deps["docs/after"] == ["docs/run_if_param_is_false"]
    assert [
        steps[f"docs/fruits/for_0_fruit_{f}_verb_{v}"].text
        for f, v in (
            ("0_apple_1", "0_eat"),
            ("0_apple_1", "1_throw"),
            ("1_orange_1", "0_eat"),
            ("1_orange_1", "1_throw"),
        )
    ] == ["eat apple", "throw apple", "eat orange", "throw orange"]
    result = run(folder, "docs", "2026-11-30T00:00:00+00:00")
    assert result.success
    said = dict(messages(result))
    assert said["docs/repeat/loop_6/step1"] == (
        '"2026-12-06T00:00:00.000Z" is 6 days later than 2026-11-30'
    )
    assert said["docs/repeat/loop_6/step2"] == (
        '"2026-11-30T06:00:00.000Z" is 6 hours later than 2026-11-30 00:00:00.'
    )
    assert [m for k, m in messages(result) if k.startswith("docs/ranges/")] == [
        f"processing from {f} to {f + 10}." for f in (10, 20, 30, 40)
    ]


def test_parallel_limit_as_digdags_workflow_definition_example(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "wf",
        **{
            "prep.dig": """
            +prepare:
              _parallel:
                limit: 2
              +data1:
                echo>: 1
              +data2:
                echo>: 2
              +data3:
                echo>: 3
              +data4:
                echo>: 4
            +analyze:
              echo>: analyze
            """
        },
    )
    steps = {s.name: [d.path[-1] for d in s.deps] for s in load_folder(folder).get("prep").steps}
    assert steps == {
        "prepare.data1": [],
        "prepare.data2": [],
        "prepare.data3": ["data1", "data2"],
        "prepare.data4": ["data1", "data2"],
        "analyze": ["data1", "data2", "data3", "data4"],
    }


def test_refusals_name_file_line_task_and_reason(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "wf",
        **{
            "bad.dig": """
            +a:
              for_range>:
                from: 0
                to: 4
                step: 1
                slices: 2
              _do:
                echo>: x
            +b:
              if>: maybe
              _do:
                echo>: x
            +c:
              if>: true
            +d:
              loop>: 2
              _else_do:
                echo>: x
            +e:
              call>: ../outside.dig
            +f:
              call>: missing
            +g:
              td>:
              query: SELECT 1 AS n
              store_last_results: true
            +i:
              _parallel:
                limit: 0
              +x:
                echo>: x
            """,
            "export.sql": "SELECT 'U' AS line_uid\n",
            "connections.yaml": "connections:\n  maac_main:\n    type: maac\n",
        },
    )
    errors = "\n".join(str(e) for e in load_folder(folder).errors)
    assert "bad.dig:2, task +a, setting for_range>: Setting both step and slices" in errors
    assert "bad.dig:10, task +b, setting if>: if> needs true or false, got 'maybe'" in errors
    assert "bad.dig:14, task +c, setting if>: Both _do and _else_do are not specified." in errors
    assert "bad.dig:17, task +d, setting _else_do: '_else_do' is not an option of loop>" in errors
    assert "bad.dig:20, task +e, setting call>: call> ../outside.dig resolves outside" in errors
    assert "bad.dig:22, task +f, setting call>: call> missing.dig: no such workflow file" in errors
    assert "task +i, setting _parallel: _parallel: {limit: N} needs N >= 1, got 0" in errors


# -- call> -------------------------------------------------------------------------------------


def test_call_embeds_the_called_workflow_with_digdags_scoping(tmp_path: Path) -> None:
    """docs/operators/call.md: a sibling .dig and one in a subfolder (its files relative to it);
    its _export under the caller's, its timezone unused; a cycle is refused."""
    folder = write(
        tmp_path / "wf",
        **{
            "workflow1.dig": """
            timezone: Asia/Tokyo
            _export:
              who: workflow1
            +step1:
              call>: another_workflow.dig
            +step2:
              call>: common/shared_workflow
              _export:
                who: step2
            """,
            "another_workflow.dig": """
            timezone: UTC
            _export:
              level: another
            +another:
              echo>: ${level} ${task_name} ${session_time}
            """,
            "common/shared_workflow.dig": """
            _export:
              level: shared
            +count:
              td>: ../queries/data.sql
              store_last_results: true
            +say:
              echo>: ${who} ${level} ${td.last_results.n}
            """,
            "queries/data.sql": "SELECT 7 AS n\n",
            "a.dig": "+x:\n  call>: b.dig\n",
            "b.dig": "+y:\n  call>: a.dig\n",
        },
    )
    loaded = load_folder(folder)
    errors = "\n".join(str(e) for e in loaded.errors)
    # each task named as digdag does (a called file's tasks under the call's ^sub), with file:line
    assert (
        "b.dig:2, task +a+x^sub+y, setting call>: call> cycle: "
        "+a+x (a.dig:2) calls b.dig; +a+x^sub+y (b.dig:2) calls a.dig"
    ) in errors
    assert "call> cycle: +b+y (b.dig:2) calls a.dig; +b+y^sub+x (a.dig:2) calls b.dig" in errors
    result = run(folder, "workflow1")
    assert result.success
    assert messages(result) == [
        ("workflow1/step1/another", "another +workflow1+step1+another 2026-11-30T00:00:00+09:00"),
        ("workflow1/step2/say", "step2 shared 7"),
    ]


# -- real runs: values read at run time ----------------------------------------------------


RUNTIME = """
timezone: Asia/Tokyo
+count:
  td>:
  query: SELECT 3 AS n, '["gold","silver"]' AS tiers
  store_last_results: true
+branch:
  if>: ${td.last_results.n > 2}
  _do:
    +big:
      echo>: ${td.last_results.n} is big on ${session_date}
  _else_do:
    echo>: small
+each:
  for_each>:
    tier: ${td.last_results.tiers}
    day: [mon, tue]
  _do:
    +stage:
      td>:
      query: SELECT '${tier}' AS tier, '${day}' AS day
      create_table: stage_${tier}_${day}
    +say:
      echo>: ${tier} ${day}
+repeat:
  loop>: ${td.last_results.n - 1}
  _do:
    echo>: i=${i}
+slices:
  for_range>:
    from: 0
    to: ${td.last_results.n * 3}
    slices: 2
  _do:
    echo>: ${range.index}:${range.from}-${range.to}
+stop:
  if>: ${td.last_results.n == 3}
  _do:
    fail>: n is ${td.last_results.n}
+never:
  echo>: not reached
"""


def test_values_read_at_run_time_expand_when_the_run_gets_there(tmp_path: Path) -> None:
    folder = write(tmp_path / "wf", **{"runtime.dig": RUNTIME})
    loaded = load_folder(folder)
    assert loaded.errors == []
    workflow = loaded.get("runtime")
    assert [c.key.path[-1] for c in workflow.controls] == [
        "branch",
        "each",
        "repeat",
        "slices",
        "stop",
    ]
    result = run(folder, "runtime")
    assert not result.success
    assert messages(result) == [
        ("runtime/branch/big", "3 is big on 2026-11-30"),
        ("runtime/each/for_0_tier_0_gold_1_day_0_mon/say", "gold mon"),
        ("runtime/each/for_0_tier_0_gold_1_day_1_tue/say", "gold tue"),
        ("runtime/each/for_0_tier_1_silver_1_day_0_mon/say", "silver mon"),
        ("runtime/each/for_0_tier_1_silver_1_day_1_tue/say", "silver tue"),
        ("runtime/repeat/loop_0", "i=0"),
        ("runtime/repeat/loop_1", "i=1"),
        ("runtime/slices/range_from_0_to_5", "0:0-5"),
        ("runtime/slices/range_from_5_to_9", "1:5-9"),
    ]
    tables = [
        e.event_specific_data.materialization.metadata["table"].value
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        and "table" in e.event_specific_data.materialization.metadata
    ]
    assert tables == ["stage_gold_mon", "stage_gold_tue", "stage_silver_mon", "stage_silver_tue"]
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "runtime__stop"
    assert "+runtime+stop: fail>: n is 3" in str(failure.event_specific_data.error)
    started = {
        e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START
    }
    assert "runtime__never" not in started


# -- exports generated by control operators, to the sandbox, and the CLI's task tree ------------


def test_exports_per_for_each_value_and_in_a_called_workflow_reach_the_sandbox(
    tmp_path: Path, sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    folder = write(
        tmp_path / "wf",
        **{
            "connections.yaml": "connections:\n  maac_main:\n    type: maac\n",
            "tiers.dig": """
            timezone: Asia/Tokyo
            +segments:
              for_each>:
                tier: [gold, silver]
              _parallel: true
              _do:
                +export:
                  td>: queries/tier.sql
                  result_connection: maac_main
                  result_settings:
                    data_object: segments
                    segment_name: ${tier}_${session_date_compact}
            +shared:
              call>: common/everyone.dig
            """,
            "queries/tier.sql": (
                "SELECT line_uid FROM segment_users ORDER BY line_uid "
                "LIMIT ${tier == 'gold' ? 10 : 20}\n"
            ),
            "common/everyone.dig": """
            +export:
              td>: ../queries/all.sql
              result_connection: maac_main
              result_settings:
                data_object: segments
                segment_name: everyone_${session_date_compact}
            """,
            "queries/all.sql": "SELECT line_uid FROM segment_users ORDER BY line_uid LIMIT 30\n",
            "later.dig": """
            timezone: Asia/Tokyo
            +count:
              td>:
              query: SELECT 2 AS n, '["vip","new"]' AS tiers
              store_last_results: true
            +maybe:
              if>: ${td.last_results.n > 0}
              _do:
                +export:
                  td>: queries/all.sql
                  result_connection: maac_main
                  result_settings:
                    data_object: segments
                    segment_name: when_${td.last_results.n}_${session_date_compact}
            +each:
              for_each>:
                tier: ${td.last_results.tiers}
              _do:
                td>: queries/tier.sql
                result_connection: maac_main
                result_settings:
                  data_object: segments
                  segment_name: ${tier}_later
            """,
        },
    )
    loaded = load_folder(folder)
    assert loaded.errors == []
    tasks = {t.key.to_user_string(): t for t in loaded.get("tiers").tasks}
    assert list(tasks) == [
        "tiers/segments/for_0_tier_0_gold/export",
        "tiers/segments/for_0_tier_1_silver/export",
        "tiers/shared/export",
    ]
    assert tasks["tiers/segments/for_0_tier_1_silver/export"].deps == []  # _parallel: true
    assert len(tasks["tiers/shared/export"].deps) == 2
    result = run(folder, "tiers")
    assert result.success
    store = sandbox_server.sandbox.store("maac", MaacStore)
    assert sorted((s.name, len(s.uids)) for s in store.segments.values()) == [
        ("everyone_20261130", 30),
        ("gold_20261130", 10),
        ("silver_20261130", 20),
    ]

    later = run(folder, "later")
    assert later.success
    runs = {
        e.event_specific_data.materialization.asset_key.to_user_string(): (
            e.event_specific_data.materialization.metadata
        )
        for e in later.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    }
    assert runs["later/maybe/export"]["rows_read"].value == 30
    assert runs["later/maybe/export"]["checks"].value["reject_rate"]["passed"] is True
    assert runs["later/each/for_0_tier_0_vip"]["rows_accepted"].value == 20
    assert runs["later/maybe"]["tasks_run"].value == ["later/maybe/export"]
    assert sorted((s.name, len(s.uids)) for s in store.segments.values()) == [
        ("everyone_20261130", 30),
        ("gold_20261130", 10),
        ("new_later", 20),
        ("silver_20261130", 20),
        ("vip_later", 20),
        ("when_2_20261130", 30),
    ]

    shown = io.StringIO()
    assert cli.validate(argparse.Namespace(workflows=str(folder), connections=None), shown) == 0
    assert (
        "tiers.dig: tasks in order\n"
        "  +tiers+segments+for-0=tier=0=gold+export    td> tier.sql -> maac segment 'gold_${session_date_compact}'\n"
        in shown.getvalue()
    )


PARALLEL = """
+count:
  td>:
  query: SELECT '[1,2,3]' AS xs
  store_last_results: true
+each:
  for_each>:
    x: ${td.last_results.xs}
  _parallel: PARALLEL
  _do:
    +check:
      if>: ${x == 2}
      _do:
        fail>: x is ${x}
    +say:
      echo>: x=${x}
"""


@pytest.mark.parametrize(
    ("parallel", "said"),
    [("true", ["x=1", "x=3"]), ("{limit: 1}", ["x=1"]), ("false", ["x=1"])],
)
def test_run_time_parallel_goes_on_after_a_failure_as_digdag(
    tmp_path: Path, parallel: str, said: list[str]
) -> None:
    """_parallel: true: the other children still run and the group fails at the end;
    {limit: N}: the chunks after a failed one do not start; serial: the first failure stops."""
    folder = write(tmp_path / "wf", **{"par.dig": PARALLEL.replace("PARALLEL", parallel)})
    result = run(folder, "par")
    assert not result.success
    assert [m for _, m in messages(result)] == said
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "+par+each+for-0=x=1=2+check: fail>: x is 2" in str(failure.event_specific_data.error)
