"""Crescendo Lab MAAC: members with tags, and custom segments of LINE UIDs.

Settings follow TD's "LINE via Crescendo Lab" export (``maac-crescendo-export.txt``); requests
follow MAAC's OpenAPI (``maac-openapi.md``): ``POST /openapi/v1/member/import/`` takes at most
10,000 members and 10 MB, 15 a minute and one running at a time, and answers a task id to poll
until ``done``; ``POST /openapi/v1/custom_segment/`` (``PATCH .../{id}/`` to replace) takes a
CSV of at most 300,000 LINE UIDs and 25 MB.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Literal
from urllib.parse import urlparse

import dagster as dg
import pandas as pd
import requests
from pydantic import Field, PrivateAttr, field_validator, model_validator

from line_exports.create_once import create_once
from line_exports.destination import (
    DeliveryFailed,
    DeliveryReport,
    Destination,
    ExportRun,
    ExportSettings,
    NothingSent,
    ValidRows,
    content_key,
    stopped_report,
)
from line_exports.destinations import maac_tags
from line_exports.destinations.maac_mismatch import mismatch_uids
from line_exports.http import ApiError, HttpClient, RateLimit, RetrySettings, poll
from line_exports.identities import CUSTOMER_ID_NORMALIZE, EMAIL_NORMALIZE
from line_exports.ledger_request import LedgerRequest
from line_exports.maac_spec import (
    BIRTHDAY_MESSAGE,
    IMPORT_KEYS,
    IMPORT_MAX_BYTES,
    IMPORT_MAX_MEMBERS,
    IMPORT_PER_MINUTE,
    LINE_UID,
    MEMBER_FIELDS,
    NO_YEAR_ZERO,
    SEGMENT_MAX_BYTES,
    SEGMENT_MAX_UIDS,
)
from line_exports.outcomes import DELIVERY_UNKNOWN
from line_exports.phones import check_region
from line_exports.rules import ROW_NUMBER, Column, RuleSet, Unique, reject
from line_exports.secret_fields import SecretField
from line_exports.sync import RemovalReport, SyncSpec

HOSTS = {"global": "https://api.cresclab.com", "japan": "https://api.jp.cresclab.com"}
SANDBOX_TOKEN = "sandbox-maac-token"
LIMITS = {
    "member_import": RateLimit(requests=IMPORT_PER_MINUTE, per_seconds=60),
    **maac_tags.LIMITS,
}
TASK_TIMEOUT_SECONDS = 3600

# The reference's column tables, as rules.
MEMBER_COLUMNS = (
    Column(
        "line_uid",
        required_if={"import_key": "line_uid"},
        pattern=LINE_UID.pattern,
        pattern_message="is not a LINE user ID (U and 32 hex digits)",
    ),
    Column("line_display_name", max_length=255, aliases=("display_name",)),
    Column(
        "email",
        required_if={"import_key": "email"},
        normalize=EMAIL_NORMALIZE,
        format="email",
        sensitive=True,
    ),
    # MAAC: "聯絡人手機號碼" (the contact's mobile number), "use E.164; a 09XX number is converted
    # by the channel's region". We convert every number with default_region ourselves, so one
    # member is one key in every import, and refuse what is not a mobile (a landline).
    Column(
        "mobile",
        required_if={"import_key": "mobile"},
        normalize=("trim", "phone"),
        format="mobile",
        sensitive=True,
    ),
    Column("customer_id", required_if={"import_key": "customer_id"}, max_length=255),
    Column("gender", normalize=("trim", "lowercase"), allowed=("male", "female")),
    Column("birthday", format="iso_date", pattern=NO_YEAR_ZERO, pattern_message=BIRTHDAY_MESSAGE),
    Column("tags"),
)
SEGMENT_COLUMNS = (
    Column(
        "line_uid",
        required=True,
        pattern=LINE_UID.pattern,
        pattern_message="is not a LINE user ID (U and 32 hex digits)",
    ),
)
# customer_id as the import key: trimmed, so a key of only white space is none (``required``)
# and `` 123``/``123 ``/``123`` one key, sent trimmed (identities.CUSTOMER_ID_NORMALIZE: MAAC's
# reference is silent on white space in keys). As another field it travels as held (free text).
KEY_CUSTOMER_ID = replace(
    next(c for c in MEMBER_COLUMNS if c.name == "customer_id"), normalize=CUSTOMER_ID_NORMALIZE
)
# MAAC fails a whole import that holds an import key twice (duplicate_error); a segment file
# holds each LINE UID once.
MEMBER_UNIQUE = tuple(Unique((key,), required_if={"import_key": key}) for key in IMPORT_KEYS)
SEGMENT_UNIQUE = (Unique(("line_uid",)),)
DEFAULT_REGION = "TW"


class ImportKey(str, Enum):
    """The member field MAAC matches imported members by."""

    line_uid = "line_uid"
    customer_id = "customer_id"
    email = "email"
    mobile = "mobile"


class MaacSettings(ExportSettings):
    """``result_settings`` of a MAAC export, named as in the reference."""

    data_object: Literal["members", "segments"] = Field(
        description="Members (members) or Segments (segments)"
    )
    import_key: ImportKey | None = Field(
        None, description="Members: the column MAAC matches members by"
    )
    tags: str | None = Field(
        None, description="Members: comma-separated tags attached to every imported member"
    )
    segment_name: str | None = Field(None, description="Segments: segment name")
    segment_description: str | None = Field(None, description="Segments: segment description")
    skip_invalid_records: bool = Field(
        True, description="Skip invalid records and continue the job"
    )
    update_segment: bool = Field(
        False,
        description="Replace all members of the existing segment with this name instead of creating one",
    )
    batch_size: int = Field(
        IMPORT_MAX_MEMBERS,
        ge=1,
        le=IMPORT_MAX_MEMBERS,
        description="Members per import request (MAAC allows 10,000)",
    )
    default_region: str | None = Field(
        DEFAULT_REGION,
        description=(
            "Region (ISO 3166 alpha-2: TW, JP, TH, ...) that reads mobile numbers written without "
            "+ and country code; every mobile is sent in E.164"
        ),
    )

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return check_region(value)

    @model_validator(mode="after")
    def _required_by_data_object(self) -> MaacSettings:
        if self.data_object == "members":
            if not self.import_key:
                raise ValueError(
                    "import_key is required when data_object is members (line_uid, customer_id, email or mobile)"
                )
            if not self.tag_list():
                raise ValueError(
                    "tags is required when data_object is members (comma-separated tag names)"
                )
        elif not (self.segment_name or "").strip():
            raise ValueError("segment_name is required when data_object is segments")
        return self

    def tag_list(self) -> list[str]:
        return split_tags(self.tags or "")


def split_tags(text: str) -> list[str]:
    """Comma-separated tag names, trimmed, empties dropped, order kept."""
    return list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


class MaacClient:
    """MAAC's OpenAPI over one paced, retrying session."""

    def __init__(self, http: HttpClient, poll_seconds: float = 1.0) -> None:
        self.http = http
        self.poll_seconds = poll_seconds

    def import_members(
        self, import_key: str, members: list[dict[str, Any]], tags: list[str]
    ) -> int:
        """Start an import task; returns its id."""
        body = json.dumps(
            {"import_key": import_key, "data": members, "tags": tags}, ensure_ascii=False
        ).encode()
        if len(body) > IMPORT_MAX_BYTES:
            raise ValueError(
                f"import body is {len(body):,} bytes; MAAC takes at most {IMPORT_MAX_BYTES:,}"
            )
        response = self.http.request(
            "POST",
            "/openapi/v1/member/import/",
            endpoint="member_import",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        return int(response.json()["id"])

    def _wait(
        self,
        what: str,
        look: Callable[[], dict[str, Any] | None],
        timeout: float,
        between: Callable[[], None],
    ) -> dict[str, Any]:
        """Poll ``look`` (one GET; None while not ready) until it returns a value; ``between``
        is called before each look. :func:`~line_exports.http.poll` pauses between looks and
        raises :class:`ApiError` naming ``what`` past ``timeout`` seconds."""

        def check() -> dict[str, Any] | None:
            between()
            return look()

        return poll(check, what=what, timeout=timeout, max_pause=self.poll_seconds)

    def wait_import(
        self,
        task_id: int,
        timeout: float = TASK_TIMEOUT_SECONDS,
        between: Callable[[], None] = lambda: None,
    ) -> dict[str, Any]:
        """Poll the task until ``done``; returns its ``result`` (``success`` false on failure).
        ``between`` is called before each look (a run's progress: it raises when the run is
        asked to stop, so a signal ends the wait without another request)."""

        def done() -> dict[str, Any] | None:
            body = self.http.request(
                "GET", f"/openapi/v1/member/import/{task_id}/", endpoint="import_status"
            ).json()
            if body.get("status") != "done":
                return None
            result = body.get("result")
            return (
                result
                if isinstance(result, dict)
                else {k: v for k, v in body.items() if k != "status"}
            )

        return self._wait(f"MAAC import task {task_id}", done, timeout, between)

    def segments_named(self, name: str) -> list[dict[str, Any]]:
        """Segments whose name is exactly ``name`` (the list filter may match partially)."""
        found: list[dict[str, Any]] = []
        start: str | None = None
        while True:
            params = {"name": name, **({"start": start} if start else {})}
            page = self.http.request(
                "GET", "/openapi/v1/segment/", endpoint="segment_list", params=params
            ).json()
            found.extend(s for s in page.get("results", []) if s.get("name") == name)
            start = page.get("next")
            if not start:
                return found

    def new_segment(self, name: str, before: set[int]) -> dict[str, Any] | None:
        """The newest segment named ``name`` whose id is not in ``before``, or None."""
        fresh = [s for s in self.segments_named(name) if int(s["id"]) not in before]
        return max(fresh, key=lambda s: int(s["id"])) if fresh else None

    def create_segment(
        self, name: str, description: str | None, csv_bytes: bytes, before: set[int]
    ) -> dict[str, Any]:
        """Create a custom segment, once: MAAC makes another segment of the same name for each
        create it takes, so after an attempt whose answer was lost or was a 429/5xx, a segment
        of this name not in ``before`` (the ids there before the create) is that attempt's,
        and is returned instead of creating again (:func:`~line_exports.create_once`)."""
        form = {"name": name, **({"description": description} if description else {})}
        return create_once(
            self.http,
            lambda: self.http.request(
                "POST",
                "/openapi/v1/custom_segment/",
                endpoint="custom_segment",
                retry=False,
                data=form,
                files={"file": ("line_uids.csv", csv_bytes, "text/csv")},
            ).json(),
            lambda: self.new_segment(name, before),
            self.http.sleep,
        )

    def replace_segment(
        self, segment_id: int, description: str | None, csv_bytes: bytes
    ) -> dict[str, Any]:
        form = {"description": description} if description else {}
        return self.http.request(
            "PATCH",
            f"/openapi/v1/custom_segment/{segment_id}/",
            endpoint="custom_segment",
            data=form,
            files={"file": ("line_uids.csv", csv_bytes, "text/csv")},
        ).json()

    def wait_segment(
        self,
        segment_id: int,
        timeout: float = TASK_TIMEOUT_SECONDS,
        between: Callable[[], None] = lambda: None,
    ) -> dict[str, Any]:
        """Poll the segment until it is ready (status 2); returns it. ``between``: as
        :meth:`wait_import`'s."""

        def ready() -> dict[str, Any] | None:
            segment = self.http.request(
                "GET", f"/openapi/v1/segment/{segment_id}/", endpoint="segment_get"
            ).json()
            return segment if segment.get("status") == 2 else None

        return self._wait(f"MAAC segment {segment_id}", ready, timeout, between)


class MaacResource(dg.ConfigurableResource):
    """Credentials and endpoint of one MAAC account.

    ``api_token`` comes from ``dg.EnvVar("MAAC_API_TOKEN")``. Leave both ``api_token`` and
    ``base_url`` empty to use the local sandbox (started on demand); set ``region: japan`` for
    MAAC's Japan host, or ``base_url`` for a proxy.
    """

    api_token: str | None = SecretField("MAAC API token (MAAC > API > API token)")
    region: Literal["global", "japan"] = Field(
        default="global", description="global: api.cresclab.com, japan: api.jp.cresclab.com"
    )
    base_url: str | None = Field(
        default=None, description="Overrides the region's host (a proxy, or the sandbox)"
    )
    debug: bool = Field(
        default=False, description="Log request and response bodies (secrets redacted)"
    )
    poll_seconds: float = Field(
        default=1.0, gt=0, description="Longest pause between import status polls"
    )
    _clients: dict[RetrySettings, MaacClient] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_env(cls) -> MaacResource:
        """The real API when ``MAAC_API_TOKEN`` is set (via ``dg.EnvVar``), else the sandbox.

        ``MAAC_REGION`` (global | japan) and ``MAAC_BASE_URL`` are read when set.
        """
        if not os.environ.get("MAAC_API_TOKEN"):
            return cls(base_url=os.environ.get("MAAC_BASE_URL") or None)
        return cls(
            api_token=dg.EnvVar("MAAC_API_TOKEN"),
            region=os.environ.get("MAAC_REGION", "global"),  # type: ignore[arg-type]
            base_url=dg.EnvVar("MAAC_BASE_URL") if os.environ.get("MAAC_BASE_URL") else None,
        )

    def endpoint(self) -> tuple[str, str]:
        """(base URL, token): the configured API, or the local sandbox when neither is set."""
        if self.base_url:
            host = urlparse(self.base_url).hostname or ""
            if not self.api_token and host not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError("MaacResource: api_token is required for a non-local base_url")
            return self.base_url, self.api_token or SANDBOX_TOKEN
        if self.api_token:
            return HOSTS[self.region], self.api_token
        from line_exports.sandbox import ensure_sandbox

        return ensure_sandbox(), SANDBOX_TOKEN

    def get_client(self, retry: RetrySettings | None = None) -> MaacClient:
        retry = retry or RetrySettings()
        if retry not in self._clients:
            url, token = self.endpoint()
            http = HttpClient(
                url,
                auth_headers=lambda: {"Authorization": f"Bearer {token}"},
                secrets=lambda: (token,),
                retry=retry,
                limits=LIMITS,
                limiter_scope=f"maac:{url}:{content_key(token)[:12]}",
                debug=self.debug,
            )
            self._clients[retry] = MaacClient(http, poll_seconds=self.poll_seconds)
        return self._clients[retry]


def member_records(batch: pd.DataFrame) -> list[dict[str, Any]]:
    """Import ``data`` items: present fields only, ``tags`` as a list of names."""
    columns = [c for c in MEMBER_FIELDS if c in batch.columns]
    records = batch[columns].astype(object).where(batch[columns].notna(), None).to_dict("records")
    tag_lists = batch["tags"].tolist() if "tags" in batch.columns else None
    out = []
    for i, record in enumerate(records):
        item = {k: v for k, v in record.items() if v is not None}
        if tag_lists is not None and isinstance(tag_lists[i], str):
            tags = split_tags(tag_lists[i])
            if tags:
                item["tags"] = tags
        out.append(item)
    return out


def import_body_bytes(members: list[dict[str, Any]], tags: list[str]) -> int:
    return len(
        json.dumps(
            {"import_key": "customer_id", "data": members, "tags": tags}, ensure_ascii=False
        ).encode()
    )


def fit_import_bytes(
    batch: pd.DataFrame, tags: list[str]
) -> Iterator[tuple[pd.DataFrame, list[dict[str, Any]]]]:
    """The batch as import bodies under MAAC's 10 MB: halved until each part fits."""
    members = member_records(batch)
    if import_body_bytes(members, tags) <= IMPORT_MAX_BYTES or len(batch) == 1:
        yield batch, members
        return
    middle = len(batch) // 2
    yield from fit_import_bytes(batch.iloc[:middle].reset_index(drop=True), tags)
    yield from fit_import_bytes(batch.iloc[middle:].reset_index(drop=True), tags)


MISMATCH_RULE = "maac_mismatch"


def _count_mismatch(
    report: DeliveryReport, run: ExportRun, part: pd.DataFrame, result: dict[str, Any], task: str
) -> None:
    """The members of a done import task that MAAC did not match (``mismatch_num``: "members
    that do not exist (blocked)"), as refused rows named by MAAC's mismatch file when it names
    exactly that many of the task's rows (imports by line_uid); else counted refused unnamed,
    and the task's rows left unsettled (a sync run sends them again: which were refused is
    unknown)."""
    count = int(result.get("mismatch_num") or 0)
    if not count:
        return
    reason = (
        f"MAAC did not match this member in import task {task} (mismatch_num: not a member, "
        "or blocked the account)"
    )
    link = result.get("mismatch_export_link")
    named = None
    if link and "line_uid" in part.columns:
        try:
            uids = set(mismatch_uids(str(link)))
        except (OSError, ValueError, requests.RequestException) as exc:
            run.log.warning(f"MAAC import task {task}: mismatch file not read ({exc})")
        else:
            named = part[part["line_uid"].isin(uids)]
    if named is not None and len(named) == count:
        report.refused.append(reject(named[ROW_NUMBER], "line_uid", MISMATCH_RULE, reason))
        return
    report.refused_unnamed += count
    answers = report.refused_unnamed_answers
    answers[reason] = answers.get(reason, 0) + count
    report.unsettled.append(part[ROW_NUMBER])


def segment_csv(uids: pd.Series) -> bytes:
    """The custom segment file: a ``line_uid`` header and one UID per line."""
    buffer = io.StringIO()
    buffer.write("line_uid\n")
    buffer.write("\n".join(uids.astype(str)))
    buffer.write("\n")
    return buffer.getvalue().encode()


@dataclass(frozen=True)
class SegmentTarget:
    """Where a segment write goes: the segment of that name to replace (``replace_id``), else a
    create (``before``: the ids of the segments of that name before it), unless an earlier step
    attempt's create whose answer was lost made one (``made``, taken instead of a second)."""

    replace_id: int | None
    before: set[int]
    made: dict[str, Any] | None

    @classmethod
    def find(
        cls, client: MaacClient, settings: MaacSettings, name: str, request: LedgerRequest
    ) -> SegmentTarget:
        """Look it up (nothing is sent; a failed lookup leaves the rows unsent)."""
        existing = client.segments_named(name) if settings.update_segment else []
        if existing:
            return cls(int(existing[0]["id"]), set(), None)
        earlier = request.pending or {}
        if "before" in earlier:
            before = {int(i) for i in earlier["before"]}
        elif settings.update_segment:
            before = set()  # just listed: there is none
        else:
            before = {int(s["id"]) for s in client.segments_named(name)}
        # Nothing found by name (above, and by create_once after each failed attempt) rules out
        # no earlier create that got a 5xx or no answer: MAAC documents no 5xx and may still
        # make it (README "One rule").
        made = client.new_segment(name, before) if request.earlier_unanswered else None
        return cls(None, before, made)

    def write(
        self,
        client: MaacClient,
        settings: MaacSettings,
        name: str,
        csv_bytes: bytes,
        request: LedgerRequest,
    ) -> tuple[dict[str, Any], str]:
        """(segment, "replaced" | "created"), the request recorded pending before it is sent
        (with ``before``: a step retry finds a segment its lost create made)."""
        description = settings.segment_description
        if self.made is not None:
            return self.made, "created"
        if self.replace_id is not None:
            request.sending()  # a resend replaces the members alike
            return client.replace_segment(self.replace_id, description, csv_bytes), "replaced"
        request.sending(before=sorted(self.before))
        return client.create_segment(name, description, csv_bytes, self.before), "created"


MEMBERS_ADVICE = (
    "to settle them, re-execute the same run (same tick or partition): it imports those members "
    "again, and MAAC matches each by the import key and overwrites its fields with the same "
    "values, and only adds tags (it never removes one), so a member imported twice is the same "
    "member with the same tags"
)
"""Rows of unknown delivery of a member import. MAAC's OpenAPI (``maac-openapi.md``, member
import ``POST /openapi/v1/member/import/``): members are matched by ``import_key``; a matched
member's non-blank fields are overwritten by the import's; ``tags`` are only added, never
overwritten or removed."""

SEGMENT_ADVICE = (
    "to settle them, re-execute the same run (same tick or partition): it looks the custom "
    "segment up by its name before creating one (a segment a lost answer hid is taken, never "
    "made twice) and sends those LINE UIDs again; with update_segment they replace the "
    "segment's members, which leaves the same list"
)
"""Rows of unknown delivery of a custom segment (``POST /openapi/v1/custom_segment/``, with
``update_segment`` ``PATCH .../{id}/``, which replaces the segment's members: ``maac-openapi.md``)."""


class MaacDestination(Destination):
    type_name = "maac"
    kind = "maac"
    settings_class = MaacSettings
    resource_class = MaacResource
    pool = "maac_api"
    invalid_policy_setting = "skip_invalid_records"
    auth_fields = ("api_token",)
    unknown_delivery_advice = MEMBERS_ADVICE

    def delivery_advice(self, settings: MaacSettings) -> str:
        """Members (:data:`MEMBERS_ADVICE`) or a custom segment (:data:`SEGMENT_ADVICE`)."""
        return MEMBERS_ADVICE if settings.data_object == "members" else SEGMENT_ADVICE

    def ruleset(self, settings: MaacSettings) -> RuleSet:
        if settings.data_object == "members":
            columns = MEMBER_COLUMNS
            if ImportKey(settings.import_key or "line_uid") is ImportKey.customer_id:
                columns = tuple(KEY_CUSTOMER_ID if c.name == "customer_id" else c for c in columns)
            return RuleSet(columns, unique=MEMBER_UNIQUE)
        return RuleSet(SEGMENT_COLUMNS, unique=SEGMENT_UNIQUE)

    def target_label(self, settings: MaacSettings) -> str:
        if settings.data_object == "members":
            return f"maac members by {ImportKey(settings.import_key).value}"
        return f"maac segment {settings.segment_name!r}"

    def sync_spec(self, settings: MaacSettings) -> SyncSpec | None:
        """Members by their import key; mirror removes the tags this export attached from
        departed members (:mod:`~line_exports.destinations.maac_tags`). Segments are replaced
        or created whole each run: append only."""
        if settings.data_object != "members":
            return None
        return SyncSpec(
            (ImportKey(settings.import_key).value,),
            modes=("append", "diff", "mirror"),
            carry=("line_uid", "tags"),
            removal="tags this export attached, removed from departed members",
            target="tags=" + ",".join(sorted(settings.tag_list())),
        )

    def sync_account(
        self, resource: MaacResource, settings: MaacSettings, fingerprint: Callable[[str], str]
    ) -> str:
        """The MAAC account: the API host and a keyed fingerprint of its token (MAAC's OpenAPI
        has no endpoint that names the organization or channel a token belongs to), so
        another account starts empty and gets every row. Never the token itself."""
        base, token = resource.endpoint()
        url = urlparse(base)
        host = f"{url.hostname}:{url.port}" if url.port else str(url.hostname)
        return f"maac={host}/{fingerprint(token)}"

    def refusal_is_transient(self, rule: str, message: str) -> bool:
        """A failed import task names no row (only error counts): its rows are sent again
        next run, since holding back the whole batch would starve the valid members in it.
        A mismatched member (:data:`MISMATCH_RULE`: not a member, or blocked the account) is
        refused for the member's state at MAAC, not for the row: a friend who unblocks, or a
        user who adds the account, matches the same row later, so it is sent again too."""
        return True

    def remove(
        self, resource: MaacResource, settings: MaacSettings, departed: pd.DataFrame, run: ExportRun
    ) -> RemovalReport:
        client = resource.get_client(settings.retry_settings())
        return maac_tags.remove_departed(client, settings, departed, run)

    def replaces_target(self, settings: MaacSettings) -> bool:
        """``update_segment`` replaces the members of the segment of that name."""
        return settings.data_object == "segments" and bool(settings.update_segment)

    def check_total(self, settings: MaacSettings, valid_rows: int) -> None:
        if settings.data_object == "segments" and valid_rows > SEGMENT_MAX_UIDS:
            raise ValueError(
                f"segment {settings.segment_name!r} would hold {valid_rows:,} LINE UIDs; a MAAC custom segment "
                f"holds at most {SEGMENT_MAX_UIDS:,} (25 MB). Nothing was sent. Split the query into several "
                "exports (e.g. by a hash of line_uid) with one segment each."
            )

    def deliver(
        self, resource: MaacResource, settings: MaacSettings, rows: ValidRows, run: ExportRun
    ) -> DeliveryReport:
        client = resource.get_client(settings.retry_settings())
        before = client.http.stats.requests
        try:
            if settings.data_object == "members":
                report = self._members(client, settings, rows, run)
            else:
                report = self._segment(client, settings, rows, run)
        except (DeliveryFailed, dg.DagsterExecutionInterruptedError) as exc:  # it made requests too
            if (stopped := stopped_report(exc, run)) is not None:
                stopped.requests = client.http.stats.requests - before
            raise
        report.requests = client.http.stats.requests - before
        report.metadata["rate_limited_answers"] = client.http.stats.rate_limited
        report.metadata["retries"] = client.http.stats.retries
        return report

    def _members(
        self, client: MaacClient, settings: MaacSettings, rows: ValidRows, run: ExportRun
    ) -> DeliveryReport:
        report = run.new_report()
        totals = {"created_num": 0, "updated_num": 0, "mismatch_num": 0}
        tags = settings.tag_list()
        key = ImportKey(settings.import_key or "line_uid").value
        mismatch_links: list[str] = []
        tagged = maac_tags.Tagged.of(run, settings)
        # Keys are unique over the whole export (validation's duplicate rule), so any batch
        # holds each key once.
        for batch in rows.batches(settings.batch_size):
            for part, members in fit_import_bytes(batch, tags):
                result = self._import_once(client, run, report, key, tags, members, part, tagged)
                if result is None:  # MAAC answered the import request 400: refused, counted
                    message = (
                        f"MAAC refused an import request: {report.refused[-1]['message'].iloc[0]}"
                    )
                    if not settings.skip_invalid_records:
                        raise DeliveryFailed(message, report)
                    run.log.warning(message)
                    continue
                report.sent_rows += len(part)
                if not result.get("success"):
                    errors = {k: v for k, v in result.items() if k != "success" and v}
                    message = f"MAAC refused import task {report.job_ids[-1] if report.job_ids else '?'}: {errors}"
                    report.refused.append(
                        reject(part[ROW_NUMBER], key, "maac_import_failed", message)
                    )
                    if not settings.skip_invalid_records:
                        raise DeliveryFailed(message, report)
                    run.log.warning(message)
                    continue
                for name in totals:
                    totals[name] += int(result.get(name) or 0)
                report.accepted_rows += int(result.get("created_num") or 0) + int(
                    result.get("updated_num") or 0
                )
                report.answered.append(part[ROW_NUMBER])  # mismatches: refused or unsettled
                task = report.job_ids[-1] if report.job_ids else "?"
                _count_mismatch(report, run, part, result, task)
                if result.get("mismatch_export_link"):
                    mismatch_links.append(str(result["mismatch_export_link"]))
            run.progress(report.sent_rows)
        report.metadata.update(
            {
                "members_created": totals["created_num"],
                "members_updated": totals["updated_num"],
                "members_mismatched": totals["mismatch_num"],
                "import_tasks": len(report.job_ids),
                "tags": dg.MetadataValue.json(tags),
            }
        )
        if mismatch_links:
            report.metadata["mismatch_export_links"] = dg.MetadataValue.json(mismatch_links)
        return report

    @staticmethod
    def _import_once(
        client: MaacClient,
        run: ExportRun,
        report: DeliveryReport,
        key: str,
        tags: list[str],
        members: list[dict[str, Any]],
        part: pd.DataFrame,
        tagged: maac_tags.Tagged | None = None,
    ) -> dict[str, Any] | None:
        """One import task, unless the ledger shows this exact batch already went through.
        ``tagged`` (diff / mirror) records, before the request, when this export first sent
        each member's tags, then the task that did (:class:`~.maac_tags.Tagged`).

        A request MAAC answered 400 for is counted refused (None is returned); any other
        failure is counted by :func:`~line_exports.outcomes.fate_of` and stops the run. A task
        MAAC accepted whose result cannot be read is of unknown delivery."""
        request = LedgerRequest.look_up(run.ledger, content_key("members", key, tags, members))
        if request.result is not None:
            report.resumed_rows += len(members)
            return request.result
        marker = tagged.intend(members, tags) if tagged is not None else ""
        retries = client.http.stats.retries
        # Pending before the request: a step retry after a lost answer sends the same import
        # again (MAAC matches members by the import key and overwrites: the same members) and
        # counts a 429 answer to it of unknown delivery, not refused (a 5xx is unknown anyway).
        request.sending()
        try:
            with run.sending(
                part[ROW_NUMBER],
                key,
                "MAAC",
                client.http.stats,
                request.earlier_unanswered,
                request.not_started,
            ):
                task_id = client.import_members(key, members, tags)
        except ApiError as exc:
            fate = request.count_failed(report, part[ROW_NUMBER], key, exc, "MAAC")
            if tagged is not None and fate.kind != "unknown":
                tagged.drop(marker, members)  # refused, or never sent: it attached nothing
            if fate.kind == "refused" and exc.status == 400:
                return None
            raise DeliveryFailed(
                f"MAAC import stopped: {fate.reason}", report, retryable=exc.retryable
            ) from None
        report.job_ids.append(str(task_id))
        if tagged is not None and client.http.stats.retries == retries:
            tagged.sent(marker, task_id, members)
        taken = f"MAAC took import task {task_id}; the run stopped before MAAC said it done"
        try:  # a signal ends the wait: MAAC has the members, the task's end is unknown
            with run.taken(part[ROW_NUMBER], key, taken, sent=len(part)):
                result = client.wait_import(task_id, between=lambda: run.progress(report.sent_rows))
        except ApiError as exc:
            reason = f"MAAC accepted import task {task_id}; its result could not be read ({exc})"
            report.unknown.append(reject(part[ROW_NUMBER], key, DELIVERY_UNKNOWN, reason))
            report.sent_rows += len(part)
            raise DeliveryFailed(reason, report, retryable=exc.retryable) from None
        if tagged is not None:
            tagged.done(task_id, result, members, marker)
        if result.get("success"):
            request.succeeded(result)
        else:  # MAAC answered: the task failed (counted refused), it imported nobody
            request.answered(f"import task {task_id} failed")
        return result

    def _segment(
        self, client: MaacClient, settings: MaacSettings, rows: ValidRows, run: ExportRun
    ) -> DeliveryReport:
        report = run.new_report()
        name = (settings.segment_name or "").strip()
        held = (
            pd.concat(
                list(rows.batches(SEGMENT_MAX_UIDS, columns=["line_uid", ROW_NUMBER])),
                ignore_index=True,
            )
            if rows.count
            else pd.DataFrame({"line_uid": pd.Series(dtype="string"), ROW_NUMBER: []})
        )
        uids = held["line_uid"]
        csv_bytes = segment_csv(uids)
        if len(csv_bytes) > SEGMENT_MAX_BYTES:
            raise NothingSent(f"segment file is {len(csv_bytes):,} bytes; MAAC takes at most 25 MB")
        request = LedgerRequest.look_up(
            run.ledger, content_key("segment", name, settings.update_segment, csv_bytes)
        )
        if request.result is not None:
            report.resumed_rows = len(uids)
            segment = request.result
        else:
            target = SegmentTarget.find(client, settings, name, request)
            rows_sent = held[ROW_NUMBER]
            try:
                with run.sending(
                    rows_sent,
                    "line_uid",
                    "MAAC",
                    client.http.stats,
                    request.earlier_unanswered,
                    request.not_started,
                ):
                    created, action = target.write(client, settings, name, csv_bytes, request)
                if target.made is not None:  # an earlier create made it: nothing sent now
                    report.resumed_rows = len(uids)
            except ApiError as exc:
                fate = request.count_failed(report, held[ROW_NUMBER], "line_uid", exc, "MAAC")
                raise DeliveryFailed(
                    f"MAAC segment {name!r} not written: {fate.reason}",
                    report,
                    retryable=exc.retryable,
                ) from None
            taken = (
                f"MAAC took segment {created['id']} ({action}); the run stopped before MAAC "
                "said it ready"
            )
            try:  # a signal ends the wait: MAAC has the UIDs, the segment's end is unknown
                with run.taken(rows_sent, "line_uid", taken, sent=len(uids)):
                    segment = client.wait_segment(
                        int(created["id"]), between=lambda: run.progress(report.sent_rows)
                    )
            except ApiError as exc:
                reason = (
                    f"MAAC took segment {created['id']} ({action}); its state could not be read "
                    f"({exc})"
                )
                report.unknown.append(
                    reject(held[ROW_NUMBER], "line_uid", DELIVERY_UNKNOWN, reason)
                )
                report.sent_rows = len(uids)
                raise DeliveryFailed(reason, report, retryable=exc.retryable) from None
            segment["action"] = action
            request.succeeded(segment)
        report.sent_rows = len(uids)
        # The segment holds the UIDs MAAC kept; any other UID sent was refused (unnamed).
        report.accepted_rows = min(int(segment.get("member_count") or 0), len(uids))
        report.refused_unnamed = len(uids) - report.accepted_rows
        report.job_ids.append(str(segment["id"]))
        report.metadata.update(
            {
                "segment_id": int(segment["id"]),
                "segment_name": name,
                "segment_action": str(segment.get("action", "created")),
                "segment_member_count": int(segment.get("member_count") or 0),
            }
        )
        return report


DESTINATION = MaacDestination()
