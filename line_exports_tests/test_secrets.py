"""No secret is ever shown: every export runs with recognizable fake secrets, then everything a
user or a log collector can see is scanned for them.

Runs every destination (MAAC, LINE push with a long-lived channel token, LINE multicast and
audience with short-lived tokens issued from the channel secret, the Conversion API, LinkedIn
through the refresh-token flow), with ``debug=True`` so request and response bodies are logged,
and once more with wrong secrets so the runs fail. Scanned: captured stdout/stderr, the Dagster
event logs, run config and tags, materialization metadata, failure texts with their causes,
every file in the data folder (rejects, spools, ledger, token cache) and the Dagster instance
folder (run and event storage, compute logs), and the sandbox's request log. Tokens the APIs
issued during the run (LINE short-lived tokens, LinkedIn access tokens) count as secrets too.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from line_exports import (
    LineConversionResource,
    LineMessagingResource,
    LinkedInResource,
    MaacResource,
    SqlSource,
)
from line_exports.sandbox import SandboxServer
from line_exports.sandbox import line_conversion as capi_box
from line_exports.sandbox import line_messaging as line_box
from line_exports.sandbox import linkedin as linkedin_box
from line_exports_tests.resilience_helpers import CASES, TAG, build, failure_text

LINE_CHANNEL = "1650009999"
LINKEDIN_CLIENT = "li-client-secrets-test"
SECRETS = {
    "MAAC_TOKEN": "FAKESECRET-maac-token-7f3a9c0e",
    "LINE_TOKEN": "FAKESECRET-line-channel-token-51d2aa",
    "LINE_CHANNEL_SECRET": "FAKESECRET-line-channel-secret-c0de77",
    "CAPI_TOKEN": "FAKESECRET-capi-token-a11ce900",
    "LINKEDIN_CLIENT_SECRET": "FAKESECRET-linkedin-client-secret-b0b1",
    "LINKEDIN_REFRESH": "FAKESECRET-linkedin-refresh-token-e4e5",
}
WRONG = {
    "WRONG_MAAC": "FAKESECRET-wrong-maac-0001",
    "WRONG_LINE_TOKEN": "FAKESECRET-wrong-line-token-0002",
    "WRONG_LINE_SECRET": "FAKESECRET-wrong-line-secret-0003",
    "WRONG_CAPI": "FAKESECRET-wrong-capi-0004",
    "WRONG_LINKEDIN_REFRESH": "FAKESECRET-wrong-linkedin-refresh-0005",
}


@pytest.fixture
def debug_logging() -> Iterator[None]:
    """Our loggers at DEBUG to stderr, as a log collector attached to the process would see them."""
    logger = logging.getLogger("line_exports")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    logger.setLevel(old)


def _register(server: SandboxServer) -> None:
    """The fake secrets are the only ones these accounts accept."""
    sandbox = server.sandbox
    sandbox.tokens["maac"] = {SECRETS["MAAC_TOKEN"]}
    sandbox.tokens["line_messaging"] = {SECRETS["LINE_TOKEN"]}
    line_box.store_of(sandbox).clients = {LINE_CHANNEL: SECRETS["LINE_CHANNEL_SECRET"]}
    capi_box.register_tag(sandbox, TAG, SECRETS["CAPI_TOKEN"])
    store = linkedin_box.store_of(sandbox)
    store.clients = {LINKEDIN_CLIENT: SECRETS["LINKEDIN_CLIENT_SECRET"]}
    store.refresh_tokens = {
        SECRETS["LINKEDIN_REFRESH"]: linkedin_box.Token(
            linkedin_box.SANDBOX_MEMBER, LINKEDIN_CLIENT, time.time() + 86_400
        )
    }
    sandbox.tokens["linkedin"] = set()  # no sandbox default token: the refresh flow must run


def _resources(url: str, suffix: str, env: dict[str, str]) -> dict[str, dg.ConfigurableResource]:
    """One resource per auth method, every secret read through dg.EnvVar from ``env`` names."""
    return {
        f"maac{suffix}": MaacResource(
            api_token=dg.EnvVar(env["maac"]), base_url=url, poll_seconds=0.05, debug=True
        ),
        f"line_token{suffix}": LineMessagingResource(
            access_token=dg.EnvVar(env["line_token"]), base_url=url, debug=True
        ),
        f"line_short{suffix}": LineMessagingResource(
            auth_method="short_lived_token",
            client_id=LINE_CHANNEL,
            client_secret=dg.EnvVar(env["line_secret"]),
            base_url=url,
            poll_seconds=0.05,
            debug=True,
        ),
        f"capi{suffix}": LineConversionResource(
            line_tag_id=TAG, access_token=dg.EnvVar(env["capi"]), base_url=url, debug=True
        ),
        f"linkedin{suffix}": LinkedInResource(
            client_id=LINKEDIN_CLIENT,
            client_secret=dg.EnvVar("LINKEDIN_CLIENT_SECRET"),
            refresh_token=dg.EnvVar(env["linkedin_refresh"]),
            api_url=url,
            new_segment_wait=0,
            debug=True,
        ),
    }


def _assets(suffix: str) -> list[dg.AssetsDefinition]:
    keys = {
        "maac_members": "maac",
        "line_push": "line_token",
        "line_multicast": "line_short",
        "line_audience": "line_short",
        "capi_events": "capi",
        "linkedin_users": "linkedin",
    }
    return [
        build(CASES[name], name=f"{name}{suffix}", resource_key=f"{key}{suffix}")
        for name, key in keys.items()
    ]


def _files(*roots: Path) -> Iterator[tuple[Path, bytes]]:
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                yield path, path.read_bytes()


def test_no_secret_reaches_logs_config_metadata_errors_or_files(
    sandbox_server: SandboxServer,
    line_exports_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    debug_logging: None,
) -> None:
    _register(sandbox_server)
    for name, value in {**SECRETS, **WRONG}.items():
        monkeypatch.setenv(name, value)
    instance_dir = tmp_path / "dagster_home"
    instance_dir.mkdir()
    instance = dg.DagsterInstance.local_temp(tempdir=str(instance_dir))
    source = SqlSource(url=f"duckdb:///{line_exports_home / 'secrets.duckdb'}")
    url = sandbox_server.url

    good_env = {
        "maac": "MAAC_TOKEN",
        "line_token": "LINE_TOKEN",
        "line_secret": "LINE_CHANNEL_SECRET",
        "capi": "CAPI_TOKEN",
        "linkedin_refresh": "LINKEDIN_REFRESH",
    }
    good = dg.materialize(
        _assets(""),
        resources={"sql_source": source, **_resources(url, "", good_env)},
        instance=instance,
        tags={"team": "crm"},
        raise_on_error=False,
    )
    assert good.success, failure_text(good)
    assert len(good.get_asset_materialization_events()) == 6

    wrong_env = {
        "maac": "WRONG_MAAC",
        "line_token": "WRONG_LINE_TOKEN",
        "line_secret": "WRONG_LINE_SECRET",
        "capi": "WRONG_CAPI",
        "linkedin_refresh": "WRONG_LINKEDIN_REFRESH",
    }
    bad = dg.materialize(
        _assets("_bad"),
        resources={"sql_source": source, **_resources(url, "_bad", wrong_env)},
        instance=instance,
        raise_on_error=False,
    )
    assert not bad.success
    failures = failure_text(bad)
    assert len([e for e in bad.all_events if e.is_step_failure]) == 6, (
        "every wrong secret fails its export"
    )
    assert "401" in failures and "invalid_client" in failures and "invalid_grant" in failures

    # Secrets the APIs issued during the runs are secrets too.
    issued = set(line_box.store_of(sandbox_server.sandbox).issued)
    issued |= set(linkedin_box.store_of(sandbox_server.sandbox).access_tokens)
    assert issued, "the short-lived and refresh flows ran"
    secrets = {*SECRETS.values(), *WRONG.values(), *issued}

    captured = capfd.readouterr()
    seen: dict[str, str] = {"stdout": captured.out, "stderr": captured.err, "failures": failures}
    assert "request body:" in captured.err, "debug bodies were logged, so the scan means something"
    for result in (good, bad):
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        seen[f"run {result.run_id} config"] = json.dumps(run.run_config, default=str)
        seen[f"run {result.run_id} tags"] = json.dumps(dict(run.tags), default=str)
        seen[f"run {result.run_id} record"] = dg.serialize_value(run)
        seen[f"run {result.run_id} events"] = "\n".join(
            dg.serialize_value(record) for record in instance.all_logs(result.run_id)
        )
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
            seen[f"metadata {materialization.asset_key.to_user_string()}"] = dg.serialize_value(
                materialization.metadata
            )
    seen["sandbox request log"] = repr(sandbox_server.sandbox.requests)
    files = dict(_files(line_exports_home, instance_dir))
    assert any(p.name == "rejects.csv" for p in files), "rejects files were written and scanned"
    assert any(p.name == "line_messaging_tokens.json" for p in files), "the token cache was scanned"
    assert sum(len(text) for text in seen.values()) > 50_000

    leaks = [
        (where, secret) for where, text in seen.items() for secret in secrets if secret in text
    ]
    leaks += [
        (str(path), secret)
        for path, data in files.items()
        for secret in secrets
        if secret.encode() in data
    ]
    assert leaks == []
