"""MAAC end to end: DuckDB rows -> export asset -> real HTTP -> the MAAC sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest
import requests

from line_exports import MaacResource, SqlSource, build_export, sample_data
from line_exports.sandbox import Fault, Sandbox, SandboxServer
from line_exports.sandbox.maac import store_of

FAST_RETRY = {"initial_retry_wait": 1, "max_retry": 3, "connection_timeout": 30}


def uid(i: int) -> str:
    return f"U{i:032x}"


def write_table(db: Path, name: str, frame: pd.DataFrame) -> None:
    with duckdb.connect(str(db)) as con:
        con.execute(f"create or replace table {name} as select * from frame")


def run(
    server: SandboxServer,
    db: Path,
    settings: dict[str, Any],
    query: str = "select * from members",
    name: str = "maac_export",
    **kwargs: Any,
) -> dg.ExecuteInProcessResult:
    asset = build_export(name, destination="maac", query=query, settings={**FAST_RETRY, **settings})
    return dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "maac": MaacResource(base_url=server.url, poll_seconds=0.05),
        },
        raise_on_error=False,
        **kwargs,
    )


def metadata(result: dg.ExecuteInProcessResult, name: str = "maac_export") -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(name)
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def members_frame(n: int, start: int = 0) -> pd.DataFrame:
    idx = range(start, start + n)
    return pd.DataFrame(
        {
            "line_uid": [uid(i) for i in idx],
            "display_name": [f"member {i}" for i in idx],
            "email": [f"m{i}@example.jp" for i in idx],
            "mobile": [
                f"+81 90-{1000 + i // 10_000:04d}-{i % 10_000:04d}" for i in idx
            ],  # JP mobiles
            "customer_id": [f"C{i}" for i in idx],
            "gender": ["male" if i % 2 else "Female" for i in idx],
            "birthday": pd.to_datetime(["1990-01-02"] * n).date,
            "tags": ["vip, newsletter" if i % 2 else "" for i in idx],
        }
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "crm.duckdb"


def test_members_by_line_uid_with_global_and_row_tags(
    sandbox_server: SandboxServer, db: Path
) -> None:
    write_table(db, "members", members_frame(6))
    result = run(
        sandbox_server,
        db,
        {"data_object": "members", "import_key": "line_uid", "tags": "spring, campaign"},
    )
    assert result.success
    meta = metadata(result)
    assert (meta["rows_read"], meta["rows_valid"], meta["rows_sent"], meta["rows_accepted"]) == (
        6,
        6,
        6,
        6,
    )
    assert meta["members_created"] == 6 and len(meta["api_job_ids"]) == 1
    store = store_of(sandbox_server.sandbox)
    member = store.members[store.by_key["line_uid"][uid(1)]]
    assert member["line_display_name"] == "member 1"
    assert member["mobile"] == "+819010000001"  # separators stripped for E.164
    assert member["gender"] == "male" and member["birthday"] == "1990-01-02"
    assert member["tags"] == {"spring", "campaign", "vip", "newsletter"}
    assert store.members[store.by_key["line_uid"][uid(0)]]["tags"] == {"spring", "campaign"}
    assert store.members[store.by_key["line_uid"][uid(0)]]["gender"] == "female"


@pytest.mark.parametrize("key", ["customer_id", "email", "mobile"])
def test_members_updated_by_each_other_import_key(
    sandbox_server: SandboxServer, db: Path, key: str
) -> None:
    write_table(db, "members", members_frame(4))
    assert run(
        sandbox_server, db, {"data_object": "members", "import_key": "line_uid", "tags": "first"}
    ).success
    renamed = (
        members_frame(4)
        .drop(columns=["line_uid"])
        .assign(display_name=lambda f: f["display_name"] + " v2")
    )
    write_table(db, "members", renamed)
    result = run(
        sandbox_server, db, {"data_object": "members", "import_key": key, "tags": "second"}
    )
    assert result.success
    meta = metadata(result)
    assert (meta["members_updated"], meta["members_created"], meta["members_mismatched"]) == (
        4,
        0,
        0,
    )
    store = store_of(sandbox_server.sandbox)
    member = store.members[store.by_key["line_uid"][uid(2)]]
    assert member["line_display_name"] == "member 2 v2"
    assert {"first", "second"} <= member["tags"]


def test_missing_key_column_fails_with_a_clear_message(
    sandbox_server: SandboxServer, db: Path
) -> None:
    write_table(db, "members", members_frame(2).drop(columns=["customer_id"]))
    result = run(
        sandbox_server, db, {"data_object": "members", "import_key": "customer_id", "tags": "t"}
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "no column 'customer_id'" in str(failure) and "import_key=customer_id" in str(failure)
    assert sandbox_server.sandbox.count("POST") == 0


def bad_rows() -> pd.DataFrame:
    frame = members_frame(10)
    frame.loc[2, "line_uid"] = "U12"
    frame.loc[5, "birthday"] = None
    frame["birthday"] = frame["birthday"].astype(object)
    frame.loc[5, "birthday"] = "1985/04/06"
    frame.loc[7, "gender"] = "unknown"
    return frame


def test_invalid_rows_are_skipped_and_reported_with_reasons(
    sandbox_server: SandboxServer, db: Path
) -> None:
    write_table(db, "members", bad_rows())
    result = run(
        sandbox_server, db, {"data_object": "members", "import_key": "line_uid", "tags": "t"}
    )
    assert result.success
    meta = metadata(result)
    assert (
        meta["rows_read"],
        meta["rows_valid"],
        meta["rows_rejected"],
        meta["rows_accepted"],
    ) == (10, 7, 3, 7)
    assert meta["rejects_by_rule"] == {
        "birthday: iso_date": 1,
        "gender: allowed": 1,
        "line_uid: pattern": 1,
    }
    rejects = pd.read_csv(meta["rejects_file"])
    assert sorted(zip(rejects["_row_number"], rejects["column"], strict=True)) == [
        (3, "line_uid"),
        (6, "birthday"),
        (8, "gender"),
    ]
    assert "| 3 | line_uid | pattern |" in meta["rejects_preview"]
    assert len(store_of(sandbox_server.sandbox).members) == 7
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed  # 30% rejected is over the 5% threshold


def test_invalid_rows_fail_the_run_before_anything_is_sent(
    sandbox_server: SandboxServer, db: Path, line_exports_home: Path
) -> None:
    write_table(db, "members", bad_rows())
    settings = {
        "data_object": "members",
        "import_key": "line_uid",
        "tags": "t",
        "skip_invalid_records": False,
    }
    result = run(sandbox_server, db, settings)
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error.message
    assert (
        "3 of 10 rows are invalid and skip_invalid_records is false, so nothing was sent" in error
    )
    assert "row 3, column line_uid" in error
    assert sandbox_server.sandbox.count() == 0
    # The spool of valid rows is removed; the rejects file stays for the user.
    assert not list(line_exports_home.glob("runs/*/*/valid.parquet"))
    assert len(list(line_exports_home.glob("runs/*/*/rejects.csv"))) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(path="/openapi/v1/member/import/", method="POST", status=429, retry_after=1, times=1),
        Fault(path="/openapi/v1/member/import/", method="POST", status=500, times=1),
        Fault(path="/openapi/v1/member/import/", method="POST", status=503, times=1),
        Fault(path="/openapi/v1/member/import/", method="POST", drop=True, times=1),
    ],
    ids=["429", "500", "503", "dropped"],
)
def test_transient_failures_are_retried(
    sandbox_server: SandboxServer, db: Path, fault: Fault
) -> None:
    sandbox_server.sandbox.add_fault(fault)
    write_table(db, "members", members_frame(3))
    result = run(
        sandbox_server, db, {"data_object": "members", "import_key": "line_uid", "tags": "t"}
    )
    assert result.success
    meta = metadata(result)
    assert meta["retries"] == 1 and meta["rows_accepted"] == 3
    assert sandbox_server.sandbox.count("POST", "/openapi/v1/member/import/") == 2


def test_400_is_not_retried(sandbox_server: SandboxServer, db: Path) -> None:
    sandbox_server.sandbox.add_fault(
        Fault(
            path="/openapi/v1/member/import/",
            method="POST",
            status=400,
            body="bad request",
            times=-1,
        )
    )
    write_table(db, "members", members_frame(3))
    result = run(
        sandbox_server, db, {"data_object": "members", "import_key": "line_uid", "tags": "t"}
    )
    assert not result.success
    assert sandbox_server.sandbox.count("POST", "/openapi/v1/member/import/") == 1
    assert "answered 400" in result.get_step_failure_events()[0].step_failure_data.error.message


def test_bad_token_is_401_and_never_shown(
    sandbox_server: SandboxServer, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAC_TEST_TOKEN", "tok-not-valid-0123456789")
    write_table(db, "members", members_frame(1))
    asset = build_export(
        "maac_export",
        destination="maac",
        query="select * from members",
        settings={"data_object": "members", "import_key": "line_uid", "tags": "t"},
    )
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "maac": MaacResource(
                api_token=dg.EnvVar("MAAC_TEST_TOKEN"), base_url=sandbox_server.url
            ),
        },
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    logs = json.dumps([str(e) for e in instance.all_logs(result.run_id)])
    assert "answered 401" in logs
    assert "tok-not-valid-0123456789" not in logs
    assert "tok-not-valid-0123456789" not in json.dumps(
        instance.get_run_by_id(result.run_id).run_config
    )


def test_batches_of_10000_members(sandbox_server: SandboxServer, db: Path) -> None:
    write_table(
        db,
        "members",
        sample_data.members(25_000).assign(
            line_uid=[uid(i) for i in range(25_000)],
            gender="male",
            birthday="1990-01-01",
            email=[f"e{i}@x.jp" for i in range(25_000)],
        ),
    )
    result = run(
        sandbox_server, db, {"data_object": "members", "import_key": "line_uid", "tags": "bulk"}
    )
    assert result.success
    sizes = [t.result["total_num"] for t in store_of(sandbox_server.sandbox).tasks.values()]
    assert sizes == [10_000, 10_000, 5_000]
    assert metadata(result)["rows_accepted"] == 25_000


def test_import_bodies_stay_under_10_mb(sandbox_server: SandboxServer, db: Path) -> None:
    frame = members_frame(10_000)
    frame["tags"] = [
        ",".join(f"interest_{i}_{j:03d}" for j in range(60)) for i in range(10_000)
    ]  # ~1.3 KB a row
    write_table(db, "members", frame)
    result = run(
        sandbox_server, db, {"data_object": "members", "import_key": "line_uid", "tags": "big"}
    )
    assert result.success
    tasks = list(store_of(sandbox_server.sandbox).tasks.values())
    assert len(tasks) == 2 and sum(t.result["total_num"] for t in tasks) == 10_000
    assert sandbox_server.sandbox.count("POST", status=413) == 0
    assert all(
        r.body_bytes <= 10 * 1024 * 1024
        for r in sandbox_server.sandbox.requests
        if r.method == "POST"
    )


def test_repeated_key_is_sent_once_and_reported_as_duplicate(
    sandbox_server: SandboxServer, db: Path
) -> None:
    frame = members_frame(3).assign(line_uid=uid(9), display_name=["first", "second", "third"])
    write_table(db, "members", frame)
    result = run(
        sandbox_server, db, {"data_object": "members", "import_key": "line_uid", "tags": "t"}
    )
    assert result.success
    store = store_of(sandbox_server.sandbox)
    assert len(store.tasks) == 1 and all(t.result["success"] for t in store.tasks.values())
    assert store.members[store.by_key["line_uid"][uid(9)]]["line_display_name"] == "first"
    meta = metadata(result)
    assert meta["rows_duplicate"] == 2 and meta["rows_rejected"] == 2
    assert meta["rejects_by_rule"] == {"line_uid: duplicate": 2}
    assert (
        meta["rows_read"]
        == meta["rows_rejected"]
        + meta["rows_refused_by_api"]
        + meta["rows_unsent"]
        + meta["rows_accepted"]
    )


@pytest.mark.parametrize(
    ("key", "values", "region", "sent"),
    [
        ("mobile", ["0912345678", "+886912345678", "0912-345-678"], "TW", "+886912345678"),
        ("mobile", ["090-1234-5678", "+81 90 1234 5678", "09012345678"], "JP", "+819012345678"),
        ("mobile", ["081-234-5678", "+66812345678", "0812345678"], "TH", "+66812345678"),
        (
            "email",
            ["Ann@Example.com", " ann@example.com", "ANN@EXAMPLE.COM"],
            "TW",
            "ann@example.com",
        ),
    ],
)
def test_keys_are_normalized_then_deduplicated_in_one_import(
    sandbox_server: SandboxServer, db: Path, key: str, values: list[str], region: str, sent: str
) -> None:
    """MAAC fails an import that holds a key twice: 0912345678 and +886912345678 are one member."""
    frame = members_frame(3).assign(**{key: values})
    write_table(db, "members", frame)
    settings = {"data_object": "members", "import_key": key, "tags": "t", "default_region": region}
    result = run(sandbox_server, db, settings)
    assert result.success, result.all_events
    store = store_of(sandbox_server.sandbox)
    (task,) = store.tasks.values()
    assert task.result["success"] and task.result["total_num"] == 1
    assert list(store.by_key[key]) == [sent]
    meta = metadata(result)
    assert meta["rows_duplicate"] == 2 and meta["rows_accepted"] == 1
    rejects = pd.read_csv(meta["rejects_file"])
    assert rejects["rule"].tolist() == ["duplicate", "duplicate"]
    assert rejects["message"].str.contains("repeats row 1").all()


def test_rerun_of_the_same_tick_resumes_from_the_ledger(
    sandbox_server: SandboxServer, db: Path
) -> None:
    write_table(db, "members", members_frame(30))
    tick = {"dagster/scheduled_execution_time": "2026-11-01T00:00:00+00:00"}
    settings = {"data_object": "members", "import_key": "line_uid", "tags": "t", "batch_size": 10}
    first = run(sandbox_server, db, settings, tags=tick)
    second = run(sandbox_server, db, settings, tags=tick)
    assert first.success and second.success
    assert metadata(first)["requests"] > 0 and metadata(second)["rows_resumed"] == 30
    assert metadata(second)["requests"] == 0
    assert len(store_of(sandbox_server.sandbox).tasks) == 3
    other_tick = run(
        sandbox_server,
        db,
        settings,
        tags={"dagster/scheduled_execution_time": "2026-11-02T00:00:00+00:00"},
    )
    assert (
        metadata(other_tick)["rows_resumed"] == 0
        and len(store_of(sandbox_server.sandbox).tasks) == 6
    )


def segment_uids(db: Path, start: int, n: int) -> None:
    write_table(db, "uids", pd.DataFrame({"line_uid": [uid(i) for i in range(start, start + n)]}))


def test_segment_create_then_update_replaces_members(
    sandbox_server: SandboxServer, db: Path
) -> None:
    settings = {
        "data_object": "segments",
        "segment_name": "vip",
        "segment_description": "VIPs",
        "update_segment": True,
    }
    segment_uids(db, 0, 50)
    first = run(sandbox_server, db, settings, query="select line_uid from uids")
    segment_uids(db, 100, 20)
    second = run(sandbox_server, db, settings, query="select line_uid from uids")
    assert first.success and second.success
    assert (
        metadata(first)["segment_action"] == "created"
        and metadata(second)["segment_action"] == "replaced"
    )
    store = store_of(sandbox_server.sandbox)
    (segment,) = store.segments.values()
    assert segment.uids == [uid(i) for i in range(100, 120)] and segment.description == "VIPs"
    assert metadata(second)["segment_member_count"] == 20


def test_segment_without_update_creates_another(sandbox_server: SandboxServer, db: Path) -> None:
    settings = {"data_object": "segments", "segment_name": "weekly"}
    segment_uids(db, 0, 5)
    assert run(sandbox_server, db, settings, query="select line_uid from uids").success
    assert run(sandbox_server, db, settings, query="select line_uid from uids").success
    assert [s.name for s in store_of(sandbox_server.sandbox).segments.values()] == [
        "weekly",
        "weekly",
    ]


def test_update_matches_the_exact_name_only(sandbox_server: SandboxServer, db: Path) -> None:
    segment_uids(db, 0, 5)
    assert run(
        sandbox_server,
        db,
        {"data_object": "segments", "segment_name": "vip customers"},
        query="select line_uid from uids",
    ).success
    result = run(
        sandbox_server,
        db,
        {"data_object": "segments", "segment_name": "vip", "update_segment": True},
        query="select line_uid from uids",
    )
    assert metadata(result)["segment_action"] == "created"
    assert sorted(s.name for s in store_of(sandbox_server.sandbox).segments.values()) == [
        "vip",
        "vip customers",
    ]


def test_segment_over_300000_uids_fails_before_sending(
    sandbox_server: SandboxServer, db: Path
) -> None:
    with duckdb.connect(str(db)) as con:
        con.execute(
            "create table uids as select 'U' || lpad(printf('%x', range), 32, '0') as line_uid from range(300001)"
        )
    result = run(
        sandbox_server,
        db,
        {"data_object": "segments", "segment_name": "too big"},
        query="select line_uid from uids",
    )
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "300,001" in error and "at most 300,000" in error and "Nothing was sent" in error
    assert sandbox_server.sandbox.count() == 0


def test_settings_follow_the_reference(db: Path) -> None:
    with pytest.raises(Exception, match="import_key is required"):
        build_export(
            "x",
            destination="maac",
            query="select 1",
            settings={"data_object": "members", "tags": "t"},
        )
    with pytest.raises(Exception, match="segment_name is required"):
        build_export(
            "x", destination="maac", query="select 1", settings={"data_object": "segments"}
        )
    with pytest.raises(Exception, match=r"max_retry must be between 1 and 10 \(got 11\)"):
        build_export(
            "x",
            destination="maac",
            query="select 1",
            settings={"data_object": "segments", "segment_name": "s", "max_retry": 11},
        )
    with pytest.raises(ValueError, match="api_token is a credential"):
        build_export(
            "x",
            destination="maac",
            query="select 1",
            settings={"data_object": "segments", "segment_name": "s", "api_token": "abc"},
        )


def test_upstream_asset_dataframe_is_exported(sandbox_server: SandboxServer) -> None:
    @dg.asset
    def crm_members() -> pd.DataFrame:
        return members_frame(5)

    export = build_export(
        "maac_export",
        destination="maac",
        upstream="crm_members",
        settings={**FAST_RETRY, "data_object": "members", "import_key": "email", "tags": "crm"},
    )
    result = dg.materialize(
        [crm_members, export], resources={"maac": MaacResource(base_url=sandbox_server.url)}
    )
    assert result.success
    assert metadata(result)["rows_accepted"] == 5


def test_sandbox_enforces_the_real_import_limits(tmp_path: Path) -> None:
    """The sandbox is as strict as MAAC: one import at a time, 15 a minute, 10,000 members."""
    with SandboxServer(Sandbox(job_seconds=0.5)) as server:
        headers = {"Authorization": "Bearer sandbox-maac-token"}
        url = f"{server.url}/openapi/v1/member/import/"
        body = {"import_key": "line_uid", "data": [{"line_uid": uid(1)}]}
        assert requests.post(url, json=body, headers=headers).status_code == 200
        assert requests.post(url, json=body, headers=headers).status_code == 429  # one at a time
        too_many = {"import_key": "line_uid", "data": [{"line_uid": uid(i)} for i in range(10_001)]}
        server.sandbox.job_seconds = 0
        store_of(server.sandbox).tasks.clear()
        assert requests.post(url, json=too_many, headers=headers).status_code == 400
        statuses = [requests.post(url, json=body, headers=headers).status_code for _ in range(15)]
        assert statuses.count(200) == 13 and statuses[-1] == 429  # 15 a minute, 2 used above
        assert (
            requests.post(url, json=body, headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )


def test_hash_partitioned_export_sends_each_bucket_once(
    sandbox_server: SandboxServer, db: Path
) -> None:
    """A table too large for one run: ${partition_key} picks a hash bucket per run."""
    write_table(db, "members", members_frame(200))
    buckets = dg.StaticPartitionsDefinition([str(i) for i in range(4)])
    asset = build_export(
        "maac_export",
        destination="maac",
        query="select * from members where hash(line_uid) % 4 = ${partition_key}",
        settings={**FAST_RETRY, "data_object": "members", "import_key": "line_uid", "tags": "t"},
        partitions_def=buckets,
    )
    resources = {
        "sql_source": SqlSource(url=f"duckdb:///{db}"),
        "maac": MaacResource(base_url=sandbox_server.url),
    }
    instance = dg.DagsterInstance.ephemeral()
    read = []
    tick = {"dagster/scheduled_execution_time": "2026-11-01T00:00:00+00:00"}
    for key in buckets.get_partition_keys():
        result = dg.materialize(
            [asset], resources=resources, partition_key=key, instance=instance, tags=tick
        )
        read.append(metadata(result)["rows_read"])
    assert sum(read) == 200 and all(0 < n < 200 for n in read)
    assert len(store_of(sandbox_server.sandbox).members) == 200
    # A re-run of one bucket for the same tick resumes from its own ledger scope.
    again = dg.materialize(
        [asset], resources=resources, partition_key="2", instance=instance, tags=tick
    )
    assert metadata(again)["rows_resumed"] == read[2] and metadata(again)["requests"] == 0


def test_daily_partitions_fill_the_partition_key(sandbox_server: SandboxServer, db: Path) -> None:
    frame = members_frame(6).assign(day=["2026-11-01"] * 3 + ["2026-11-02"] * 3)
    write_table(db, "members", frame)
    asset = build_export(
        "maac_export",
        destination="maac",
        query="select * exclude (day) from members where day = '${partition_key}'",
        settings={**FAST_RETRY, "data_object": "members", "import_key": "line_uid", "tags": "t"},
        partitions_def=dg.DailyPartitionsDefinition(start_date="2026-11-01", end_date="2026-11-03"),
    )
    resources = {
        "sql_source": SqlSource(url=f"duckdb:///{db}"),
        "maac": MaacResource(base_url=sandbox_server.url),
    }
    result = dg.materialize([asset], resources=resources, partition_key="2026-11-02")
    assert metadata(result)["rows_accepted"] == 3
    assert sorted(store_of(sandbox_server.sandbox).by_key["line_uid"]) == [
        uid(i) for i in (3, 4, 5)
    ]


def test_sandbox_fails_an_import_holding_one_mobile_twice(sandbox_server: SandboxServer) -> None:
    """As MAAC: a local 09XX mobile is the channel region's E.164 number, so these two are one
    key and the import fails with duplicate_error."""
    headers = {"Authorization": "Bearer sandbox-maac-token"}
    url = f"{sandbox_server.url}/openapi/v1/member/import/"
    body = {
        "import_key": "mobile",
        "data": [
            {"mobile": "0912345678", "line_uid": uid(1)},
            {"mobile": "+886912345678", "line_uid": uid(2)},
        ],
    }
    answer = requests.post(url, json=body, headers=headers)
    assert answer.status_code == 200
    (task,) = store_of(sandbox_server.sandbox).tasks.values()
    assert task.result["success"] is False and task.result["duplicate_error"] == 1
