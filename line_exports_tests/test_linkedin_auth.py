"""``line-exports linkedin-auth``: the three-legged OAuth flow against the sandbox's endpoints."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys

import pytest
import requests

from line_exports.destinations.linkedin import LinkedInAuthError, LinkedInResource, exchange_token
from line_exports.http import HttpClient
from line_exports.linkedin_auth import AuthFlowError, main, run_flow
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.linkedin import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, store_of

# A stand-in for the user's browser: a real HTTP client that follows LinkedIn's redirect.
BROWSER = f'{shlex.quote(sys.executable)} -c "import requests, sys; requests.get(sys.argv[1], timeout=30)" %s'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redirect_uri() -> str:
    return f"http://127.0.0.1:{free_port()}/linkedin/callback"


def test_flow_gets_tokens_that_the_resource_can_refresh(sandbox_server: SandboxServer) -> None:
    tokens = run_flow(
        SANDBOX_CLIENT_ID,
        SANDBOX_CLIENT_SECRET,
        redirect_uri=redirect_uri(),
        oauth_url=sandbox_server.url,
        open_url=lambda url: requests.get(url, timeout=30),
        timeout=20,
    )
    assert tokens.refresh_token and tokens.access_token
    assert tokens.expires_in > 59 * 86400 and "rw_dmp_segments" in tokens.scope
    store = store_of(sandbox_server.sandbox)
    assert store.codes == {}  # the code was spent
    res = LinkedInResource(
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        refresh_token=tokens.refresh_token,
        api_url=sandbox_server.url,
    )
    assert res.get_client().find_segments("512345678", "none") == []
    assert store.token_counter == 2  # one from the code, one from the refresh


def test_spent_code_is_invalid_grant(sandbox_server: SandboxServer) -> None:
    redirect = redirect_uri()
    seen: list[str] = []

    def browser(url: str) -> None:
        answer = requests.get(url, allow_redirects=False, timeout=30)
        seen.append(answer.headers["location"])
        requests.get(answer.headers["location"], timeout=30)

    run_flow(
        SANDBOX_CLIENT_ID,
        SANDBOX_CLIENT_SECRET,
        redirect_uri=redirect,
        oauth_url=sandbox_server.url,
        open_url=browser,
        timeout=20,
    )
    assert seen[0].startswith(redirect + "?code=") and "&state=" in seen[0]
    code = seen[0].split("code=", 1)[1].split("&", 1)[0]
    http = HttpClient(sandbox_server.url)
    with pytest.raises(LinkedInAuthError, match="authorization code .*line-exports linkedin-auth"):
        exchange_token(
            http,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
            },
        )


def test_unknown_scope_is_refused(sandbox_server: SandboxServer) -> None:
    with pytest.raises(AuthFlowError, match="invalid_scope"):
        run_flow(
            SANDBOX_CLIENT_ID,
            SANDBOX_CLIENT_SECRET,
            redirect_uri=redirect_uri(),
            scopes=("w_everything",),
            oauth_url=sandbox_server.url,
            open_url=lambda url: requests.get(url, timeout=30),
            timeout=20,
        )


def test_callback_with_wrong_state_is_ignored() -> None:
    redirect = redirect_uri()

    def forged(_: str) -> None:
        answer = requests.get(f"{redirect}?code=stolen&state=not-ours", timeout=30)
        assert answer.status_code == 400

    with pytest.raises(AuthFlowError, match="no answer from LinkedIn"):
        run_flow(
            "id",
            "secret",
            redirect_uri=redirect,
            oauth_url="http://127.0.0.1:9",
            open_url=forged,
            timeout=1,
        )


def _cli(server: SandboxServer, secret: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BROWSER": BROWSER, "LINKEDIN_CLIENT_SECRET": secret}
    env.pop("LINKEDIN_CLIENT_ID", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "line_exports.linkedin_auth",
            "linkedin-auth",
            "--client-id",
            SANDBOX_CLIENT_ID,
            "--redirect-uri",
            redirect_uri(),
            "--oauth-url",
            server.url,
            "--api-url",
            server.url,
            "--timeout",
            "20",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_cli_prints_tokens_and_ad_accounts(sandbox_server: SandboxServer) -> None:
    done = _cli(sandbox_server, SANDBOX_CLIENT_SECRET)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert (
        "LINKEDIN_REFRESH_TOKEN=AQX-sandbox-" in out and "LINKEDIN_ACCESS_TOKEN=AQV-sandbox-" in out
    )
    assert "ad_account_id 512345678" in out
    assert SANDBOX_CLIENT_SECRET not in out + done.stderr
    refresh = out.split("LINKEDIN_REFRESH_TOKEN=", 1)[1].split()[0]
    assert refresh in store_of(sandbox_server.sandbox).refresh_tokens


def test_cli_wrong_secret_and_missing_client_id(
    sandbox_server: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    done = _cli(sandbox_server, "wrong-secret")
    assert done.returncode == 1 and "invalid_client" in done.stderr
    assert "wrong-secret" not in done.stderr + done.stdout
    monkeypatch.delenv("LINKEDIN_CLIENT_ID", raising=False)
    assert main(["linkedin-auth", "--no-browser"]) == 2
    assert "LINKEDIN_CLIENT_ID" in capsys.readouterr().err


def test_token_without_dmp_scope_is_forbidden(sandbox_server: SandboxServer) -> None:
    tokens = run_flow(
        SANDBOX_CLIENT_ID,
        SANDBOX_CLIENT_SECRET,
        redirect_uri=redirect_uri(),
        scopes=("r_ads",),
        oauth_url=sandbox_server.url,
        open_url=lambda url: requests.get(url, timeout=30),
        timeout=20,
    )
    res = LinkedInResource(access_token=tokens.access_token, api_url=sandbox_server.url)
    with pytest.raises(Exception, match="rw_dmp_segments scope"):
        res.get_client().find_segments("512345678", "none")
