"""``line-exports linkedin-auth``: LinkedIn's three-legged OAuth flow on a loopback redirect.

LinkedIn exports need a member's consent (scope ``rw_dmp_segments``, and ``r_ads`` to list the
ad accounts). This command opens LinkedIn's authorization page, receives the code on a one-shot
HTTP server on this machine (the redirect URL, which must be registered in the LinkedIn app),
exchanges it for tokens and prints them as environment variables to store in your secret
manager. The client secret is read from ``LINKEDIN_CLIENT_SECRET`` (or asked for), never a flag.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from line_exports.http import ApiError, HttpClient, RetrySettings
from line_exports.linkedin_oauth import (
    API_URL,
    AUTH_COMMAND,
    AUTHORIZE_PATH,
    DEFAULT_VERSION,
    OAUTH_URL,
    RESTLI_PROTOCOL,
    SCOPES,
    LinkedInAuthError,
    exchange_token,
)

DEFAULT_REDIRECT = "http://127.0.0.1:8765/linkedin/callback"
PAGE = (
    "<!doctype html><html><body style='font-family:sans-serif'><h2>{title}</h2><p>{text}</p>"
    "<p>You can close this tab and return to the terminal.</p></body></html>"
)


class AuthFlowError(Exception):
    """The authorization did not complete; the message says why."""


@dataclass
class Tokens:
    access_token: str
    expires_in: int
    refresh_token: str | None
    refresh_token_expires_in: int | None
    scope: str


@dataclass
class _Callback:
    params: dict[str, str] | None = None


def _callback_server(
    redirect_uri: str, state: str, got: _Callback, done: threading.Event
) -> HTTPServer:
    """A one-shot HTTP server on the redirect URI's loopback host and port."""
    parsed = urlparse(redirect_uri)
    if parsed.scheme != "http" or parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise AuthFlowError(
            f"the redirect URI must be http on this machine (127.0.0.1 or localhost), not {redirect_uri}"
        )
    path = parsed.path or "/"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            if url.path != path:
                self.send_error(404)
                return
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            if params.get("state") != state:
                self._page(
                    400, "Authorization refused", "The state did not match this login; start again."
                )
                return
            got.params = params
            if "code" in params:
                self._page(200, "LinkedIn authorized", "line-exports received the authorization.")
            else:
                self._page(
                    400,
                    "LinkedIn authorization failed",
                    params.get("error_description", params.get("error", "")),
                )
            done.set()

        def _page(self, status: int, title: str, text: str) -> None:
            body = PAGE.format(title=title, text=text).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep codes out of logs
            return

    host = "127.0.0.1" if parsed.hostname == "localhost" else parsed.hostname
    try:
        return HTTPServer((host, parsed.port or 80), Handler)
    except OSError as exc:
        raise AuthFlowError(
            f"cannot listen on {host}:{parsed.port}: {exc}; pick another --redirect-uri port"
        ) from None


def authorize_url(
    oauth_url: str, client_id: str, redirect_uri: str, state: str, scopes: tuple[str, ...]
) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "scope": " ".join(scopes),
        }
    )
    return f"{oauth_url.rstrip('/')}{AUTHORIZE_PATH}?{query}"


def run_flow(
    client_id: str,
    client_secret: str,
    *,
    redirect_uri: str = DEFAULT_REDIRECT,
    scopes: tuple[str, ...] = SCOPES,
    oauth_url: str = OAUTH_URL,
    open_url: Callable[[str], Any] = webbrowser.open,
    timeout: float = 300,
) -> Tokens:
    """Authorize in the browser, receive the code on the loopback redirect, exchange it."""
    state = secrets.token_urlsafe(24)  # CSRF protection for this one login, not an idempotency key
    got, done = _Callback(), threading.Event()
    server = _callback_server(redirect_uri, state, got, done)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        open_url(authorize_url(oauth_url, client_id, redirect_uri, state, scopes))
        if not done.wait(timeout):
            raise AuthFlowError(
                f"no answer from LinkedIn within {timeout:.0f}s; run `{AUTH_COMMAND}` again"
            )
    finally:
        server.shutdown()
        server.server_close()
    params = got.params or {}
    if "code" not in params:
        raise AuthFlowError(
            f"LinkedIn did not authorize: {params.get('error', 'unknown error')}: {params.get('error_description', '')}"
        )
    http = HttpClient(
        oauth_url,
        secrets=lambda: (client_secret, params["code"]),
        retry=RetrySettings(
            max_retry=2, initial_retry_wait=1, max_retry_wait=10, connection_timeout=60
        ),
    )
    answer = exchange_token(
        http,
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "client_secret": client_secret,
        },
    )
    return Tokens(
        access_token=str(answer["access_token"]),
        expires_in=int(answer.get("expires_in") or 0),
        refresh_token=answer.get("refresh_token"),
        refresh_token_expires_in=answer.get("refresh_token_expires_in"),
        scope=str(answer.get("scope") or ""),
    )


def ad_accounts(
    api_url: str, access_token: str, version: str = DEFAULT_VERSION
) -> list[dict[str, Any]]:
    """The ad accounts the member has a role on (needs ``r_ads``)."""
    http = HttpClient(
        api_url,
        auth_headers=lambda: {
            "Authorization": f"Bearer {access_token}",
            "LinkedIn-Version": version,
            "X-Restli-Protocol-Version": RESTLI_PROTOCOL,
        },
        secrets=lambda: (access_token,),
        retry=RetrySettings(
            max_retry=2, initial_retry_wait=1, max_retry_wait=10, connection_timeout=60
        ),
    )
    body = http.request(
        "GET",
        "/rest/adAccountUsers",
        endpoint="ad_account_users",
        params={"q": "authenticatedUser"},
    ).json()
    return list(body.get("elements") or [])


def handler(ns: argparse.Namespace) -> int:
    """Run the flow and print the tokens to store; 0 on success, 1 on refusal, 2 on bad input."""
    client_id = ns.client_id or os.environ.get("LINKEDIN_CLIENT_ID")
    if not client_id:
        print(
            "error: give --client-id or set LINKEDIN_CLIENT_ID (LinkedIn app > Auth > Client ID)",
            file=sys.stderr,
        )
        return 2
    client_secret = os.environ.get("LINKEDIN_CLIENT_SECRET")
    if not client_secret and sys.stdin.isatty():
        client_secret = getpass.getpass("LinkedIn Client Secret: ")
    if not client_secret:
        print(
            "error: set LINKEDIN_CLIENT_SECRET (never passed as a flag, so it stays out of shell history)",
            file=sys.stderr,
        )
        return 2
    scopes = tuple(s for s in ns.scope.replace(",", " ").split() if s)

    def show(url: str) -> None:
        print(f"Open this URL to authorize line-exports on LinkedIn:\n\n  {url}\n", flush=True)
        if not ns.no_browser:
            webbrowser.open(url)

    print(
        f"Waiting for LinkedIn to redirect to {ns.redirect_uri} (it must be listed in your app's "
        "Authorized redirect URLs).",
        flush=True,
    )
    try:
        tokens = run_flow(
            client_id,
            client_secret,
            redirect_uri=ns.redirect_uri,
            scopes=scopes,
            oauth_url=ns.oauth_url,
            open_url=show,
            timeout=ns.timeout,
        )
    except (AuthFlowError, LinkedInAuthError, ApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    days = tokens.expires_in // 86400
    print("Authorized. Store these as secrets (environment variables of the Dagster deployment):\n")
    print(f"LINKEDIN_CLIENT_ID={client_id}")
    if tokens.refresh_token:
        refresh_days = (tokens.refresh_token_expires_in or 0) // 86400
        print(f"LINKEDIN_REFRESH_TOKEN={tokens.refresh_token}    # valid {refresh_days} days")
    print(
        f"LINKEDIN_ACCESS_TOKEN={tokens.access_token}    # valid {days} days, refreshed automatically"
    )
    print(f"# granted scopes: {tokens.scope}")
    if "r_ads" in tokens.scope:
        try:
            accounts = ad_accounts(ns.api_url, tokens.access_token, ns.linkedin_version)
        except ApiError as exc:
            print(f"# could not list ad accounts: {exc}")
        else:
            for account in accounts:
                number = str(account.get("account", "")).rsplit(":", 1)[-1]
                print(f"# ad_account_id {number} (role {account.get('role', '?')})")
    return 0


def register(subparsers: Any) -> None:
    """Add ``linkedin-auth`` to the project's argparse CLI."""
    parser = subparsers.add_parser(
        "linkedin-auth",
        help="authorize a LinkedIn member and print the tokens to store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--client-id", default=None, help="LinkedIn app Client ID (default: $LINKEDIN_CLIENT_ID)"
    )
    parser.add_argument(
        "--redirect-uri",
        default=os.environ.get("LINKEDIN_REDIRECT_URI", DEFAULT_REDIRECT),
        help=f"loopback redirect URL registered in the app (default {DEFAULT_REDIRECT})",
    )
    parser.add_argument(
        "--scope", default=" ".join(SCOPES), help="scopes, space- or comma-separated"
    )
    parser.add_argument(
        "--oauth-url",
        default=os.environ.get("LINKEDIN_OAUTH_URL", OAUTH_URL),
        help="OAuth host (default https://www.linkedin.com; the sandbox for tests)",
    )
    parser.add_argument(
        "--api-url",
        default=os.environ.get("LINKEDIN_API_URL", API_URL),
        help="API host for listing ad accounts (default https://api.linkedin.com)",
    )
    parser.add_argument(
        "--linkedin-version",
        default=os.environ.get("LINKEDIN_VERSION", DEFAULT_VERSION),
        help="LinkedIn-Version header, YYYYMM",
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="print the URL instead of opening a browser"
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds to wait for the redirect"
    )
    parser.set_defaults(func=handler)


def main(argv: list[str] | None = None) -> int:
    """Run on its own: ``python -m line_exports.linkedin_auth linkedin-auth ...``."""
    parser = argparse.ArgumentParser(prog="line-exports")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(argv)
    return int(ns.func(ns))


if __name__ == "__main__":
    raise SystemExit(main())
