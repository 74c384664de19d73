"""Scale-out past one machine: the shipped Kubernetes configuration loads, and pools hold.

``examples/k8s/`` is what ``docs/scale-out.md`` tells users to deploy, so it is loaded here with
the real ``dagster-k8s`` classes: the run launcher reads a kubeconfig that points at a recording
HTTP server on loopback (never a cluster), which shows the exact Kubernetes Job a run submits.
Pools are checked by running two exports to one API and reading when each one talked to it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import kubernetes
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating import StepDelegatingExecutor
from dagster._core.instance.config import PoolGranularity
from dagster._core.launcher import LaunchRunContext
from dagster_k8s import K8sRunLauncher
from dagster_k8s.executor import K8sStepHandler

from line_exports import SqlSource, build_export, get_destination, sample_data
from line_exports.paths import load_module
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging import store_of

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "examples" / "k8s"
POOLS = {"maac_api", "line_messaging_api", "line_conversion_api", "linkedin_api"}
IMAGE = "registry.example.com/line-exports:2026.11"


# -- loading the shipped files ---------------------------------------------------------------
def load_k8s_definitions() -> ModuleType:
    """``examples/k8s/definitions.py`` by path, as a code location would; once per process."""
    return load_module(K8S / "definitions.py", "line_exports_examples_k8s_definitions")


def k8s_line_messaging_job() -> dg.JobDefinition:
    """The shipped LINE Messaging job, unchanged (k8s executor); reconstructable by name."""
    return load_k8s_definitions().defs.resolve_job_def("line_messaging_job")


def line_messaging_pair_job() -> dg.JobDefinition:
    """Two shipped exports to the LINE Messaging API in one run, on the multiprocess executor
    with room for both at once: only the pool can keep them apart."""
    shipped = load_k8s_definitions().defs
    exports = [a for a in shipped.assets if a.key.path[-1] in ("line_audience", "line_multicast")]
    job = dg.define_asset_job(
        "line_messaging_pair",
        selection=dg.AssetSelection.assets(*exports),
        executor_def=dg.multiprocess_executor.configured({"max_concurrent": 2}),
    )
    defs = dg.Definitions(assets=exports, jobs=[job], resources=shipped.resources)
    return defs.resolve_job_def("line_messaging_pair")


def shipped_instance_config() -> dict[str, Any]:
    return yaml.safe_load((K8S / "dagster.yaml").read_text(encoding="utf-8"))


def k8s_instance(home: Path, kubeconfig: Path) -> dg.DagsterInstance:
    """The shipped instance, as run from outside a cluster: the only change is where the
    launcher finds its kubeconfig (in a pod it uses the service account instead)."""
    config = shipped_instance_config()
    config["run_launcher"]["config"].update(
        load_incluster_config=False, kubeconfig_file=str(kubeconfig)
    )
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return dg.DagsterInstance.from_config(str(home))


# -- a Kubernetes API on loopback that records what it is sent ----------------------------------
@dataclass
class KubeApi:
    url: str
    kubeconfig: Path
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[KubeApi]:
    """Answers ``POST .../jobs`` with 201 and records the body; anything else is a 404."""
    recorded: list[tuple[str, str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            recorded.append(("POST", self.path, body))
            status = 201 if self.path.endswith("/jobs") else 404
            self._answer(status, body if status == 201 else {"kind": "Status", "code": 404})

        def do_GET(self) -> None:
            recorded.append(("GET", self.path, {}))
            self._answer(404, {"kind": "Status", "code": 404})

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "loopback", "cluster": {"server": url}}],
                "users": [{"name": "test", "user": {"token": "not-a-real-token"}}],
                "contexts": [
                    {"name": "loopback", "context": {"cluster": "loopback", "user": "test"}}
                ],
                "current-context": "loopback",
            }
        ),
        encoding="utf-8",
    )
    try:
        yield KubeApi(url, kubeconfig, recorded)
    finally:
        server.shutdown()
        server.server_close()


# -- the instance: one pod per run, pools -------------------------------------------------------
def test_each_run_is_submitted_as_a_kubernetes_job_with_secrets_and_the_shared_volume(
    tmp_path: Path, kube_api: KubeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    with k8s_instance(tmp_path / "dagster_home", kube_api.kubeconfig) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        # The kubernetes client is configured for loopback only.
        assert kubernetes.client.Configuration.get_default_copy().host == kube_api.url

        recon = dg.reconstructable(k8s_line_messaging_job)
        run = instance.create_run_for_job(
            job_def=recon.get_definition(), job_code_origin=recon.get_python_origin()
        )
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))

    ((method, path, job),) = kube_api.requests
    assert (method, path) == ("POST", "/apis/batch/v1/namespaces/line-exports/jobs")
    assert job["metadata"]["labels"]["dagster/job"] == "line_messaging_job"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["args"][:3] == ["dagster", "api", "execute_run"]
    assert pod["serviceAccountName"] == "dagster"
    # Credentials come from the secret, not from run config.
    assert {"secretRef": {"name": "line-exports-credentials"}} in container["envFrom"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LINE_EXPORTS_HOME"] == "/data/line_exports"
    assert env["LINE_EXPORTS_SANDBOX"] == "off"
    assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    # The data folder (ledger, rejects) lies on the shared claim.
    assert {"name": "line-exports-data", "mountPath": "/data"} in container["volumeMounts"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["line-exports-data"]["persistentVolumeClaim"] == {
        "claimName": "line-exports-data"
    }


def test_every_export_declares_its_api_pool_and_the_instance_limits_each_to_one(
    tmp_path: Path, kube_api: KubeApi
) -> None:
    exports = load_k8s_definitions().defs.assets
    pools = {}
    for asset in exports:
        destination = get_destination(asset.metadata_by_key[asset.key]["destination_type"])
        assert asset.op.pool == destination.pool, asset.key
        pools[asset.key.path[-1]] = asset.op.pool
    assert set(pools.values()) == POOLS
    assert pools["line_audience"] == pools["line_push"] == pools["line_multicast"]
    docs = (ROOT / "docs" / "scale-out.md").read_text(encoding="utf-8")
    assert all(f"`{pool}`" in docs for pool in POOLS)

    with k8s_instance(tmp_path / "dagster_home", kube_api.kubeconfig) as instance:
        concurrency = instance.get_concurrency_config()
        pool_config = concurrency.pool_config
        assert pool_config.pool_granularity == PoolGranularity.OP
        assert pool_config.default_pool_limit == 1
        # A run whose every step would wait for a slot stays queued: no idle pod.
        queue = concurrency.run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 20
        assert queue.should_block_op_concurrency_limited_runs
        assert queue.op_concurrency_slot_buffer == 0
        storage = instance.event_log_storage
        assert storage.supports_global_concurrency_limits
        for pool in POOLS:
            # What a step's first claim on an unconfigured pool does.
            storage.initialize_concurrency_limit_to_default(pool)
            assert storage.get_concurrency_info(pool).slot_count == 1
    assert kube_api.requests == []  # loading the instance calls no API


def test_each_account_gets_its_own_pool_and_one_account_shares_one() -> None:
    """Pools per resource (account): two channels do not wait for each other; two exports to
    one channel share its pool; a pool can also be named by hand."""
    line = get_destination("line_messaging")
    query = "select 'U' || lpad('1', 32, '0') as id"

    def export(name: str, **kwargs: Any) -> dg.AssetsDefinition:
        settings = {"target": "audience", "audience_name": name}
        return build_export(
            name, destination="line_messaging", query=query, settings=settings, **kwargs
        )

    shop_a, shop_a_again = export("a1"), export("a2")
    shop_b = export("b1", resource_key="line_messaging_shop_b")
    shop_b_again = export("b2", resource_key="line_messaging_shop_b")
    by_hand = export("c1", resource_key="line_messaging_shop_c", pool="line_messaging_api")
    assert shop_a.op.pool == shop_a_again.op.pool == line.pool == "line_messaging_api"
    assert shop_b.op.pool == shop_b_again.op.pool == "line_messaging_api__line_messaging_shop_b"
    assert by_hand.op.pool == "line_messaging_api"
    assert "line_messaging_shop_b" in shop_b.required_resource_keys


def test_k8s_definitions_run_each_step_as_its_own_kubernetes_job(
    tmp_path: Path, kube_api: KubeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = load_k8s_definitions().defs
    jobs = [j for j in defs.resolve_all_job_defs() if not j.name.startswith("__")]
    assert {j.name for j in jobs} == {
        "maac_sample_job",
        "line_conversion_job",
        "line_messaging_job",
        "linkedin_job",
        "all_exports_job",
    }
    # Without the secret's WAREHOUSE_URL a run is refused before it reads or sends a row.
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    with pytest.raises(dg.DagsterInvalidConfigError, match="WAREHOUSE_URL"):
        dg.validate_run_config(defs.resolve_job_def("line_messaging_job"))
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql+psycopg://reader@127.0.0.1:1/warehouse")

    with k8s_instance(tmp_path / "dagster_home", kube_api.kubeconfig) as instance:
        for job in jobs:
            executor_config = dg.validate_run_config(job)["execution"]["k8s"]
            assert executor_config["max_concurrent"] == 4
            limits = executor_config["step_k8s_config"]["container_config"]["resources"]["limits"]
            assert limits == {"memory": "2Gi"}
            executor = job.executor_def.executor_creation_fn(  # type: ignore[misc]
                InitExecutorContext(
                    job=InMemoryJob(job),
                    executor_def=job.executor_def,
                    executor_config=executor_config,
                    instance=instance,
                )
            )
            assert isinstance(executor, StepDelegatingExecutor), job.name
            assert isinstance(executor._step_handler, K8sStepHandler), job.name
    assert kube_api.requests == []


# -- a pool keeps two exports to one API apart ----------------------------------------------
def _sample_warehouse(path: Path) -> str:
    """A SQLite warehouse (reached through SQLAlchemy, not DuckDB) with the sample tables."""
    with sqlite3.connect(path) as con:
        for table in ("segment_users", "line_recipients"):
            sample_data.SAMPLE_TABLES[table]().to_sql(table, con, index=False)
    return f"sqlite:///{path}"


def test_two_exports_to_one_api_take_turns_under_the_shipped_pool_limit(
    tmp_path: Path, sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", _sample_warehouse(tmp_path / "warehouse.sqlite"))
    monkeypatch.setenv("LINE_MESSAGING_BASE_URL", sandbox_server.url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = {
        "concurrency": shipped_instance_config()["concurrency"],
        "telemetry": {"enabled": False},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.execute_job(dg.reconstructable(line_messaging_pair_job), instance=instance)
        assert result.success
        events = instance.all_logs(result.run_id)

    spans: dict[str, list[float]] = {}
    for event in events:
        if event.dagster_event is None:
            continue
        if event.dagster_event.event_type in (
            dg.DagsterEventType.STEP_START,
            dg.DagsterEventType.STEP_SUCCESS,
        ):
            spans.setdefault(event.step_key or "", []).append(event.timestamp)
    (first, second) = sorted(spans.values())
    assert len(first) == len(second) == 2
    assert first[1] <= second[0], f"steps overlap: {spans}"
    blocked = [
        e.step_key for e in events if "blocked by limit for pool line_messaging_api" in e.message
    ]
    assert blocked, "no step waited for the pool"

    # The API's view: one export's requests all come before the other's.
    sandbox = sandbox_server.sandbox
    calls = sorted(
        (r.at, "audience" if r.path.startswith("/v2/bot/audienceGroup") else "multicast")
        for r in sandbox.requests
        if r.path.startswith(("/v2/bot/audienceGroup", "/v2/bot/message/"))
    )
    order = [kind for _, kind in calls]
    assert set(order) == {"audience", "multicast"}
    assert order == sorted(order, key=order.index), f"requests interleave: {order}"
    store = store_of(sandbox)
    assert [(a.description, len(a.ids)) for a in store.audiences.values()] == [
        ("sample audience", 2_970)
    ]
    assert store.multicasts == 6  # 2,970 recipients, 500 per request


# -- a warehouse URL streams -----------------------------------------------------------------
def test_a_sqlalchemy_warehouse_is_read_lazily_one_chunk_at_a_time(tmp_path: Path) -> None:
    """The first chunk arrives after the database produced about one chunk of rows, not the
    whole result: rows are fetched as they are consumed, so memory holds one chunk."""
    path = tmp_path / "warehouse.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("create table events (id integer primary key, payload text)")
        con.executemany(
            "insert into events (payload) values (?)", ((f"row {i}",) for i in range(20_000))
        )
    produced = 0

    def count_row(value: int) -> int:
        nonlocal produced
        produced += 1
        return value

    def register(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("count_row", 1, count_row)

    sa.event.listen(sa.pool.Pool, "connect", register)
    try:
        source = SqlSource(url=f"sqlite:///{path}", chunk_size=1_000)
        chunks = source.read_chunks("select count_row(id) as n, payload from events order by id")
        first = next(chunks)
        assert len(first) == 1_000
        assert produced <= 2_000, f"{produced:,} rows produced for the first chunk"
        sizes = [len(first), *(len(chunk) for chunk in chunks)]
    finally:
        sa.event.remove(sa.pool.Pool, "connect", register)
    assert produced == 20_000
    assert sizes == [1_000] * 20
    assert first["n"].tolist() == list(range(1, 1_001))


def test_with_the_sandbox_switched_off_a_missing_token_fails_the_run_without_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pods' ``LINE_EXPORTS_SANDBOX=off``: no token means a clear failure, not a sandbox."""
    from line_exports import MaacResource

    monkeypatch.delenv("MAAC_API_TOKEN", raising=False)
    monkeypatch.delenv("MAAC_BASE_URL", raising=False)
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX", "off")
    asset = build_export(
        "maac_without_token",
        destination="maac",
        query="SELECT * FROM line_members LIMIT 5",
        settings={"data_object": "members", "import_key": "line_uid", "tags": "t"},
    )
    result = dg.materialize(
        [asset],
        resources={"maac": MaacResource.from_env(), "sql_source": SqlSource()},
        raise_on_error=False,
    )
    assert not result.success
    failures = result.get_step_failure_events()
    message = failures[0].step_failure_data.error.message  # type: ignore[union-attr]
    assert "LINE_EXPORTS_SANDBOX=off" in message and "MAAC_API_TOKEN" in message
    assert len(failures) == 1 and not any(e.is_step_up_for_retry for e in result.all_events)
