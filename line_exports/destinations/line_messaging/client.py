"""The Messaging API client (one paced, retrying session) and the channel's resource.

Also what every message request shares, in one place: its retry key (:func:`retry_key`,
:func:`push_key_maker`), its headers (:func:`message_headers`), the request ID of the request
LINE accepted (:func:`accepted_request_id`) and LINE's error body read as a reason
(:func:`line_error`, :func:`refusal`). Push (threaded and ``aiohttp``), multicast, narrowcast,
broadcast and the rich-menu bulk calls use these.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import dagster as dg
from pydantic import Field, PrivateAttr

from line_exports.destination import ExportRun, content_key
from line_exports.destinations.line_messaging.auth import TokenProvider
from line_exports.destinations.line_messaging.settings import (
    API_HOST,
    AUDIENCE_TIMEOUT_SECONDS,
    DATA_HOST,
    LIMITS,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_TOKEN,
)
from line_exports.http import USER_AGENT, ApiError, HttpClient, RetrySettings, poll
from line_exports.id_text import IdText
from line_exports.identities import audience_name_key
from line_exports.secret_fields import SecretField


def retry_key(run: ExportRun, *parts: Any) -> str:
    """``X-Line-Retry-Key``: a UUID hashed from the export, its run scope and what is sent."""
    digest = bytes.fromhex(content_key(run.ledger.export, run.ledger.scope, *parts))
    return str(uuid.UUID(bytes=digest[:16], version=5))


def push_key_maker(run: ExportRun, options: dict[str, Any]) -> Callable[[str, str], str]:
    """``retry_key(run, "push", to, messages, options)`` for many pushes, the same UUIDs
    computed from a hash of the common parts made once (the key of each push was a third of
    its CPU)."""
    head = hashlib.sha256()
    for part in (run.ledger.export, run.ledger.scope, "push"):
        head.update(json.dumps(part).encode() + b"\x1f")
    tail = b"\x1f" + json.dumps(options, sort_keys=True, default=str).encode() + b"\x1f"

    def key(to: str, messages: str) -> str:
        digest = head.copy()
        digest.update(json.dumps(to).encode() + b"\x1f" + json.dumps(messages).encode() + tail)
        return str(uuid.UUID(bytes=digest.digest()[:16], version=5))

    return key


def message_headers(key: str) -> dict[str, str]:
    """A message request's own headers: a JSON body and its ``X-Line-Retry-Key`` (the HTTP
    layer adds ``User-Agent`` and the bearer token)."""
    return {"Content-Type": "application/json", "X-Line-Retry-Key": key}


def accepted_request_id(status: int, headers: Mapping[str, str]) -> str | None:
    """The ID of the request LINE accepted: a 409 (retry key already accepted) names it in
    ``X-Line-Accepted-Request-Id``, a 2xx in its own ``X-Line-Request-Id`` ("Retrying a failed
    API request"). ``headers`` is case-insensitive (requests' or aiohttp's)."""
    name = "x-line-accepted-request-id" if status == 409 else "x-line-request-id"
    return headers.get(name) or None


def line_error(error: ApiError) -> tuple[str, list[str]]:
    """LINE's error ``message`` and its ``details`` as text, from a failed call's (redacted) body.

    Any body shape is reported, never a crash: per ``messaging-api.yml``'s ``ErrorResponse``
    each detail is ``{message, property}``; a detail of another shape is kept as its JSON."""
    try:
        body = json.loads(error.body)
    except ValueError:
        return error.body[:300], []
    if not isinstance(body, dict):
        return error.body[:300], []
    raw = body.get("details")
    details = []
    for item in raw if isinstance(raw, list) else [] if raw is None else [raw]:
        if isinstance(item, dict) and ("message" in item or "property" in item):
            where = str(item.get("property") or "")
            details.append(
                f"{where}: {item.get('message', '')}" if where else str(item.get("message", ""))
            )
        else:
            details.append(json.dumps(item, ensure_ascii=False)[:300])
    return str(body.get("message", "")), details


def retry_pause(retry: RetrySettings, attempt: int, retry_after: float | None) -> float:
    """Seconds before retry ``attempt + 1`` (from 0): the answer's ``Retry-After`` when it gave
    one, else ``initial_retry_wait`` doubled per attempt; never over ``max_retry_wait``."""
    pause = retry.initial_retry_wait * 2**attempt if retry_after is None else retry_after
    return min(max(pause, 0.0), retry.max_retry_wait)


def refusal(error: ApiError) -> str:
    """LINE's reason for a refused request: its ``message`` and ``details`` on one line."""
    message, details = line_error(error)
    return (message + " " + "; ".join(details)).strip()


MONTHLY_LIMIT = "monthly limit"  # in LINE's 429 message: "You have reached your monthly limit."


def monthly_limit(error: ApiError) -> bool:
    """LINE's 429 for the month's message quota (never retried: it lasts until next month)."""
    return error.status == 429 and MONTHLY_LIMIT in error.body.lower()


class LineHttp(HttpClient):
    """The shared HTTP client, except that LINE's monthly-limit 429 is final, not retried."""

    def _error(self, method: str, path: str, response: Any) -> ApiError:
        error = super()._error(method, path, response)
        if monthly_limit(error):
            error.retryable = False
            error.retry_after = None
        return error


QUOTA_READ_SECONDS = 120.0
"""Longest time spent retrying one quota read (with the default 15 s first wait: 4 tries)."""
_QUOTA_SPEC = "https://github.com/line/line-openapi/blob/main/messaging-api.yml"


def _not_as_specified(path: str, what: str, body: str) -> ApiError:
    return ApiError(
        f"LINE's quota answer is not what the spec says: GET {path} {what} "
        f"({_QUOTA_SPEC}); got {body[:200]!r}",
        method="GET",
        path=path,
        body=body,
        retryable=False,
    )


def _json_object(path: str, body: str) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise _not_as_specified(path, "should answer a JSON object", body)
    return answer


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_quota(body: str) -> int | None:
    """``GET /v2/bot/message/quota`` (``MessageQuotaResponse``): ``type`` ``none`` (no target
    limit: None) or ``limited`` with ``value``, an integer >= 0. Else a final :class:`ApiError`."""
    path = "/v2/bot/message/quota"
    answer = _json_object(path, body)
    kind = answer.get("type")
    if kind == "none":
        return None
    if kind == "limited" and _count(answer.get("value")):
        return int(answer["value"])
    raise _not_as_specified(
        path, 'should hold "type": "none", or "type": "limited" and an integer "value"', body
    )


def parse_quota_consumption(body: str) -> int:
    """``GET /v2/bot/message/quota/consumption`` (``QuotaConsumptionResponse``): ``totalUsage``,
    an integer >= 0. Else a final :class:`ApiError`."""
    path = "/v2/bot/message/quota/consumption"
    answer = _json_object(path, body)
    if not _count(answer.get("totalUsage")):
        raise _not_as_specified(path, 'should hold an integer "totalUsage"', body)
    return int(answer["totalUsage"])


class LineMessagingClient:
    """The Messaging API over one paced, retrying session (``api.line.me`` and ``api-data``)."""

    def __init__(
        self,
        http: HttpClient,
        data_base: str,
        tokens: TokenProvider,
        poll_seconds: float = 5.0,
        quota_read_seconds: float = QUOTA_READ_SECONDS,
    ) -> None:
        self.http = http
        self.data_base = data_base.rstrip("/")
        self.tokens = tokens
        self.poll_seconds = poll_seconds
        self.quota_read_seconds = quota_read_seconds

    def with_retry(self, retry: RetrySettings) -> LineMessagingClient:
        """This client (same connections, pacing, stats and token) making ``retry``'s attempts
        instead: a resend late in its retry key's 24 hours makes fewer
        (:func:`.sending.resend_retry`). ``self`` when ``retry`` is its own."""
        if retry == self.http.retry:
            return self
        http = copy.copy(self.http)
        http.retry = retry
        return LineMessagingClient(
            http, self.data_base, self.tokens, self.poll_seconds, self.quota_read_seconds
        )

    def begin_run(self) -> None:
        self.tokens.begin_run()

    # quota (messaging-api.yml: getMessageQuota, getMessageQuotaConsumption)
    def quota(self) -> tuple[int | None, int]:
        """(the month's target limit or None when ``type`` is ``none``, messages sent this month).

        Each read is retried on a transient error for at most ``quota_read_seconds`` in all
        (:meth:`_quota_get`); an answer of another shape than the spec's is a final
        :class:`ApiError` (:func:`parse_quota`, :func:`parse_quota_consumption`)."""
        limit = parse_quota(self._quota_get("/v2/bot/message/quota"))
        used = parse_quota_consumption(self._quota_get("/v2/bot/message/quota/consumption"))
        return limit, used

    def _quota_get(self, path: str) -> str:
        """GET ``path``'s body, retried on a transient error while the next try starts within
        ``quota_read_seconds`` of the first (pauses as :func:`retry_pause`); then a final
        :class:`ApiError` naming the attempts and the last error. The quota is read before
        anything is sent, so a channel whose quota endpoint keeps failing stops the run soon."""
        started, attempt = time.monotonic(), 0
        while True:
            try:
                response = self.http.request("GET", path, endpoint="quota", retry=False)
                return str(response.text)
            except ApiError as exc:
                if not exc.retryable:
                    raise
                pause = retry_pause(self.http.retry, attempt, exc.retry_after)
                attempt += 1
                elapsed = time.monotonic() - started
                if attempt > self.http.retry.max_retry or (
                    elapsed + pause > self.quota_read_seconds
                ):
                    raise ApiError(
                        f"LINE's quota read ({path}) failed {attempt} time(s) in {elapsed:.0f}s "
                        f"(bound: quota_read_seconds={self.quota_read_seconds:g}); last error: "
                        f"{exc}",
                        status=exc.status,
                        method="GET",
                        path=path,
                        body=exc.body,
                        retryable=False,
                    ) from None
                self.http.stats.retries += 1
                self.http.backoff(pause, exc)  # a stop request: raises exc

    def bot_user_id(self) -> str:
        """The channel's bot ``userId`` from ``GET /v2/bot/info`` (messaging-api.yml getBotInfo,
        ``BotInfoResponse.userId``, required): who this channel is, without its token (the
        account part of a sync store's name). An answer without one is a final
        :class:`ApiError`."""
        path = "/v2/bot/info"
        body = str(self.http.request("GET", path, endpoint="bot_info").text)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        user = answer.get("userId") if isinstance(answer, dict) else None
        if not isinstance(user, str) or not user.strip():
            raise ApiError(
                f'LINE\'s answer to GET {path} holds no "userId" (BotInfoResponse requires it)',
                method="GET",
                path=path,
                body=body[:500],
            )
        return user

    # messages
    def send(
        self,
        kind: Literal["push", "multicast", "narrowcast", "broadcast"],
        body: bytes,
        key: str,
        ok_status: tuple[int, ...] = (200, 409),
    ) -> tuple[int, dict[str, Any]]:
        """One message request; (status, body with ``_request_id``: the accepted request's ID,
        see :func:`accepted_request_id`). 409 (key already accepted) is success."""
        response = self.http.request(
            "POST",
            f"/v2/bot/message/{kind}",
            endpoint=kind,
            ok_status=ok_status,
            data=body,
            headers=message_headers(key),
        )
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        answer["_request_id"] = accepted_request_id(response.status_code, response.headers)
        return response.status_code, answer

    def push_headers(self, key: str) -> dict[str, str]:
        """Every header of a push sent outside the HTTP layer (the ``aiohttp`` path)."""
        return {"User-Agent": USER_AGENT, **message_headers(key), **self.tokens.headers()}

    def validate(self, kind: Literal["push", "multicast"], messages_json: str) -> None:
        self.http.request(
            "POST",
            f"/v2/bot/message/validate/{kind}",
            endpoint=f"validate_{kind}",
            data=('{"messages":' + messages_json + "}").encode(),
            headers={"Content-Type": "application/json"},
        )

    # audiences
    def audience(self, audience_id: int) -> dict[str, Any]:
        return self.http.request(
            "GET", f"/v2/bot/audienceGroup/{audience_id}", endpoint="audience"
        ).json()

    def delete_audience(self, audience_id: int) -> None:
        """``DELETE /v2/bot/audienceGroup/{audienceGroupId}`` (manage-audience.yml)."""
        self.http.request("DELETE", f"/v2/bot/audienceGroup/{audience_id}", endpoint="audience")

    def audiences_named(self, name: str) -> list[dict[str, Any]]:
        """Audiences named ``name`` as LINE compares names, case-insensitively
        (:func:`~line_exports.identities.audience_name_key`: manage-audience.yml, "AUDIENCE and
        audience are considered identical"; white space counts): LINE's ``description`` filter
        also matches part of a name, so the answer is narrowed to the whole name."""
        wanted = audience_name_key(name)
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {
                "page": page,
                "size": 40,
                "description": name,
                "includesExternalPublicGroups": "false",
            }
            body = self.http.request(
                "GET", "/v2/bot/audienceGroup/list", endpoint="audience", params=params
            ).json()
            found.extend(
                a
                for a in body.get("audienceGroups", [])
                if audience_name_key(str(a.get("description", ""))) == wanted
            )
            if not body.get("hasNextPage"):
                return found
            page += 1

    def upload_json(
        self, ids: list[str], *, audience_id: int | None, name: str | None, is_ifa: bool, job: str
    ) -> dict[str, Any]:
        """Create (``audience_id`` None) or add to an audience with at most 10,000 IDs as JSON."""
        payload: dict[str, Any] = {"uploadDescription": job, "audiences": [{"id": i} for i in ids]}
        if audience_id is None:
            payload.update(description=name, isIfaAudience=is_ifa)
            method = "POST"
        else:
            payload["audienceGroupId"] = audience_id
            method = "PUT"
        response = self.http.request(
            method,
            "/v2/bot/audienceGroup/upload",
            endpoint="audience",
            ok_status=(200, 202),
            data=json.dumps(payload, separators=(",", ":")).encode(),
            headers={"Content-Type": "application/json"},
            retry=audience_id
            is not None,  # a create is never repeated blindly: see _create_audience
        )
        return response.json() if response.content else {}

    def upload_file(
        self,
        ids_file: bytes | Path,
        *,
        audience_id: int | None,
        name: str | None,
        is_ifa: bool,
        job: str,
    ) -> dict[str, Any]:
        """Create or add to an audience with a text file of at most 1,500,000 IDs (api-data host).

        A ``Path`` is streamed from disk by the HTTP layer (re-opened per attempt), so the
        file's ~51 MB never sit in memory."""
        form: dict[str, str] = {"uploadDescription": job}
        if audience_id is None:
            form.update(description=name or "", isIfaAudience="true" if is_ifa else "false")
            method = "POST"
        else:
            form["audienceGroupId"] = str(audience_id)
            method = "PUT"
        response = self.http.request(
            method,
            f"{self.data_base}/v2/bot/audienceGroup/upload/byFile",
            endpoint="audience",
            ok_status=(200, 202),
            data=form,
            files={"file": ("audience.txt", ids_file, "text/plain")},
            retry=audience_id
            is not None,  # a create is never repeated blindly: see _create_audience
        )
        return response.json() if response.content else {}

    def wait_audience(
        self,
        audience_id: int,
        jobs: set[str],
        timeout: float = AUDIENCE_TIMEOUT_SECONDS,
        between: Callable[[], None] = lambda: None,
    ) -> dict[str, Any]:
        """Poll until the audience is READY and our upload jobs (``jobs``: their descriptions)
        are FINISHED, calling ``between`` before each look (a run's progress: it raises when the
        run is asked to stop). Raises :class:`UploadJobsFailed` once each of them has ended and some
        FAILED (``manage-audience.yml``: jobStatus FAILED, with a failedType), an
        :class:`~line_exports.http.ApiError` when the audience itself FAILED or EXPIRED."""

        def ready() -> dict[str, Any] | None:
            between()
            body = self.audience(audience_id)
            group = body.get("audienceGroup", {})
            ours = [j for j in body.get("jobs", []) if j.get("description") in jobs]
            ended = len(ours) >= len(jobs) and all(
                j.get("jobStatus") in ("FINISHED", "FAILED") for j in ours
            )
            failed = {
                str(j["description"]): str(j.get("failedType"))
                for j in ours
                if j.get("jobStatus") == "FAILED"
            }
            if failed and ended:
                raise UploadJobsFailed(audience_id, failed, body)
            if group.get("status") in ("FAILED", "EXPIRED"):
                why = group.get("failedType") or group.get("status")
                raise ApiError(f"LINE audience {audience_id} upload failed: {why}")
            return body if ended and group.get("status") == "READY" else None

        return poll(
            ready, what=f"LINE audience {audience_id}", timeout=timeout, max_pause=self.poll_seconds
        )


class UploadJobsFailed(ApiError):
    """Upload jobs LINE ended FAILED while the others finished: ``failed`` {job description:
    its failedType}, ``audience`` the audience as last read (``GET
    /v2/bot/audienceGroup/{audienceGroupId}``). Their IDs never joined the audience."""

    def __init__(self, audience_id: int, failed: dict[str, str], audience: dict[str, Any]) -> None:
        kinds = ", ".join(sorted(set(failed.values())))
        super().__init__(f"LINE audience {audience_id} upload failed: {kinds}")
        self.failed = failed
        self.audience = audience
        self.audience_id = audience_id

    def reason(self, job: str) -> str:
        """What LINE said of ``job``, for its rows."""
        return f"LINE: LINE audience {self.audience_id} upload failed: {self.failed[job]}"


class LineMessagingResource(dg.ConfigurableResource):
    """Credentials and endpoint of one LINE Messaging API channel.

    ``auth_method: channel_access_token`` uses ``access_token`` (``dg.EnvVar``);
    ``stateless_token`` issues a 15-minute stateless token per run from ``client_id`` +
    ``client_secret`` (nothing stored, no per-channel count); ``short_lived_token`` issues a
    30-day token and reuses it across runs (an encrypted cache, see :mod:`.auth`). Leave ``access_token``/``client_secret`` and ``base_url`` empty to use
    the local sandbox (started on demand).
    """

    auth_method: Literal["channel_access_token", "stateless_token", "short_lived_token"] = Field(
        default="channel_access_token",
        description="channel_access_token (long-lived), stateless_token (v3, issued per run; "
        "preferred with client_id/client_secret) or short_lived_token (30 days, cached)",
    )
    access_token: str | None = SecretField("Channel access token (long-lived)")
    client_id: IdText | None = Field(
        default=None, description="Channel ID (stateless or short-lived token)"
    )
    client_secret: str | None = SecretField("Channel secret (stateless or short-lived token)")
    base_url: str | None = Field(
        default=None, description="Overrides https://api.line.me (a proxy, or the sandbox)"
    )
    data_base_url: str | None = Field(
        default=None,
        description="Overrides https://api-data.line.me (defaults to base_url when that is set)",
    )
    debug: bool = Field(
        default=False, description="Log request and response bodies (secrets redacted)"
    )
    poll_seconds: float = Field(
        default=5.0, gt=0, description="Longest pause between audience status polls"
    )
    cache_token: bool = Field(
        default=True, description="Reuse an issued short-lived token across runs until near expiry"
    )
    quota_read_seconds: float = Field(
        default=QUOTA_READ_SECONDS,
        gt=0,
        description="Longest time spent retrying a read of the monthly quota (a transient "
        "error) before the run fails, unretried",
    )
    _clients: dict[tuple[RetrySettings, int], LineMessagingClient] = PrivateAttr(
        default_factory=dict
    )

    @classmethod
    def from_env(cls) -> LineMessagingResource:
        """The real API when ``LINE_MESSAGING_ACCESS_TOKEN`` (or ``LINE_MESSAGING_CLIENT_ID`` and
        ``LINE_MESSAGING_CLIENT_SECRET``) is set, read via ``dg.EnvVar``; else the sandbox.
        ``LINE_MESSAGING_BASE_URL`` points both hosts at a proxy."""
        base = (
            dg.EnvVar("LINE_MESSAGING_BASE_URL")
            if os.environ.get("LINE_MESSAGING_BASE_URL")
            else None
        )
        if os.environ.get("LINE_MESSAGING_ACCESS_TOKEN"):
            return cls(access_token=dg.EnvVar("LINE_MESSAGING_ACCESS_TOKEN"), base_url=base)
        if os.environ.get("LINE_MESSAGING_CLIENT_ID") and os.environ.get(
            "LINE_MESSAGING_CLIENT_SECRET"
        ):
            return cls(
                auth_method="stateless_token",
                client_id=dg.EnvVar("LINE_MESSAGING_CLIENT_ID"),
                client_secret=dg.EnvVar("LINE_MESSAGING_CLIENT_SECRET"),
                base_url=base,
            )
        return cls(base_url=base)

    def endpoint(self) -> tuple[str, str, dict[str, str | None]]:
        """(API base, data base, credentials): the configured API, or the local sandbox."""
        creds: dict[str, str | None] = {
            "access_token": self.access_token,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        has_secret = bool(
            self.access_token if self.auth_method == "channel_access_token" else self.client_secret
        )
        if self.base_url:
            host = urlparse(self.base_url).hostname or ""
            local = host in ("127.0.0.1", "localhost", "::1")
            if not has_secret and not local:
                raise ValueError(
                    "LineMessagingResource: credentials are required for a non-local base_url"
                )
            if not has_secret:
                creds = {
                    "access_token": SANDBOX_TOKEN,
                    "client_id": SANDBOX_CLIENT_ID,
                    "client_secret": SANDBOX_CLIENT_SECRET,
                }
            return self.base_url, self.data_base_url or self.base_url, creds
        if has_secret:
            return API_HOST, self.data_base_url or DATA_HOST, creds
        from line_exports.sandbox import ensure_sandbox

        url = ensure_sandbox()
        return (
            url,
            url,
            {
                "access_token": SANDBOX_TOKEN,
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
            },
        )

    def get_client(
        self, retry: RetrySettings | None = None, pool_size: int = 10
    ) -> LineMessagingClient:
        retry = retry or RetrySettings()
        key = (retry, pool_size)
        if key not in self._clients:
            url, data_url, creds = self.endpoint()
            if self.auth_method != "channel_access_token" and not (
                creds["client_id"] and creds["client_secret"]
            ):
                raise ValueError(
                    f"LineMessagingResource: {self.auth_method} needs client_id and client_secret"
                )
            if self.auth_method == "channel_access_token" and not creds["access_token"]:
                raise ValueError("LineMessagingResource: channel_access_token needs access_token")
            tokens = TokenProvider(
                url,
                self.auth_method,
                creds["access_token"],
                creds["client_id"],
                creds["client_secret"],
                self.cache_token,
            )
            scope = f"line_messaging:{url}:{content_key(creds['access_token'] or creds['client_id'])[:12]}"
            http = LineHttp(
                url,
                auth_headers=tokens.headers,
                secrets=tokens.secrets,
                retry=retry,
                limits=LIMITS,
                limiter_scope=scope,
                on_unauthorized=tokens.reissue,
                debug=self.debug,
                pool_size=pool_size,
            )
            # The token call itself carries no bearer token and never triggers a reissue.
            tokens.http = HttpClient(
                url,
                secrets=tokens.secrets,
                retry=retry,
                limits=LIMITS,
                limiter_scope=scope,
                debug=False,
            )
            self._clients[key] = LineMessagingClient(
                http,
                data_url,
                tokens,
                poll_seconds=self.poll_seconds,
                quota_read_seconds=self.quota_read_seconds,
            )
        return self._clients[key]


def explain(exc: ApiError) -> str:
    if exc.status == 401:
        return (
            f"LINE refused the channel access token (401) even after one re-issue: {exc}. Check the "
            "LineMessagingResource credentials (a revoked or expired token, or a wrong channel secret)."
        )
    if exc.status == 403:
        return f"LINE answered 403: this channel's plan or account may not use this API. {exc}"
    return str(exc)
