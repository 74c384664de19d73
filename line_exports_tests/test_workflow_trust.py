"""A workflow folder is another team's code: it reaches no file outside itself, no environment
variable or host the deployment did not grant, and its SQL runs in DuckDB with external access
off. Each test feeds the malicious input to the real loader, a real DuckDB file, a real socket
or real processes, and checks the refusal (and that nothing leaked)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from line_exports.http import ApiError, HttpClient, RetrySettings
from line_exports.sandbox import SandboxServer
from line_exports.sources import SqlSource
from line_exports.workflows import WorkflowsComponent, load_folder, load_workflows
from line_exports.workflows.trust import TrustPolicy

MARKER = "TOPSECRET-4f1c9a"
CONNECTIONS = "connections:\n  maac_main:\n    type: maac\n"
GOOD = """
+members:
  td>: q.sql
  result_connection: maac_main
  result_settings: {data_object: segments, segment_name: s}
"""


def folder_with(tmp_path: Path, connections: str = CONNECTIONS, **files: str) -> Path:
    """``tmp_path/team/wf``: a workflow folder with one good workflow plus ``files``; a file
    with the marker sits outside it at ``tmp_path/team/outside/secret.txt``."""
    outside = tmp_path / "team" / "outside"
    outside.mkdir(parents=True)
    (outside / "secret.txt").write_text(f"select '{MARKER}' as line_uid\n")
    (outside / "x.yml").write_text(f"leak: {MARKER}\n")
    (outside / "result.json").write_text(f'{{"type": "maac", "segment_name": "{MARKER}"}}')
    folder = tmp_path / "team" / "wf"
    folder.mkdir()
    (folder / "connections.yaml").write_text(connections)
    (folder / "q.sql").write_text("SELECT line_uid FROM segment_users\n")
    (folder / "good.dig").write_text(textwrap.dedent(GOOD).lstrip("\n"))
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def only_error(folder: Path, policy: TrustPolicy | None = None) -> str:
    """The one load error; the good workflow still loads, and no definition shows the marker."""
    loaded = load_folder(folder, policy=policy)
    assert [w.name for w in loaded.workflows] == ["good"], [str(e) for e in loaded.errors]
    assert len(loaded.errors) == 1, [str(e) for e in loaded.errors]
    shown = repr(loaded.definitions().metadata) + repr([t.sql for t in loaded.workflows[0].tasks])
    assert MARKER not in shown and MARKER not in str(loaded.errors[0])
    return str(loaded.errors[0])


# -- files: td>, !include, result: and query: stay inside the folder -------------------------


@pytest.mark.parametrize(
    ("target", "shown"),
    [("/proc/self/environ", "/proc/self/environ"), ("../outside/secret.txt", "../outside")],
)
def test_td_outside_the_folder_is_a_load_error(tmp_path: Path, target: str, shown: str) -> None:
    folder = folder_with(
        tmp_path,
        **{"bad.dig": f"+t:\n  td>: {target}\n  result_connection: maac_main\n"},
    )
    message = only_error(folder)
    assert "bad.dig:2, task +t, setting td>: query file" in message
    assert shown in message and "outside the workflow folder" in message


def test_a_symlink_inside_pointing_outside_is_refused_one_inside_is_followed(
    tmp_path: Path,
) -> None:
    folder = folder_with(
        tmp_path,
        **{
            "bad.dig": "+t:\n  td>: queries/link.sql\n  result_connection: maac_main\n"
            "  result_settings: {data_object: segments, segment_name: s}\n",
            "ok.dig": "+t:\n  td>: queries/alias.sql\n  result_connection: maac_main\n"
            "  result_settings: {data_object: segments, segment_name: s}\n",
        },
    )
    (folder / "queries").mkdir()
    (folder / "queries" / "link.sql").symlink_to(folder.parent / "outside" / "secret.txt")
    (folder / "queries" / "alias.sql").symlink_to(folder / "q.sql")
    loaded = load_folder(folder)
    assert sorted(w.name for w in loaded.workflows) == ["good", "ok"]
    [error] = loaded.errors
    assert "bad.dig:2, task +t, setting td>" in str(error) and "outside" in str(error)
    assert MARKER not in repr(loaded.definitions().metadata)
    # A .dig file that is itself a symlink out of the folder is refused too.
    (folder / "evil.dig").symlink_to(folder.parent / "outside" / "x.yml")
    names = [Path(e.file).name for e in load_folder(folder).errors]
    assert "evil.dig" in names


def test_include_under_export_outside_the_folder_is_refused(tmp_path: Path) -> None:
    folder = folder_with(
        tmp_path,
        **{
            "bad.dig": """
            _export:
              !include : ../../outside/x.yml
            +t:
              td>: q.sql
              result_connection: maac_main
              result_settings: {data_object: segments, segment_name: s}
            """,
            "value.dig": """
            _export:
              note: !include ../outside/x.yml
            +t:
              td>: q.sql
              result_connection: maac_main
              result_settings: {data_object: segments, segment_name: s}
            """,
        },
    )
    loaded = load_folder(folder)
    assert [w.name for w in loaded.workflows] == ["good"]
    messages = sorted(str(e) for e in loaded.errors)
    assert len(messages) == 2
    assert "bad.dig:2: !include ../../outside/x.yml resolves outside" in messages[0]
    assert "value.dig:2: !include ../outside/x.yml resolves outside" in messages[1]
    assert MARKER not in "".join(messages)


def test_an_interpolated_td_path_and_a_connections_include_stay_inside_too(
    tmp_path: Path,
) -> None:
    folder = folder_with(
        tmp_path,
        **{
            "bad.dig": "_export:\n  q: ../outside/secret.txt\n+t:\n  td>: ${q}\n"
            "  result_connection: maac_main\n"
        },
    )
    message = only_error(folder)
    assert "bad.dig:4, task +t, setting td>: query file ../outside/secret.txt" in message
    (folder / "connections.yaml").write_text(f"{CONNECTIONS}  !include : ../outside/x.yml\n")
    errors = [str(e) for e in load_folder(folder).errors]
    assert any(
        "connections.yaml:4: !include ../outside/x.yml resolves outside" in e for e in errors
    )
    assert all(MARKER not in e for e in errors)


def test_result_json_file_outside_the_folder_is_refused(tmp_path: Path) -> None:
    folder = folder_with(
        tmp_path, **{"bad.dig": "+t:\n  td>: q.sql\n  result: ../outside/result.json\n"}
    )
    message = only_error(folder)
    assert "bad.dig:3, task +t, setting result" in message and "outside the workflow" in message


def test_query_is_sql_text_never_a_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = folder_with(
        tmp_path,
        **{
            "bad.dig": "+t:\n  query: secret.txt.sql\n  result_connection: maac_main\n"
            "  result_settings: {data_object: segments, segment_name: s}\n"
        },
    )
    # The file exists in the working directory: it must not be read.
    (tmp_path / "secret.txt.sql").write_text(f"select '{MARKER}' as line_uid")
    monkeypatch.chdir(tmp_path)
    message = only_error(folder)
    assert "bad.dig:2, task +t, setting query: query: holds SQL text" in message
    assert "td>: secret.txt.sql" in message


def test_a_missing_query_file_fails_that_workflow_only(tmp_path: Path) -> None:
    folder = folder_with(
        tmp_path,
        **{
            "a.dig": "+t:\n  query: missing.sql\n  result_connection: maac_main\n"
            "  result_settings: {data_object: segments, segment_name: s}\n",
            "b.dig": "+t:\n  td>: missing.sql\n  result_connection: maac_main\n"
            "  result_settings: {data_object: segments, segment_name: s}\n",
        },
    )
    loaded = load_folder(folder)
    assert [w.name for w in loaded.workflows] == ["good"]
    assert sorted(Path(e.file).name for e in loaded.errors) == ["a.dig", "b.dig"]
    defs = load_workflows(folder)  # the code location loads; the errors are in its metadata
    assert defs.resolve_job_def("good") is not None
    listed = str(defs.metadata["workflow_errors"].value)
    assert "a.dig:2, task +t, setting query" in listed and "b.dig:2, task +t, setting td>" in listed


# -- SQL: the embedded DuckDB runs the folder's queries with external access off -------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "engine.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table t as select 1 as id")
    return path


@pytest.mark.parametrize(
    "sql",
    [
        "select content from read_text('{secret}')",
        "copy (select 1 as id) to '{written}'",
        "attach '{other}' as other",
        "set enable_external_access = true",
        "set lock_configuration = false",
        "load httpfs",
    ],
)
def test_workflow_sql_cannot_reach_files_or_unlock_the_engine(
    tmp_path: Path, db: Path, sql: str
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(MARKER)
    written, other = tmp_path / "written.csv", tmp_path / "other.duckdb"
    folder = folder_with(tmp_path, connections=f"{CONNECTIONS}source:\n  duckdb_path: e.duckdb\n")
    (folder / "e.duckdb").write_bytes(db.read_bytes())
    source = load_folder(folder).source()
    query = sql.format(secret=secret, written=written, other=other)
    with pytest.raises(duckdb.Error) as caught:
        for chunk in source.read_chunks(query):
            assert MARKER not in chunk.to_string()
    assert "disabled" in str(caught.value) or "configuration" in str(caught.value)
    assert not written.exists() and not other.exists()
    # The normal query still runs on the same file.
    assert next(source.read_chunks("select id from t"))["id"].tolist() == [1]


def test_the_deployment_may_open_external_access_for_a_trusted_folder(tmp_path: Path) -> None:
    secret = tmp_path / "data.txt"
    secret.write_text("trusted")
    folder = folder_with(tmp_path)
    trusted = load_folder(folder, policy=TrustPolicy(external_access=True)).source()
    chunk = next(trusted.read_chunks(f"select content from read_text('{secret}')"))
    assert chunk["content"].tolist() == ["trusted"]
    # ...never the folder: external_access is not a field of connections.yaml's source.
    folder2 = tmp_path / "other"
    folder2.mkdir()
    (folder2 / "connections.yaml").write_text("source:\n  external_access: true\n")
    [error] = load_folder(folder2).errors
    assert "unknown field 'external_access'" in str(error)


def test_duckdb_path_outside_the_folder_is_refused(tmp_path: Path, db: Path) -> None:
    folder = folder_with(tmp_path, connections=f"{CONNECTIONS}source:\n  duckdb_path: {db}\n")
    errors = [str(e) for e in load_folder(folder).errors]
    assert any("connections.yaml:5, task source, setting duckdb_path" in e for e in errors)


def test_sample_tables_still_work_with_external_access_off() -> None:
    chunk = next(SqlSource().read_chunks("select count(*) as n from line_members"))
    assert int(chunk["n"][0]) == 3000


# -- environment variables and hosts come from the deployment --------------------------------


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A real TCP server on loopback that records every byte anyone sends it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    received.append(conn.recv(65536))
                except OSError:
                    received.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    server.close()


def run_folder(folder: Path) -> None:
    """Materialize every loaded workflow (what a deployment would do with the folder)."""
    loaded = load_folder(folder)
    defs = loaded.definitions()
    for workflow in loaded.workflows:
        with dg.instance_for_test() as instance:
            defs.resolve_job_def(workflow.job_name).execute_in_process(
                instance=instance, raise_on_error=False
            )


def test_a_secret_the_deployment_did_not_allow_is_never_read_or_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: tuple[int, list[bytes]]
) -> None:
    port, received = listener
    monkeypatch.setenv("ANY_ENV_VAR", MARKER)
    folder = folder_with(
        tmp_path,
        connections=(
            f"{CONNECTIONS}  grab:\n    type: maac\n    base_url: http://127.0.0.1:{port}/\n"
            "    api_token: ${secret:ANY_ENV_VAR}\n"
        ),
        **{
            "grab.dig": "+t:\n  td>: q.sql\n  result_connection: grab\n"
            "  result_settings: {data_object: segments, segment_name: s}\n"
        },
    )
    errors = [str(e) for e in load_folder(folder).errors]
    assert any(
        "connections.yaml:7, task connection grab, setting api_token: environment variable "
        "ANY_ENV_VAR is not allowed" in e
        for e in errors
    ), errors
    run_folder(folder)
    assert received == [] and all(MARKER not in e for e in errors)


def test_an_allowed_credential_never_goes_to_a_loopback_url_the_folder_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: tuple[int, list[bytes]]
) -> None:
    port, received = listener
    monkeypatch.setenv("MAAC_API_TOKEN", MARKER)
    folder = folder_with(
        tmp_path,
        **{
            "grab.dig": f"""
            +t:
              td>: q.sql
              result_connection: maac_main
              result_settings:
                base_url: http://127.0.0.1:{port}/
                api_token: ${{secret:maac.api_token}}
                data_object: segments
                segment_name: s
            """
        },
    )
    message = only_error(folder)
    assert "grab.dig:5, task +t, setting result_settings.base_url" in message
    assert "would carry a credential from the environment" in message
    run_folder(folder)
    assert received == []


def test_a_token_is_never_put_into_a_base_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAC_API_TOKEN", MARKER)
    folder = folder_with(
        tmp_path,
        connections=f"{CONNECTIONS}  sneaky:\n    type: maac\n    base_url_env: MAAC_API_TOKEN\n",
    )
    loaded = load_folder(folder)
    [error] = loaded.errors
    assert "connections.yaml:6, task connection sneaky, setting base_url: the value of " in str(
        error
    ) and "MAAC_API_TOKEN is not an http(s) URL" in str(error)
    assert MARKER not in str(error) and "sneaky" not in loaded.connections.connections
    # And a ${secret:...} cannot fill a URL in result_settings either.
    (loaded.path / "url.dig").write_text(
        "+t:\n  td>: q.sql\n  result_connection: maac_main\n  result_settings:\n"
        "    base_url: ${secret:maac.api_token}\n    data_object: segments\n    segment_name: s\n"
    )
    messages = [str(e) for e in load_folder(folder).errors]
    assert any("url.dig:5, task +t, setting result_settings.base_url" in m for m in messages)
    assert all(MARKER not in m for m in messages)


def test_a_url_read_from_the_environment_stays_an_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAC_BASE_URL", "https://api.jp.cresclab.com")
    folder = folder_with(tmp_path, connections=f"{CONNECTIONS}    base_url_env: MAAC_BASE_URL\n")
    loaded = load_folder(folder)
    assert loaded.errors == []
    resource = loaded.workflows[0].tasks[0].resource
    assert isinstance(resource.base_url, dg.EnvVar)
    assert resource.base_url.env_var_name == "MAAC_BASE_URL"


@pytest.mark.parametrize(
    ("base_url", "policy", "allowed"),
    [
        ("https://api.cresclab.com", TrustPolicy(), True),
        ("http://api.cresclab.com", TrustPolicy(), False),
        ("https://api.line.me", TrustPolicy(), False),  # another API's host
        ("https://proxy.corp.example", TrustPolicy(), False),
        ("https://proxy.corp.example", TrustPolicy(allowed_hosts=("proxy.corp.example",)), True),
        ("http://proxy.corp.example", TrustPolicy(allowed_hosts=("proxy.corp.example",)), False),
        ("http://127.0.0.1:8787", TrustPolicy(), True),  # the sandbox, no credential
        ("file:///etc/passwd", TrustPolicy(), False),
    ],
)
def test_destination_hosts_come_from_the_deployment(
    tmp_path: Path, base_url: str, policy: TrustPolicy, allowed: bool
) -> None:
    folder = folder_with(tmp_path, connections=f"{CONNECTIONS}    base_url: {base_url}\n")
    errors = [str(e) for e in load_folder(folder, policy=policy).errors]
    assert (errors == []) is allowed, errors
    if not allowed:
        assert "connections.yaml:4, task connection maac_main, setting base_url" in errors[0]


def test_the_deployment_grants_more_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_A_MAAC_TOKEN", "t0k3n-value")
    folder = folder_with(
        tmp_path, connections=f"{CONNECTIONS}    api_token_env: SHOP_A_MAAC_TOKEN\n"
    )
    assert "SHOP_A_MAAC_TOKEN is not allowed" in str(load_folder(folder).errors[0])
    defs = load_workflows(folder, allowed_env=["SHOP_A_*"])
    assert "workflow_errors" not in defs.metadata
    component = WorkflowsComponent(path=str(folder), allowed_env=["SHOP_A_*"])
    assert component.policy() == TrustPolicy(allowed_env=("SHOP_A_*",))
    # The CLI takes the grant from the deployment's environment (never from the folder).
    cli = [sys.executable, "-m", "line_exports.cli", "validate", "--workflows", str(folder)]
    refused = subprocess.run(cli, capture_output=True, text=True, env=dict(os.environ))
    assert refused.returncode == 1 and "SHOP_A_MAAC_TOKEN is not allowed" in refused.stdout
    granted = {**os.environ, "LINE_EXPORTS_ALLOWED_ENV": "OTHER_*, SHOP_A_*"}
    ok = subprocess.run(cli, capture_output=True, text=True, env=granted)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "t0k3n-value" not in ok.stdout + ok.stderr + refused.stdout + refused.stderr


# -- the HTTP core: no credential over plain HTTP off this machine -----------------------------


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_a_bearer_token_never_goes_over_plain_http_to_another_host() -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    server = socket.socket()
    server.bind((address, 0))
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    fast = RetrySettings(max_retry=0, connection_timeout=2)
    try:
        client = HttpClient(
            f"http://{address}:{port}",
            auth_headers=lambda: {"Authorization": f"Bearer {MARKER}"},
            retry=fast,
        )
        with pytest.raises(ApiError) as caught:
            client.request("GET", "/v2/bot/info")
        assert "refusing to send credentials over http" in str(caught.value)
        assert MARKER not in str(caught.value) and not caught.value.retryable
        with pytest.raises(TimeoutError):
            server.accept()  # nothing connected
        # Without a credential the same host is reachable (the check is the credential's).
        plain = HttpClient(f"http://{address}:{port}", retry=fast)
        thread = threading.Thread(target=lambda: _answer(server), daemon=True)
        thread.start()
        assert plain.request("GET", "/ping").status_code == 200
    finally:
        server.close()


def _answer(server: socket.socket) -> None:
    server.settimeout(5)
    conn, _ = server.accept()
    with conn:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def test_the_sandbox_on_loopback_still_gets_its_token(sandbox_server: SandboxServer) -> None:
    client = HttpClient(
        sandbox_server.url,
        auth_headers=lambda: {"Authorization": "Bearer wrong"},
        retry=RetrySettings(max_retry=0),
    )
    with pytest.raises(ApiError) as caught:
        client.request("GET", "/openapi/v1/segment/")
    assert caught.value.status == 401  # it reached the sandbox, which checked the token


# -- sample tables: created once, then only read (parallel steps, real processes) --------------

READER = """
import sys
from line_exports.sources import SqlSource
rows = sum(len(c) for c in SqlSource().read_chunks("select * from segment_users"))
print(rows)
"""


def test_parallel_processes_share_the_embedded_duckdb_without_lock_errors(
    line_exports_home: Path,
) -> None:
    env = {**os.environ, "LINE_EXPORTS_HOME": str(line_exports_home)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", READER],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err[-500:] for _, err in results]
    assert [out.strip() for out, _ in results] == ["3000"] * 6


def parallel_workflow_job() -> dg.JobDefinition:
    """The workflow folder named by $TRUST_FOLDER, its tasks as one multiprocess run with
    every step at once (reconstructable in each step's process)."""
    loaded = load_folder(os.environ["TRUST_FOLDER"])
    defs = loaded.definitions()
    assets = list(defs.assets or [])
    job = dg.define_asset_job(
        "parallel_segments",
        selection=dg.AssetSelection.all(),
        executor_def=dg.multiprocess_executor.configured({"max_concurrent": 4}),
    )
    return dg.Definitions(
        assets=assets, jobs=[job], resources=dict(defs.resources or {})
    ).resolve_job_def("parallel_segments")


def test_parallel_steps_of_a_multiprocess_run_do_not_fail_on_the_duckdb_lock(
    tmp_path: Path, sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = "".join(
        f"  +s{i}:\n    td>: q.sql\n    result_connection: maac_main\n"
        f"    result_settings: {{data_object: segments, segment_name: seg{i}}}\n"
        for i in range(4)
    )
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "connections.yaml").write_text(CONNECTIONS)
    # Each query holds its read-only connection for a few seconds (a real export's scan), so
    # the steps' connections overlap: one opening the file read-write would fail on the lock.
    (folder / "q.sql").write_text(
        "SELECT line_uid FROM segment_users\n"
        "WHERE (SELECT sum(hash(range)) FROM range(400000000)) IS NOT NULL\n"
    )
    (folder / "par.dig").write_text(f"+all:\n  _parallel: true\n{tasks}")
    monkeypatch.setenv("TRUST_FOLDER", str(folder))
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.execute_job(
            dg.reconstructable(parallel_workflow_job), instance=instance, raise_on_error=False
        )
        events = [e.dagster_event for e in instance.all_logs(result.run_id) if e.dagster_event]
    failed = [
        str(e.event_specific_data)
        for e in events
        if e.event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    ]
    assert failed == [] and result.success
    succeeded = [e.step_key for e in events if e.event_type == dg.DagsterEventType.STEP_SUCCESS]
    assert len(succeeded) == 4
