"""LinkedIn Matched Audiences: real exports (DuckDB -> Dagster -> HTTP) against the sandbox."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import requests

from line_exports import SqlSource, build_export
from line_exports.destinations.linkedin import (
    DEFAULT_VERSION,
    LinkedInClient,
    LinkedInResource,
    LinkedInSettings,
    element_failures,
)
from line_exports.sandbox import Sandbox, SandboxServer
from line_exports.sandbox.linkedin import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REFRESH_TOKEN,
    store_of,
)

ACCOUNT = "512345678"
FAST = {"initial_retry_wait": 1, "max_retry": 2, "max_retry_wait": 100}
ALICE = "  Alice@Example.COM "
ALICE_SHA256 = hashlib.sha256(b"alice@example.com").hexdigest()
BOB_SHA512 = hashlib.sha512(b"bob@example.com").hexdigest()
GAID = "cdda802e-fb9c-47ad-9794-0794d394c912"
IDFA = "ea7583cd-a667-48bc-b806-42ecb2b48606"

CONTACTS_SQL = f"""
select * from (values
  ('{ALICE}', null, null, 'Alice', 'Liddell', 'Data Engineer', 'Sakura Foods', 'jp'),
  ('{BOB_SHA512.upper()}', null, null, null, null, null, null, null),
  (null, '{GAID.upper()}', null, null, null, null, null, 'US'),
  (null, null, '{IDFA}', null, null, null, null, null),
  (null, null, null, 'Carol', 'Danvers', null, null, null),
  (null, null, null, 'Dave', null, null, null, null),
  ('not-an-email', null, null, null, null, null, null, null),
  ('erin@example.com', null, null, null, null, null, null, 'JPN')
) t(email, google_aid, apple_idfa, first_name, last_name, title, company, country)
"""
COMPANIES_SQL = """
select * from (values
  ('Sakura Foods', 'Sakura.example.jp', null),
  (null, 'taipei-tech.example.com.tw', 'mail.taipei-tech.example.com.tw'),
  (null, null, 'bangkok-retail.example.co.th'),
  (null, 'https://bad.example.com/path', null),
  (null, null, null)
) t(company_name, company_website_domain, company_email_domain)
"""


def resource(server: SandboxServer, **overrides: Any) -> LinkedInResource:
    values: dict[str, Any] = {
        "client_id": SANDBOX_CLIENT_ID,
        "client_secret": SANDBOX_CLIENT_SECRET,
        "refresh_token": SANDBOX_REFRESH_TOKEN,
        "api_url": server.url,
        "new_segment_wait": 0,
    }
    values.update(overrides)
    return LinkedInResource(**values)


def run_export(
    res: LinkedInResource, query: str | Path, name: str = "li", **settings: Any
) -> dg.ExecuteInProcessResult:
    settings = {"ad_account_id": ACCOUNT, "segment_name": "seg", **FAST, **settings}
    asset = build_export(
        name, destination="linkedin", query=query, settings=settings, retry_policy=None
    )
    return dg.materialize(
        [asset], resources={"linkedin": res, "sql_source": SqlSource()}, raise_on_error=False
    )


def metadata(result: dg.ExecuteInProcessResult, name: str = "li") -> dict[str, Any]:
    event = result.asset_materializations_for_node(name)[0]
    return {k: v.value for k, v in event.metadata.items()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    texts = [
        str(e.step_failure_data.error.message)
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE and e.step_failure_data.error
    ]
    return "\n".join(texts)


def members(sandbox: Sandbox, name: str = "seg") -> set[tuple[Any, ...]]:
    store = store_of(sandbox)
    [segment] = [s for s in store.segments.values() if s.name == name]
    return segment.members


# -- users ---------------------------------------------------------------------------------
def test_users_add_creates_segment_hashes_and_types_ids(sandbox_server: SandboxServer) -> None:
    sandbox = sandbox_server.sandbox
    res = resource(sandbox_server)
    result = run_export(
        res, CONTACTS_SQL, ignore_invalid_records=True, segment_description="from tests"
    )
    assert result.success
    meta = metadata(result)
    assert meta["rows_read"] == 8
    assert meta["rows_valid"] == 5
    assert meta["rows_rejected"] == 3
    assert meta["rows_accepted"] == 5
    assert meta["segment_action"] == "created"
    # The new segment answered 404 for a while: the client waited instead of failing.
    assert meta["new_segment_404_waits"] >= 1
    assert sandbox.count("POST", "/rest/dmpSegments/", status=404) >= 1
    rules = meta["rejects_by_rule"]
    assert rules["email: email"] == 1
    assert rules["country: pattern"] == 1
    assert any(k.endswith(": identifier") for k in rules)
    got = members(sandbox)
    assert ("ids", ("SHA256_EMAIL", ALICE_SHA256)) in got  # trimmed, lowercased, SHA-256 hashed
    assert ("ids", ("SHA512_EMAIL", BOB_SHA512)) in got  # SHA-512 passed through, lowercased
    assert ("ids", ("GOOGLE_AID", GAID)) in got  # lowercase
    assert ("ids", ("APPLE_IDFA", IDFA.upper())) in got  # uppercase
    assert ("name", "Carol", "Danvers", None, None, None) in got
    assert not any("alice@example.com" in str(m) for m in got)  # no raw email left the machine
    [segment] = store_of(sandbox).segments.values()
    assert (segment.type, segment.description, segment.account) == (
        "USER",
        "from tests",
        int(ACCOUNT),
    )


def test_users_remove_finds_segment_and_removes(sandbox_server: SandboxServer) -> None:
    sandbox = sandbox_server.sandbox
    res = resource(sandbox_server)
    assert run_export(res, CONTACTS_SQL, ignore_invalid_records=True).success
    assert len(members(sandbox)) == 5
    remove_sql = f"select '{ALICE}' as email union all select '{BOB_SHA512}'"
    result = run_export(res, remove_sql, name="li_remove", dmp_segment_mode="remove")
    assert result.success
    meta = metadata(result, "li_remove")
    assert meta["segment_action"] == "found"
    assert meta["rows_accepted"] == 2
    assert len(members(sandbox)) == 3
    assert len(store_of(sandbox).segments) == 1


def test_remove_mode_never_creates_a_segment(sandbox_server: SandboxServer) -> None:
    result = run_export(
        resource(sandbox_server), "select 'a@example.com' as email", dmp_segment_mode="remove"
    )
    assert "remove mode does not create one" in failure_text(result)
    assert store_of(sandbox_server.sandbox).segments == {}


def test_invalid_rows_fail_before_sending_by_default(sandbox_server: SandboxServer) -> None:
    result = run_export(
        resource(sandbox_server), CONTACTS_SQL
    )  # ignore_invalid_records defaults to false
    text = failure_text(result)
    assert "ignore_invalid_records is false" in text and "nothing was sent" in text
    assert store_of(sandbox_server.sandbox).batch_requests == 0
    assert sandbox_server.sandbox.count(path_prefix="/rest/") == 0


# -- companies -----------------------------------------------------------------------------
def test_companies_add_then_remove(sandbox_server: SandboxServer) -> None:
    sandbox = sandbox_server.sandbox
    res = resource(sandbox_server)
    result = run_export(res, COMPANIES_SQL, audience_type="companies", ignore_invalid_records=True)
    assert result.success
    meta = metadata(result)
    assert (meta["rows_valid"], meta["rows_rejected"], meta["rows_accepted"]) == (3, 2, 3)
    assert sandbox.count("POST", "/rest/dmpSegments/", status=200) == 1
    got = members(sandbox)
    assert ("company", "Sakura Foods", "sakura.example.jp", None, None) in got
    assert [s.type for s in store_of(sandbox).segments.values()] == ["COMPANY"]
    remove = "select 'Sakura Foods' as company_name, 'sakura.example.jp' as company_website_domain"
    result = run_export(
        res, remove, name="li_rm", audience_type="companies", dmp_segment_mode="remove"
    )
    assert result.success
    assert len(members(sandbox)) == 2


def test_segment_name_of_other_type_is_refused(sandbox_server: SandboxServer) -> None:
    res = resource(sandbox_server)
    assert run_export(res, "select 'a@example.com' as email").success
    result = run_export(res, "select 'Acme' as company_name", name="li2", audience_type="companies")
    assert "is of type USER, not COMPANY" in failure_text(result)


# -- per-element results -------------------------------------------------------------------
def test_element_failures_are_rejects_with_row_numbers(sandbox_server: SandboxServer) -> None:
    sandbox = sandbox_server.sandbox
    refused = hashlib.sha256(b"refused@example.com").hexdigest()
    store_of(sandbox).refused_values.add(refused)
    sql = "select * from (values ('ok1@example.com'), ('Refused@Example.com'), ('ok2@example.com')) t(email)"
    result = run_export(resource(sandbox_server), sql, ignore_invalid_records=True)
    assert result.success
    meta = metadata(result)
    assert meta["rows_sent"] == 3
    assert meta["rows_accepted"] == 2
    assert meta["rows_refused_by_api"] == 1
    assert meta["elements_refused"] == 1
    rejects = pd.read_csv(Path(meta["rejects_file"]))
    assert rejects["_row_number"].tolist() == [2]
    assert rejects["rule"].tolist() == ["linkedin_element_failed"]
    assert "400" in rejects["message"][0] and "Invalid idValue" in rejects["message"][0]


def test_element_failures_stop_the_export_when_not_ignored(sandbox_server: SandboxServer) -> None:
    refused = hashlib.sha256(b"refused@example.com").hexdigest()
    store_of(sandbox_server.sandbox).refused_values.add(refused)
    sql = "select * from (values ('ok1@example.com'), ('refused@example.com')) t(email)"
    result = run_export(resource(sandbox_server), sql)
    text = failure_text(result)
    assert "LinkedIn refused 1 of 2 elements" in text and "row 2" in text
    assert "uploads are not reverted" in text
    # The refused row still reaches the rejects file, named in the failure's metadata.
    (failure,) = result.get_step_failure_events()
    rejects_file = failure.step_failure_data.user_failure_data.metadata["rejects_file"].value
    assert pd.read_csv(rejects_file)["_row_number"].tolist() == [2]


def test_client_reads_element_statuses_of_a_200(sandbox_server: SandboxServer) -> None:
    res = resource(sandbox_server)
    client = res.get_client()
    segment_id = client.create_segment(ACCOUNT, "direct", None, "USER", "SANDBOX")
    elements = [
        {"action": "ADD", "userIds": [{"idType": "SHA256_EMAIL", "idValue": ALICE_SHA256}]},
        {
            "action": "ADD",
            "userIds": [{"idType": "SHA256_EMAIL", "idValue": "abc123"}],
        },  # not a SHA-256
        {"action": "ADD", "userIds": [{"idType": "PHONE", "idValue": "+15551234567"}]},
        {"action": "ADD", "firstName": "X" * 36, "lastName": "Y"},
    ]
    results = client.batch_create(segment_id, "users", elements)
    assert [r["status"] for r in results] == [201, 400, 400, 400]
    failures = element_failures(results, len(elements))
    assert [f[0] for f in failures] == [1, 2, 3]
    assert "Invalid idValue" in failures[0][2] and "Unsupported idType" in failures[1][2]
    # Fewer results than elements sent: the missing ones are failures, never success.
    assert element_failures(results[:1], 2) == [
        (1, 0, "LinkedIn returned no result for this element")
    ]


# -- batching and limits -------------------------------------------------------------------
def test_batches_of_5000(sandbox_server: SandboxServer) -> None:
    sandbox = sandbox_server.sandbox
    sql = "select 'user' || i || '@example.com' as email from range(12001) t(i)"
    result = run_export(resource(sandbox_server), sql)
    assert result.success
    meta = metadata(result)
    assert meta["rows_accepted"] == 12001 and meta["batch_requests"] == 3
    assert sandbox.count("POST", "/rest/dmpSegments/", status=200) == 3
    assert store_of(sandbox).elements_received == 12001
    assert len(members(sandbox)) == 12001


def test_sandbox_refuses_more_than_5000_elements(sandbox_server: SandboxServer) -> None:
    client = resource(sandbox_server).get_client()
    segment_id = client.create_segment(ACCOUNT, "big", None, "USER", "SANDBOX")
    time.sleep(store_of(sandbox_server.sandbox).not_found_seconds)
    elements = [{"action": "ADD", "firstName": "A", "lastName": str(i)} for i in range(5001)]
    with pytest.raises(ValueError, match="at most 5,000"):
        client.batch_create(segment_id, "users", elements)
    response = requests.post(
        f"{sandbox_server.url}/rest/dmpSegments/{segment_id}/users",
        json={"elements": elements},
        headers={
            "Authorization": "Bearer sandbox-linkedin-token",
            "LinkedIn-Version": DEFAULT_VERSION,
            "X-Restli-Protocol-Version": "2.0.0",
            "X-RestLi-Method": "BATCH_CREATE",
        },
    )
    assert (
        response.status_code == 400 and "exceeds the maximum of 5000" in response.json()["message"]
    )


@pytest.mark.real_retry_waits  # a real 1-second rate window, answered 429 without Retry-After
def test_per_member_rate_limit_429_is_retried() -> None:
    # One /users call per member per 1-second window (the real limit, 600 a minute, scaled down).
    with SandboxServer(Sandbox(rate_scale=1 / 600, job_seconds=0.01)) as server:
        store = store_of(server.sandbox)
        store.rate_window_seconds = 1.0
        sql = "select * from (values ('a@example.com'), ('b@example.com'), ('c@example.com')) t(email)"
        result = run_export(resource(server), sql, batch_size=1)
        assert result.success
        meta = metadata(result)
        assert meta["rows_accepted"] == 3 and meta["batch_requests"] == 3
        assert meta["rate_limited_answers"] >= 1 and meta["retries"] >= 1
        assert server.sandbox.count("POST", "/rest/dmpSegments/", status=429) >= 1


# -- auth and headers ----------------------------------------------------------------------
def test_refresh_on_missing_expired_and_refused_token(sandbox_server: SandboxServer) -> None:
    sandbox = sandbox_server.sandbox
    store = store_of(sandbox)
    store.access_token_seconds = 2  # short-lived tokens: renewal before expiry must kick in
    res = resource(sandbox_server, access_token="AQV-stale-token-from-last-year")
    client = res.get_client()
    assert client.find_segments(ACCOUNT, "x") == []  # stale token -> 401 -> refresh -> retried
    assert store.token_counter == 1
    assert sandbox.count("GET", "/rest/dmpSegments", status=401) == 1
    time.sleep(2.1)
    assert (
        client.find_segments(ACCOUNT, "x") == []
    )  # expired by the clock: refreshed before the call
    assert store.token_counter == 2
    assert sandbox.count("GET", "/rest/dmpSegments", status=401) == 1
    # Missing token altogether: the first call refreshes.
    fresh = resource(sandbox_server)
    assert fresh.get_client().find_segments(ACCOUNT, "x") == []
    assert store.token_counter == 3


def test_invalid_grant_tells_user_to_authorize_again(sandbox_server: SandboxServer) -> None:
    revoked = "AQX-revoked-refresh-token-0123456789"
    res = resource(sandbox_server, refresh_token=revoked)
    result = run_export(res, "select 'a@example.com' as email")
    text = failure_text(result)
    assert "invalid_grant" in text and "line-exports linkedin-auth" in text
    assert revoked not in text


def test_refused_access_token_without_refresh_token(sandbox_server: SandboxServer) -> None:
    token = "AQV-expired-access-token-0123456789"
    res = LinkedInResource(access_token=token, api_url=sandbox_server.url, new_segment_wait=0)
    text = failure_text(run_export(res, "select 'a@example.com' as email"))
    assert "no refresh token is configured" in text and "line-exports linkedin-auth" in text
    assert token not in text


def test_sunset_version_426_names_the_setting(sandbox_server: SandboxServer) -> None:
    res = resource(sandbox_server, linkedin_version="202401")
    text = failure_text(run_export(res, "select 'a@example.com' as email"))
    assert "426" in text and "linkedin_version" in text and "LINKEDIN_VERSION" in text


def test_sandbox_requires_linkedin_headers(sandbox_server: SandboxServer) -> None:
    url = f"{sandbox_server.url}/rest/dmpSegments?q=account&account=urn%3Ali%3AsponsoredAccount%3A{ACCOUNT}"
    auth = {"Authorization": "Bearer sandbox-linkedin-token"}
    version = {"LinkedIn-Version": DEFAULT_VERSION}
    protocol = {"X-Restli-Protocol-Version": "2.0.0"}
    assert requests.get(url, headers={**version, **protocol}).status_code == 401
    missing_version = requests.get(url, headers={**auth, **protocol})
    assert (
        missing_version.status_code == 400 and missing_version.json()["code"] == "VERSION_MISSING"
    )
    assert requests.get(url, headers={**auth, **version}).status_code == 400
    sunset = requests.get(url, headers={**auth, **protocol, "LinkedIn-Version": "202301"})
    assert sunset.status_code == 426 and sunset.json()["code"] == "NONEXISTENT_VERSION"
    assert requests.get(url, headers={**auth, **version, **protocol}).status_code == 200
    raw_urn = url.replace("%3A", ":")
    assert requests.get(raw_urn, headers={**auth, **version, **protocol}).status_code == 400


def test_settings_follow_the_reference() -> None:
    base = {"ad_account_id": "urn:li:sponsoredAccount:123", "segment_name": " s "}
    settings = LinkedInSettings(**base)
    assert (settings.ad_account_id, settings.segment_name) == ("123", "s")
    assert (settings.audience_type, settings.dmp_segment_mode, settings.ignore_invalid_records) == (
        "users",
        "add",
        False,
    )
    assert settings.batch_size == 5000
    with pytest.raises(ValueError, match=r"batch_size must be between 1 and 5,000 \(got 5001\)"):
        LinkedInSettings(**base, batch_size=5001)
    with pytest.raises(ValueError, match="ad account's number"):
        LinkedInSettings(ad_account_id="acme", segment_name="s")
    with pytest.raises(ValueError, match="segment_name is required"):
        LinkedInSettings(ad_account_id="1", segment_name="  ")
    with pytest.raises(ValueError):
        LinkedInResource(linkedin_version="2024-01")


def test_credentials_are_resource_fields_not_settings() -> None:
    with pytest.raises(ValueError, match="credential"):
        build_export(
            "x",
            destination="linkedin",
            query="select 1",
            settings={"ad_account_id": "1", "segment_name": "s", "refresh_token": "r"},
        )
    fields = LinkedInResource.model_fields
    for name in ("client_id", "client_secret", "refresh_token", "access_token"):
        assert fields[name].json_schema_extra == {"dagster__is_secret": True}


def test_from_env_reads_secrets_via_envvar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKEDIN_CLIENT_ID", "cid")
    monkeypatch.setenv("LINKEDIN_CLIENT_SECRET", "csecret")
    monkeypatch.setenv("LINKEDIN_REFRESH_TOKEN", "rtoken")
    monkeypatch.delenv("LINKEDIN_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("LINKEDIN_VERSION", "202609")
    raw = LinkedInResource.from_env()
    # The config holds references to the environment, never the secret values.
    assert isinstance(raw.refresh_token, dg.EnvVar) and isinstance(raw.client_secret, dg.EnvVar)
    assert "rtoken" not in str(raw.model_dump()) and "csecret" not in str(raw.model_dump())
    res = raw.process_config_and_initialize()
    assert (res.refresh_token, res.client_secret, res.access_token) == ("rtoken", "csecret", None)
    assert res.linkedin_version == "202609"
    assert res.hosts() == ("https://api.linkedin.com", "https://www.linkedin.com")


def test_client_is_isolated_per_retry_settings(sandbox_server: SandboxServer) -> None:
    res = resource(sandbox_server)
    assert isinstance(res.get_client(), LinkedInClient)
    assert res.get_client() is res.get_client()


@pytest.mark.parametrize(
    ("query", "audience_type"),
    [("linkedin_contacts.sql", "users"), ("linkedin_companies.sql", "companies")],
)
def test_example_queries_over_sample_tables(
    sandbox_server: SandboxServer, query: str, audience_type: str
) -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "queries" / query
    result = run_export(
        resource(sandbox_server), path, audience_type=audience_type, ignore_invalid_records=True
    )
    assert result.success
    meta = metadata(result)
    assert meta["rows_read"] == 3000
    assert 0 < meta["rows_rejected"] < 100  # the sample tables hold a few broken rows on purpose
    assert meta["rows_accepted"] == meta["rows_valid"] == len(members(sandbox_server.sandbox))


def test_from_env_without_credentials_uses_the_sandbox(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "LINKEDIN_CLIENT_ID",
        "LINKEDIN_CLIENT_SECRET",
        "LINKEDIN_REFRESH_TOKEN",
        "LINKEDIN_ACCESS_TOKEN",
        "LINKEDIN_API_URL",
        "LINKEDIN_OAUTH_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    res = LinkedInResource.from_env().process_config_and_initialize()
    assert res.hosts() == (sandbox_server.url, sandbox_server.url)
    assert res.get_client().find_segments(ACCOUNT, "none") == []
    assert res.segment_source_platform() == "SANDBOX"
    remote = LinkedInResource(api_url="https://api.linkedin.example")
    with pytest.raises(Exception, match="no access_token or refresh_token"):
        remote.current_token()
