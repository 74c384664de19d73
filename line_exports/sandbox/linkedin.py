"""LinkedIn's Marketing API (DMP segments) and OAuth 2.0 endpoints, faked faithfully.

Both hosts live on the one sandbox server: ``/oauth/v2/authorization`` and
``/oauth/v2/accessToken`` (www.linkedin.com) and ``/rest/...`` (api.linkedin.com). As at
LinkedIn: every API call needs ``Authorization: Bearer``, ``LinkedIn-Version: YYYYMM`` (400
without it, 426 for a version that is sunset or does not exist yet) and
``X-Restli-Protocol-Version: 2.0.0``; URNs in query strings must be URL-encoded; a new segment
answers 404 for a short while; BATCH_CREATE takes at most 5,000 elements and answers 200 with one
status per element; /users and /companies are limited per member per minute (429). A segment is
BUILDING until ``build_seconds`` (sandbox clock, ``/_sandbox/clock``) after its first upload, then
READY with ``matchedCount``/``audienceSize``: the members matched, ``match_rate`` of them, each
drawn once from a hash (``PUT /_sandbox/linkedin/matching`` sets both).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.identities import is_blank, name_keys
from line_exports.linkedin_ids import (
    COMPANY_DOMAINS,
    COMPANY_NAME,
    ID_PATTERNS,
    companies_alike,
    company_match_keys,
)
from line_exports.sandbox.clock import clock_of
from line_exports.sandbox.core import DEFAULT_TOKENS, Sandbox

MAX_ELEMENTS = 5_000
USERS_PER_MINUTE = 600
COMPANIES_PER_MINUTE = 300
ACCESS_TOKEN_SECONDS = 60 * 24 * 3600
REFRESH_TOKEN_SECONDS = 365 * 24 * 3600
CODE_SECONDS = 30 * 60
ACTIVE_VERSION_MONTHS = 12
KNOWN_SCOPES = {"rw_dmp_segments", "r_ads", "rw_ads", "r_ads_reporting", "r_organization_social"}
SANDBOX_CLIENT_ID = "sandbox-linkedin-client"
SANDBOX_CLIENT_SECRET = "sandbox-linkedin-secret"
SANDBOX_REFRESH_TOKEN = "sandbox-linkedin-refresh"
SANDBOX_MEMBER = "urn:li:person:sandbox0"
SANDBOX_ACCOUNTS = (512345678, 512345679)
USER_ID_TYPES = ID_PATTERNS  # the exporter's rules check the same forms (one definition)
USER_TEXT_LIMITS = {"firstName": 35, "lastName": 35, "title": 50, "company": 50}
COMPANY_FIELDS = ("companyName", "companyWebsiteDomain", "companyEmailDomain", "organizationUrn")
ACCOUNT_URN = re.compile(r"urn:li:sponsoredAccount:([0-9]+)")
VERSION = re.compile(r"(20[0-9]{2})(0[1-9]|1[0-2])(?:\.[0-9]{2})?")


@dataclass
class Token:
    member: str
    client_id: str
    expires_at: float
    scopes: tuple[str, ...] = ("rw_dmp_segments", "r_ads")
    issued_at: float = field(default_factory=time.time)


@dataclass
class Segment:
    id: int
    name: str
    account: int
    type: str
    description: str
    source_platform: str
    created: float
    available_at: float
    members: set[tuple[Any, ...]] = field(default_factory=set)
    last_modified: float = 0.0
    first_upload: float | None = None
    """When members first arrived, on the sandbox clock: the segment builds from then."""

    def view(self, now: float, build_seconds: float, match_rate: float) -> dict[str, Any]:
        """The segment as ``GET /rest/dmpSegments/{id}`` answers it: its LINKEDIN destination is
        ``BUILDING`` until ``build_seconds`` after the first upload (LinkedIn: up to 48 hours),
        then ``READY`` with ``matchedCount`` and ``audienceSize`` (absent while building)."""
        millis = int(self.created * 1000)
        destination: dict[str, Any] = {
            "destination": "LINKEDIN",
            "destinationSegmentId": f"urn:li:adSegment:{self.id}",
            "created": millis,
            "lastModified": int((self.last_modified or self.created) * 1000),
            "status": "BUILDING",
        }
        if self.first_upload is not None and now - self.first_upload >= build_seconds:
            matched = sum(1 for m in self.members if _matches(m, match_rate))
            destination.update(status="READY", matchedCount=matched, audienceSize=matched)
        return {
            "id": self.id,
            "name": self.name,
            "account": f"urn:li:sponsoredAccount:{self.account}",
            "type": self.type,
            "accessPolicy": "PRIVATE",
            "sourcePlatform": self.source_platform,
            "description": self.description,
            "destinations": [destination],
            "inputCount": len(self.members),
            "created": millis,
            "lastModified": int((self.last_modified or self.created) * 1000),
        }


def _matches(member: tuple[Any, ...], match_rate: float) -> bool:
    """Whether LinkedIn finds a member behind these IDs: a fixed draw per member."""
    digest = hashlib.sha256(repr(member).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < match_rate


@dataclass
class LinkedInStore:
    """What the fake LinkedIn holds: apps, tokens, ad accounts, segments and their members."""

    clients: dict[str, str] = field(
        default_factory=lambda: {SANDBOX_CLIENT_ID: SANDBOX_CLIENT_SECRET}
    )
    refresh_tokens: dict[str, Token] = field(default_factory=dict)
    access_tokens: dict[str, Token] = field(default_factory=dict)
    codes: dict[str, tuple[str, str, tuple[str, ...], float]] = field(default_factory=dict)
    accounts: set[int] = field(default_factory=lambda: set(SANDBOX_ACCOUNTS))
    segments: dict[int, Segment] = field(default_factory=dict)
    refused_values: set[str] = field(default_factory=set)
    """idValues / company names the sandbox answers with an element-level 400 (tests provoke it)."""
    unavailable_values: set[str] = field(default_factory=set)
    """idValues / company names the sandbox answers with an element-level 500 (a transient
    server error for that element; tests provoke it)."""
    access_token_seconds: float = ACCESS_TOKEN_SECONDS
    not_found_seconds: float = 1.0
    token_propagation_seconds: float = 0.0
    """How long a newly minted access token is still refused (401, serviceErrorCode 65602), as
    LinkedIn does for a few seconds after a refresh while the token propagates (tests set it)."""
    """How long a new segment answers 404 to /users and /companies (LinkedIn: about 5 s)."""
    rate_window_seconds: float = 60.0
    build_seconds: float = 3600.0
    """How long a segment stays BUILDING after its first upload (sandbox clock)."""
    match_rate: float = 0.7
    """The share of members LinkedIn matches (each member drawn once, deterministically)."""
    next_id: int = 10_800
    token_counter: int = 0
    batch_requests: int = 0
    elements_received: int = 0
    elements_refused: int = 0
    batches: list[list[Any]] = field(default_factory=list)
    """Every BATCH_CREATE's elements as received, in order (tests read what was sent)."""

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


UNAVAILABLE = {"status": 500, "error": {"status": 500, "message": "Internal Server Error"}}
"""An element-level server error (LinkedIn's batch answers carry one status per element)."""


def _element_values(element: dict[str, Any]) -> list[str]:
    """The idValues and company fields of an element (what ``unavailable_values`` matches)."""
    ids = element.get("userIds")
    values = [u.get("idValue") for u in ids if isinstance(u, dict)] if isinstance(ids, list) else []
    values += [element.get(k) for k in COMPANY_FIELDS]
    return [v for v in values if isinstance(v, str)]


def _remove_ids(members: set[tuple[Any, ...]], ids: set[tuple[str, str]]) -> None:
    """A REMOVE element takes each of its userIds out of the segment, whichever element added
    it: LinkedIn's DMP Segment Users page speaks of adding and removing IDs ("a 201 is returned
    if you add the same ID again or remove an already deleted ID") and matches a user by any
    of them, so a REMOVE naming an ID another element added takes it from that member too
    (the safe reading where the page says no more). A member left with no ID is gone."""
    for member in [m for m in members if m[0] == "ids" and ids & set(m[1:])]:
        members.discard(member)
        left = tuple(i for i in member[1:] if i not in ids)
        if left:
            members.add(("ids", *left))


COMPANY_COLUMNS = dict(
    zip(
        ("companyName", "companyWebsiteDomain", "companyEmailDomain"),
        (COMPANY_NAME, *COMPANY_DOMAINS),
        strict=True,
    )
)
"""A company element's field -> the query column it comes from (what names the company)."""


def _remove_companies(members: set[tuple[Any, ...]], elements: list[dict[str, Any]]) -> None:
    """REMOVE elements take out every company member they name alike: one sharing a name,
    compared as names, or any domain (:func:`~line_exports.linkedin_ids.companies_alike`, one
    definition with the exporter's mirror), or the same organizationUrn. LinkedIn matches a
    company by its name or a domain and does not say what a REMOVE takes out beyond the element
    itself; the sandbox assumes the most (the safe reading, as for userIds), so a REMOVE that
    would take out a company a current row still names shows. One pass over the members for a
    run of consecutive REMOVEs."""
    import pyarrow as pa

    if not elements:
        return
    named = [
        company_match_keys(column, pa.array([e.get(field) for e in elements], pa.string()))
        for field, column in COMPANY_COLUMNS.items()
    ]
    keys = pa.concat_arrays(named).drop_null().unique()
    urns = {e.get("organizationUrn") for e in elements} - {None}
    companies = [m for m in members if m[0] == "company"]
    held = {
        column: pa.array([m[1 + i] for m in companies], pa.string())
        for i, column in enumerate(COMPANY_COLUMNS.values())
    }
    alike = companies_alike(held, keys) if companies else []
    for member, hit in zip(companies, alike, strict=True):
        if hit or member[1 + len(COMPANY_COLUMNS)] in urns:
            members.discard(member)


def _names_matched(members: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Name-only user members (``("name", first, last, company, title, country)``) as LinkedIn
    matches them: the names as :func:`~line_exports.identities.name_keys` keys them (the
    exporter's duplicate check and sync key), the country as sent (a checked code)."""
    import pyarrow as pa

    names = [
        name_keys(pa.array([m[i] for m in members], pa.string())).to_pylist() for i in range(1, 5)
    ]
    return list(zip(*names, [m[5] for m in members], strict=True))


def _remove_names(members: set[tuple[Any, ...]], removed: list[tuple[Any, ...]]) -> None:
    """REMOVE elements of users with no ID take out every name-only member they name alike
    (:func:`_names_matched`): to the exporter ``Dan Ng`` and ``dan NG `` are one person, so a
    REMOVE of one takes the other out too (the safe reading, as for companies and userIds).
    One pass over the members for a run of consecutive REMOVEs."""
    if not removed:
        return
    wanted = set(_names_matched(removed))
    named = [m for m in members if m[0] == "name"]
    for member, match in zip(named, _names_matched(named), strict=True):
        if match in wanted:
            members.discard(member)


def store_of(sandbox: Sandbox) -> LinkedInStore:
    def make() -> LinkedInStore:
        store = LinkedInStore(not_found_seconds=max(0.1, sandbox.job_seconds * 4))
        store.refresh_tokens[SANDBOX_REFRESH_TOKEN] = Token(
            SANDBOX_MEMBER, SANDBOX_CLIENT_ID, time.time() + REFRESH_TOKEN_SECONDS
        )
        return store

    return sandbox.store("linkedin", make)


def active_versions(now: datetime | None = None) -> tuple[str, str]:
    """(oldest, newest) YYYYMM LinkedIn serves: the last twelve monthly versions."""
    now = now or datetime.now(timezone.utc)
    months = now.year * 12 + now.month - 1
    oldest = months - (ACTIVE_VERSION_MONTHS - 1)
    return f"{oldest // 12}{oldest % 12 + 1:02d}", f"{now.year}{now.month:02d}"


def _api_error(
    status: int, message: str, code: str | None = None, service_code: int | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "message": message}
    if code:
        body["code"] = code
    if service_code is not None:
        body["serviceErrorCode"] = service_code
    return JSONResponse(body, status_code=status)


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _is_loopback(uri: str) -> bool:
    parsed = urlparse(uri)
    return parsed.scheme == "http" and (parsed.hostname or "") in ("127.0.0.1", "localhost", "::1")


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    store = store_of(sandbox)
    clock = clock_of(sandbox)

    def view(segment: Segment) -> dict[str, Any]:
        with sandbox.lock:
            return segment.view(clock.now(), store.build_seconds, store.match_rate)

    async def matching(request: Request) -> Response:
        """Admin: ``{"build_seconds": s, "match_rate": r}`` (either) sets how segments build."""
        body = await request.json()
        with sandbox.lock:
            for name in ("build_seconds", "match_rate"):
                if name in body:
                    setattr(store, name, float(body[name]))
            return JSONResponse(
                {"build_seconds": store.build_seconds, "match_rate": store.match_rate}
            )

    def mint(member: str, client_id: str, scopes: tuple[str, ...]) -> tuple[str, Token]:
        with sandbox.lock:
            store.token_counter += 1
            token = f"AQV-sandbox-{store.token_counter}-{secrets.token_urlsafe(12)}"
            grant = Token(member, client_id, time.time() + store.access_token_seconds, scopes)
            store.access_tokens[token] = grant
        return token, grant

    def member_of(request: Request) -> tuple[Token | None, Response | None]:
        """The grant behind the bearer token, or the 401 LinkedIn answers."""
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return None, _api_error(401, "Empty oauth2 access token", "EMPTY_ACCESS_TOKEN", 65604)
        token = header[7:]
        if token in sandbox.tokens.get("linkedin", DEFAULT_TOKENS["linkedin"]):
            return Token(SANDBOX_MEMBER, SANDBOX_CLIENT_ID, float("inf")), None
        grant = store.access_tokens.get(token)
        if grant is None:
            return None, _api_error(401, "Invalid access token", "INVALID_ACCESS_TOKEN", 65600)
        if time.time() < grant.issued_at + store.token_propagation_seconds:
            return None, _api_error(401, "Invalid access token", "INVALID_ACCESS_TOKEN", 65602)
        if grant.expires_at <= time.time():
            return None, _api_error(
                401, "The token used in the request has expired", "EXPIRED_ACCESS_TOKEN", 65601
            )
        return grant, None

    def guard(
        request: Request, scopes: tuple[str, ...] = ("rw_dmp_segments",)
    ) -> tuple[str | None, Response | None]:
        """Auth (with one of ``scopes``), then the version and protocol headers /rest calls need."""
        grant, denied = member_of(request)
        if denied is not None or grant is None:
            return None, denied
        if not set(scopes) & set(grant.scopes):
            return None, _api_error(
                403,
                f"Not enough permissions to access: {request.url.path} (scope {scopes[0]})",
                "ACCESS_DENIED",
                100,
            )
        member = grant.member
        version = request.headers.get("linkedin-version")
        if not version:
            return None, _api_error(
                400,
                "A version must be present. Please specify a version by adding the LinkedIn-Version header.",
                "VERSION_MISSING",
            )
        match = VERSION.fullmatch(version)
        oldest, newest = active_versions()
        if not match or not (oldest <= match.group(1) + match.group(2) <= newest):
            shown = f"{version}01" if len(version) == 6 else version
            return None, _api_error(
                426, f"Requested version {shown} is not active", "NONEXISTENT_VERSION"
            )
        if request.headers.get("x-restli-protocol-version") != "2.0.0":
            return None, _api_error(
                400,
                "This API requires the header X-Restli-Protocol-Version: 2.0.0",
                "PROTOCOL_VERSION_MISSING",
            )
        return member, None

    # -- OAuth ----------------------------------------------------------------------------
    async def authorize(request: Request) -> Response:
        query = request.query_params
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        if client_id not in store.clients:
            return _oauth_error(400, "invalid_client", "The passed in client_id is invalid")
        if not redirect_uri or not _is_loopback(redirect_uri):
            return _oauth_error(
                400, "invalid_request", "The redirect_uri does not match the registered value"
            )
        state = query.get("state")
        sep = "&" if urlparse(redirect_uri).query else "?"

        def back(**params: str) -> Response:
            if state is not None:
                params["state"] = state
            return RedirectResponse(f"{redirect_uri}{sep}{urlencode(params)}", status_code=302)

        if query.get("response_type") != "code":
            return back(error="invalid_request", error_description="response_type must be code")
        scopes = tuple(s for s in re.split(r"[ ,]+", query.get("scope", "")) if s)
        unknown = [s for s in scopes if s not in KNOWN_SCOPES]
        if not scopes or unknown:
            return back(
                error="invalid_scope",
                error_description=f"Scope {unknown or ''} is not authorized for your application",
            )
        code = f"AQT-sandbox-{secrets.token_urlsafe(16)}"
        with sandbox.lock:
            store.codes[code] = (client_id, redirect_uri, scopes, time.time() + CODE_SECONDS)
        return back(code=code)

    async def access_token(request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return _oauth_error(
                400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
            )
        form = {
            k: v[0]
            for k, v in parse_qs((await request.body()).decode(), keep_blank_values=True).items()
        }
        grant_type = form.get("grant_type")
        for name in ("grant_type", "client_id", "client_secret"):
            if not form.get(name):
                return _oauth_error(
                    400, "invalid_request", f'A required parameter "{name}" is missing'
                )
        client_id = form["client_id"]
        if store.clients.get(client_id) != form["client_secret"]:
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        if grant_type == "authorization_code":
            for name in ("code", "redirect_uri"):
                if not form.get(name):
                    return _oauth_error(
                        400, "invalid_request", f'A required parameter "{name}" is missing'
                    )
            with sandbox.lock:
                issued = store.codes.pop(form["code"], None)
            if issued is None or issued[0] != client_id or issued[3] < time.time():
                return _oauth_error(
                    400,
                    "invalid_grant",
                    "The provided authorization grant is invalid, expired or revoked",
                )
            if issued[1] != form["redirect_uri"]:
                return _oauth_error(
                    400,
                    "invalid_grant",
                    "The redirect_uri does not match the authorization request",
                )
            member = SANDBOX_MEMBER
            refresh = f"AQX-sandbox-{secrets.token_urlsafe(16)}"
            grant = Token(member, client_id, time.time() + REFRESH_TOKEN_SECONDS, issued[2])
            with sandbox.lock:
                store.refresh_tokens[refresh] = grant
        elif grant_type == "refresh_token":
            refresh = form.get("refresh_token", "")
            if not refresh:
                return _oauth_error(
                    400, "invalid_request", 'A required parameter "refresh_token" is missing'
                )
            grant = store.refresh_tokens.get(refresh)
            if grant is None or grant.client_id != client_id or grant.expires_at <= time.time():
                return _oauth_error(
                    400,
                    "invalid_grant",
                    "The provided authorization grant or refresh token is invalid, expired or revoked",
                )
        else:
            return _oauth_error(
                400, "unsupported_grant_type", f"grant_type {grant_type} is not supported"
            )
        token, issued_token = mint(grant.member, client_id, grant.scopes)
        return JSONResponse(
            {
                "access_token": token,
                "expires_in": int(issued_token.expires_at - time.time()),
                # LinkedIn hands back the same refresh token; its lifetime does not restart.
                "refresh_token": refresh,
                "refresh_token_expires_in": int(grant.expires_at - time.time()),
                "scope": ",".join(grant.scopes),
            }
        )

    # -- ad accounts ------------------------------------------------------------------------
    async def ad_account_users(request: Request) -> Response:
        member, denied = guard(request, ("r_ads", "rw_ads"))
        if denied is not None:
            return denied
        if request.query_params.get("q") != "authenticatedUser":
            return _api_error(400, "Invalid query parameters passed to request")
        elements = [
            {"account": f"urn:li:sponsoredAccount:{a}", "user": member, "role": "ACCOUNT_MANAGER"}
            for a in sorted(store.accounts)
        ]
        return JSONResponse(
            {
                "elements": elements,
                "paging": {"start": 0, "count": len(elements), "total": len(elements)},
            }
        )

    # -- DMP segments ---------------------------------------------------------------------
    def account_of(urn: str | None) -> tuple[int | None, Response | None]:
        match = ACCOUNT_URN.fullmatch(urn or "")
        if not match:
            return None, _api_error(400, f"Invalid sponsored account urn {urn!r}", "INVALID_URN")
        account = int(match.group(1))
        if account not in store.accounts:
            return None, _api_error(
                403,
                f"Not enough permissions to access: urn:li:sponsoredAccount:{account}",
                "ACCESS_DENIED",
                100,
            )
        return account, None

    async def segments(request: Request) -> Response:
        _, denied = guard(request)
        if denied is not None:
            return denied
        if request.method == "GET":
            return find_segments(request)
        return await create_segment(request)

    def find_segments(request: Request) -> Response:
        raw_query = request.url.query
        if request.query_params.get("q") != "account":
            return _api_error(400, "Invalid query parameters passed to request", "ILLEGAL_ARGUMENT")
        if "urn:li:" in raw_query:
            # Rest.li 2.0: reserved characters of a URN in a query string must be encoded.
            return _api_error(
                400,
                "Invalid query parameters passed to request (URN not URL-encoded)",
                "ILLEGAL_ARGUMENT",
            )
        account, denied = account_of(request.query_params.get("account"))
        if denied is not None:
            return denied
        try:
            start = int(request.query_params.get("start", "0"))
            count = int(request.query_params["count"]) if "count" in request.query_params else None
        except ValueError:
            return _api_error(400, "start and count must be integers", "ILLEGAL_ARGUMENT")
        with sandbox.lock:
            found = sorted(
                (s for s in store.segments.values() if s.account == account), key=lambda s: s.id
            )
        page = found[start:] if count is None else found[start : start + count]
        return JSONResponse(
            {
                "elements": [view(s) for s in page],
                "paging": {
                    "start": start,
                    "count": count if count is not None else len(page),
                    "total": len(found),
                    "links": [],
                },
            }
        )

    async def create_segment(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _api_error(400, "Request body is not valid JSON", "ILLEGAL_ARGUMENT")
        if not isinstance(body, dict):
            return _api_error(400, "Request body must be a JSON object", "ILLEGAL_ARGUMENT")
        missing = [
            k
            for k in ("name", "sourcePlatform", "account", "type", "destinations")
            if not body.get(k)
        ]
        if missing:
            return _api_error(
                400, f"Missing required field(s): {', '.join(missing)}", "FIELD_MISSING"
            )
        account, denied = account_of(str(body["account"]))
        if denied is not None:
            return denied
        if body["type"] not in ("USER", "COMPANY"):
            return _api_error(
                400,
                f"Invalid segment type {body['type']!r} for streaming (USER or COMPANY)",
                "INVALID_VALUE",
            )
        if body.get("accessPolicy", "PRIVATE") != "PRIVATE":
            return _api_error(400, "accessPolicy must be PRIVATE", "INVALID_VALUE")
        destinations = body["destinations"]
        if not (
            isinstance(destinations, list)
            and destinations
            and all(
                isinstance(d, dict) and d.get("destination") == "LINKEDIN" for d in destinations
            )
        ):
            return _api_error(
                400, 'destinations must be [{"destination": "LINKEDIN"}]', "INVALID_VALUE"
            )
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", str(body["sourcePlatform"])):
            return _api_error(
                400, f"Invalid sourcePlatform {body['sourcePlatform']!r}", "INVALID_VALUE"
            )
        name = str(body["name"])
        if len(name) > 255:
            return _api_error(400, "name is longer than 255 characters", "INVALID_VALUE")
        now = clock.now()
        with sandbox.lock:
            segment = Segment(
                store.new_id(),
                name,
                int(account or 0),
                str(body["type"]),
                str(body.get("description") or ""),
                str(body["sourcePlatform"]),
                now,
                time.monotonic() + store.not_found_seconds,
            )
            store.segments[segment.id] = segment
        return Response(
            status_code=201,
            headers={"x-restli-id": str(segment.id), "Location": f"/dmpSegments/{segment.id}"},
        )

    async def one_segment(request: Request) -> Response:
        _, denied = guard(request)
        if denied is not None:
            return denied
        segment = store.segments.get(int(request.path_params["segment_id"]))
        if segment is None:
            return _api_error(404, "Not Found")
        return JSONResponse(view(segment))

    def user_problem(element: dict[str, Any]) -> tuple[str | None, tuple[Any, ...]]:
        ids = element.get("userIds") or []
        if not isinstance(ids, list):
            return "userIds must be an array", ()
        keys: list[tuple[str, str]] = []
        for user_id in ids:
            if not isinstance(user_id, dict):
                return "every userId needs idType and idValue", ()
            id_type, value = user_id.get("idType"), user_id.get("idValue")
            pattern = USER_ID_TYPES.get(str(id_type))
            if pattern is None:
                return f"Unsupported idType {id_type!r}", ()
            if (
                not isinstance(value, str)
                or not pattern.fullmatch(value)
                or value in store.refused_values
            ):
                return f"Invalid idValue for idType {id_type}", ()
            keys.append((str(id_type), value))
        for name, limit in USER_TEXT_LIMITS.items():
            value = element.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                return f"{name} must be a string of at most {limit} characters", ()
        country = element.get("country")
        if country is not None and not (
            isinstance(country, str) and re.fullmatch(r"[A-Z]{2}", country)
        ):
            return "country must be an ISO 3166 alpha-2 code", ()
        # A name of only white space names no one: the exporter's one-of rule (identities.blank,
        # one definition) and LinkedIn's "both firstName and lastName" alike.
        if not keys and (is_blank(element.get("firstName")) or is_blank(element.get("lastName"))):
            return "An element needs userIds or both firstName and lastName", ()
        if keys:
            return None, ("ids", *sorted(keys))
        return None, (
            "name",
            element.get("firstName"),
            element.get("lastName"),
            element.get("company"),
            element.get("title"),
            element.get("country"),
        )

    def company_problem(element: dict[str, Any]) -> tuple[str | None, tuple[Any, ...]]:
        values = {k: element.get(k) for k in COMPANY_FIELDS}
        # A value of only white space names no company: the exporter's one-of rule
        # (identities.blank, one definition); the reference: "At least one of these columns".
        if all(v is None or (isinstance(v, str) and is_blank(v)) for v in values.values()):
            return (
                "An element needs companyName, companyWebsiteDomain, companyEmailDomain or organizationUrn",
                (),
            )
        for name, value in values.items():
            if value is not None and not isinstance(value, str):
                return f"{name} must be a string", ()
            if isinstance(value, str) and value in store.refused_values:
                return f"Invalid {name}", ()
        return None, ("company", *(values[k] for k in COMPANY_FIELDS))

    async def segment_members(request: Request) -> Response:
        member, denied = guard(request)
        if denied is not None:
            return denied
        kind = request.url.path.rsplit("/", 1)[-1]
        limit = USERS_PER_MINUTE if kind == "users" else COMPANIES_PER_MINUTE
        wait = sandbox.over_limit(f"linkedin:{kind}:{member}", limit, store.rate_window_seconds)
        if wait is not None:
            # LinkedIn sends no Retry-After: clients must back off on their own.
            return _api_error(
                429,
                f"Resource level throttle USER MINUTE limit for calls to /dmpSegments/{kind} is reached",
                "TOO_MANY_REQUESTS",
                101,
            )
        segment = store.segments.get(int(request.path_params["segment_id"]))
        if segment is None or time.monotonic() < segment.available_at:
            return _api_error(404, "Not Found", "NOT_FOUND")
        expected = "USER" if kind == "users" else "COMPANY"
        if segment.type != expected:
            return _api_error(
                400,
                f"DMP segment {segment.id} is of type {segment.type}; /{kind} needs {expected}",
                "INVALID_VALUE",
            )
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _api_error(400, "Request body is not valid JSON", "ILLEGAL_ARGUMENT")
        if request.headers.get("x-restli-method", "").upper() != "BATCH_CREATE":
            if isinstance(body, dict) and "elements" in body:
                return _api_error(
                    400,
                    "A batch body needs the header X-RestLi-Method: BATCH_CREATE",
                    "ILLEGAL_ARGUMENT",
                )
            elements, single = [body], True
        else:
            elements, single = (body.get("elements") if isinstance(body, dict) else None), False
        if not isinstance(elements, list) or not elements:
            return _api_error(400, "elements must be a non-empty array", "ILLEGAL_ARGUMENT")
        if len(elements) > MAX_ELEMENTS:
            return _api_error(
                400,
                f"Batch size {len(elements)} exceeds the maximum of {MAX_ELEMENTS}",
                "BATCH_TOO_LARGE",
            )
        check = user_problem if kind == "users" else company_problem
        results: list[dict[str, Any]] = []
        removing: list[dict[str, Any]] = []  # consecutive company REMOVEs, applied together
        unnamed: list[tuple[Any, ...]] = []  # consecutive name-only user REMOVEs, likewise
        with sandbox.lock:
            store.batch_requests += 1
            store.elements_received += len(elements)
            store.batches.append(elements)
            for element in elements:
                if not isinstance(element, dict) or element.get("action") not in ("ADD", "REMOVE"):
                    problem, key = "action must be ADD or REMOVE", ()
                else:
                    problem, key = check(element)
                if problem:
                    store.elements_refused += 1
                    results.append({"status": 400, "error": {"status": 400, "message": problem}})
                    continue
                if store.unavailable_values & set(_element_values(element)):
                    store.elements_refused += 1
                    results.append(UNAVAILABLE)
                    continue
                if element["action"] == "ADD":
                    _remove_companies(segment.members, removing)
                    _remove_names(segment.members, unnamed)
                    removing, unnamed = [], []
                    segment.members.add(key)
                    if segment.first_upload is None:
                        segment.first_upload = clock.now()
                elif key[0] == "ids":
                    _remove_ids(segment.members, set(key[1:]))
                elif key[0] == "company":
                    removing.append(element)
                else:
                    unnamed.append(key)
                # LinkedIn answers 201 also for a repeated ADD or an already removed member.
                results.append({"status": 201})
            _remove_companies(segment.members, removing)
            _remove_names(segment.members, unnamed)
            segment.last_modified = time.time()
        if single:
            first = results[0]
            return (
                Response(status_code=201)
                if first["status"] == 201
                else JSONResponse(first["error"], status_code=400)
            )
        return JSONResponse({"elements": results})

    return [
        Route("/oauth/v2/authorization", authorize, methods=["GET"]),
        Route("/oauth/v2/accessToken", access_token, methods=["POST"]),
        Route("/rest/adAccountUsers", ad_account_users, methods=["GET"]),
        Route("/rest/dmpSegments", segments, methods=["GET", "POST"]),
        Route("/rest/dmpSegments/{segment_id:int}", one_segment, methods=["GET"]),
        Route("/rest/dmpSegments/{segment_id:int}/users", segment_members, methods=["POST"]),
        Route("/rest/dmpSegments/{segment_id:int}/companies", segment_members, methods=["POST"]),
        Route("/_sandbox/linkedin/matching", matching, methods=["PUT"]),
    ]


def summary(sandbox: Sandbox) -> dict[str, Any]:
    store = store_of(sandbox)
    with sandbox.lock:
        return {
            "segments": {
                f"{s.name} ({s.type}, {s.id})": len(s.members) for s in store.segments.values()
            },
            "batch_requests": store.batch_requests,
            "elements_received": store.elements_received,
            "elements_refused": store.elements_refused,
            "access_tokens_issued": store.token_counter,
        }
