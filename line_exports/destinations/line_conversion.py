"""LINE Conversion API (CAPI): web conversion events sent server to server to a LINE Tag.

Settings follow TD's "LINE Conversion Export Integration" (``line-conversion-api-export.txt``);
requests follow LINE's Conversion API v1 (conversion-api-docs.linebiz.com):
``POST /v1/{line_tag_id}/events`` with ``X-Line-TagAccessToken`` (the raw token, no "Bearer")
and ``X-Line-ChannelID`` (required to match users by ``line_uid``). The body is a JSON array of
at most 100,000 events and 300 MB, never sent chunked. 202 means every event was received; a
single bad event makes the whole request 400 (nothing kept); 500 may have kept some events,
which is why every event carries a ``deduplication_key`` and a retry is safe.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlparse

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pydantic import Field, PrivateAttr, field_validator

from line_exports.destination import (
    DeliveryFailed,
    DeliveryReport,
    Destination,
    ExportRun,
    ExportSettings,
    NothingSent,
    ValidRows,
    content_key,
    not_isolated,
)
from line_exports.http import ApiError, HttpClient, RetrySettings
from line_exports.id_text import IdText
from line_exports.identities import CAPI_USER_IDENTIFIERS, EMAIL_NORMALIZE
from line_exports.ledger_request import LedgerRequest, is_done
from line_exports.outcomes import EARLIER_ANSWER
from line_exports.phones import check_region
from line_exports.rules import ROW_NUMBER, UUID_PATTERN, AnyOf, Column, RuleSet, Unique, reject
from line_exports.secret_fields import SecretField
from line_exports.sync import SyncSpec

API_URL = "https://conversion-api.tr.line.me"
SANDBOX_TOKEN = "sandbox-capi-token"
SANDBOX_TAG_ID = "sandbox-tag"
SANDBOX_CHANNEL_ID = "1234567890"
MAX_EVENTS = 100_000
MAX_BODY_BYTES = 300_000_000  # "300 MB": the smaller reading, so a body we send is never over
WINDOW_PAST_SECONDS = 90 * 86_400  # event_timestamp: at most 90 days before arrival ...
WINDOW_FUTURE_SECONDS = 86_400  # ... and at most 24 hours after it
WINDOW_MARGIN_SECONDS = 600  # stay clear of the edges: the request arrives a little later
WINDOW_SPAN = "90 days back to 24 hours ahead of sending"
WINDOW_MESSAGE = "is outside what LINE accepts"
REFUSED_RULE = "api_refused"  # an event LINE answered 400 for
BLIND_REFUSALS = 10  # single events refused before any was accepted: the request itself is wrong
CHANNEL_ID_PATTERN = re.compile(r"[0-9]+")

EVENT_FIELDS = ("deduplication_key", "event_type", "event_name", "source_type", "event_timestamp")
USER_FIELDS = CAPI_USER_IDENTIFIERS
WEB_FIELDS = ("url", "referrer", "title", "user_agent", "ip_address")

# The raw-email rule of the reference (the official API takes only SHA-256 hex; raw values are
# checked with this, normalized and hashed here, and never leave the process).
RAW_EMAIL_PATTERN = r"[a-zA-Z0-9_!#$%&'*+/=?`{|}~^.\-]+@[a-zA-Z0-9.\-]+"
# ``undefined`` is treated by LINE as "not sent", which would silently disable deduplication.
DEDUP_PATTERN = r"(?!undefined$)[0-9a-zA-Z\-_]{1,256}"

# The reference's column table, in its order, as rules. Where the reference's regex has a typo
# (a stray space in event_name and click_id) the official API's pattern is used.
COLUMNS = (
    Column("referrer", max_length=2048),
    Column("ip_address", format="ip"),
    Column("title", max_length=1024),
    Column("user_agent"),
    Column(
        "url",
        pattern=r"https?://.+",
        pattern_message="must start with http:// or https://",
        max_length=2048,
    ),
    Column(
        "deduplication_key",
        required=True,
        pattern=DEDUP_PATTERN,
        pattern_message="must be 1-256 letters, digits, - or _ (and not 'undefined')",
    ),
    Column("event_type", required=True, allowed=("page_view", "conversion")),
    Column(
        "event_name",
        pattern=r"[A-Za-z0-9_\-]{1,20}",
        pattern_message="must be 1-20 letters, digits, - or _",
    ),
    Column("source_type", required=True, allowed=("web",)),
    Column(
        "event_timestamp",
        required=True,
        kind="unix_seconds",
        min_value=1,
        # A whole number past int64 (UBIGINT, HUGEINT, DOUBLE 1e30) is past any window.
        too_large=("time_window", f"{WINDOW_MESSAGE}: {WINDOW_SPAN} (a whole number past int64)"),
    ),
    Column("browser_id", pattern=UUID_PATTERN, pattern_message="is not a UUID"),
    Column(
        "click_id", pattern=r"[a-zA-Z0-9\-_]+", pattern_message="must be letters, digits, - or _"
    ),
    Column(
        "phone",
        normalize=("trim", "phone", "lowercase"),
        format="phone",  # E.164 (local numbers read with default_region), then hashed
        hash_sha256=True,
        sensitive=True,
    ),
    Column("ifa", pattern=UUID_PATTERN, pattern_message="is not a UUID"),
    Column(
        "external_id",
        # LINE reads the literal "undefined" as not sent (identities.CAPI_NOT_SENT): so do we.
        normalize=("trim", "undefined_as_missing"),
        pattern=r"[0-9a-zA-Z\-_]{1,512}",
        pattern_message="must be 1-512 letters, digits, - or _",
    ),
    Column(
        "line_uid",
        pattern=r"U[0-9a-f]{32}",
        pattern_message="is not a LINE user ID (U and 32 hex digits)",
    ),
    Column(
        "email",
        normalize=EMAIL_NORMALIZE,
        pattern=RAW_EMAIL_PATTERN,
        pattern_message="is not an email address (nor a SHA-256 hex digest)",
        hash_sha256=True,
        sensitive=True,
    ),
)


# LINE: "the user object must contain at least one field usable for user matching" (LINE
# Conversion API, Development Guidelines, "User match"; see identities.CAPI_USER_IDENTIFIERS).
ROW_RULES = (AnyOf(tuple((name,) for name in USER_FIELDS), name="user_identifier"),)
DEDUPLICATION = ("event_name", "deduplication_key")
"""LINE counts events with the same ``event_name`` and ``deduplication_key`` once (a missing
``event_name`` is one value): the exporter sends each once (:data:`UNIQUE`, the sync key) and
the sandbox keeps each once (:func:`event_identity`)."""
UNIQUE = (Unique(DEDUPLICATION),)


def event_identity(event: dict[str, Any]) -> tuple[Any, ...]:
    """The :data:`DEDUPLICATION` values of one CAPI ``event`` object (a missing field: None)."""
    return tuple(event.get(name) for name in DEDUPLICATION)


class LineConversionSettings(ExportSettings):
    """``result_settings`` of a LINE Conversion API export, named as in the reference."""

    ignore_invalid_records: bool = Field(
        True,
        description="Skip invalid records and continue; false fails the run before anything is sent",
    )
    max_records: int = Field(
        1_000,
        ge=1_000,
        le=MAX_EVENTS,
        description="Batch Size: events per request (1,000..100,000)",
    )
    default_region: str | None = Field(
        None,
        description=(
            "Region (ISO 3166 alpha-2: JP, TW, TH, ...) that reads phone numbers written without + "
            "and country code before hashing; empty: only E.164 numbers are accepted"
        ),
    )

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return check_region(value)


class LineConversionClient:
    """``POST /v1/{line_tag_id}/events`` over one retrying session."""

    def __init__(self, http: HttpClient, line_tag_id: str, line_channel_id: str | None) -> None:
        self.http = http
        self.line_tag_id = line_tag_id
        self.line_channel_id = line_channel_id
        self.path = f"/v1/{quote(line_tag_id, safe='')}/events"

    def send(self, body: bytes) -> None:
        """Send one JSON array of events as plain bytes (Content-Length, never chunked).

        Raises :class:`ApiError` (400: some event is invalid, nothing kept; 401: bad token);
        500s and dropped connections are retried by the HTTP layer.
        """
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(
                f"request body is {len(body):,} bytes; LINE takes at most {MAX_BODY_BYTES:,}"
            )
        headers = {"Content-Type": "application/json"}
        if self.line_channel_id:
            headers["X-Line-ChannelID"] = self.line_channel_id
        self.http.request(
            "POST", self.path, endpoint="events", data=body, headers=headers, ok_status=(202,)
        )


class LineConversionResource(dg.ConfigurableResource):
    """The LINE Tag, its Conversion API token, and the channel that issued the LINE user IDs.

    ``access_token`` comes from ``dg.EnvVar("LINE_CONVERSION_ACCESS_TOKEN")``. Leave both
    ``access_token`` and ``base_url`` empty to use the local sandbox (started on demand; its
    channel ID is used when ``line_channel_id`` is empty); set ``base_url`` for a proxy or a
    sandbox of your own (a loopback ``base_url`` needs no token).
    """

    line_tag_id: IdText = Field(description="LINE Tag ID used for conversion measurement")
    access_token: str | None = SecretField(
        "Conversion API access token issued for this tag in LINE Business Manager"
    )
    line_channel_id: IdText | None = Field(
        default=None, description="Channel that issued the LINE user IDs (needed to send line_uid)"
    )
    base_url: str | None = Field(
        default=None, description="Overrides https://conversion-api.tr.line.me (proxy, sandbox)"
    )
    debug: bool = Field(
        default=False, description="Log request and response bodies (secrets redacted)"
    )
    _clients: dict[RetrySettings, LineConversionClient] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_env(cls) -> LineConversionResource:
        """The real API when ``LINE_CONVERSION_ACCESS_TOKEN`` is set, else the sandbox.

        Reads ``LINE_CONVERSION_TAG_ID`` (required with a token), ``LINE_CONVERSION_CHANNEL_ID``
        and ``LINE_CONVERSION_BASE_URL`` when set.
        """
        channel = (
            dg.EnvVar("LINE_CONVERSION_CHANNEL_ID")
            if os.environ.get("LINE_CONVERSION_CHANNEL_ID")
            else None
        )
        base_url = (
            dg.EnvVar("LINE_CONVERSION_BASE_URL")
            if os.environ.get("LINE_CONVERSION_BASE_URL")
            else None
        )
        if not os.environ.get("LINE_CONVERSION_ACCESS_TOKEN"):
            return cls(
                line_tag_id=os.environ.get("LINE_CONVERSION_TAG_ID") or SANDBOX_TAG_ID,
                line_channel_id=channel,
                base_url=base_url,
            )
        if not os.environ.get("LINE_CONVERSION_TAG_ID"):
            raise ValueError("LINE_CONVERSION_TAG_ID must be set with LINE_CONVERSION_ACCESS_TOKEN")
        return cls(
            line_tag_id=dg.EnvVar("LINE_CONVERSION_TAG_ID"),
            access_token=dg.EnvVar("LINE_CONVERSION_ACCESS_TOKEN"),
            line_channel_id=channel,
            base_url=base_url,
        )

    def endpoint(self) -> tuple[str, str, str | None]:
        """(base URL, token, channel ID): the configured API, or the local sandbox."""
        channel = (self.line_channel_id or "").strip() or None
        if channel is not None and not CHANNEL_ID_PATTERN.fullmatch(channel):
            raise ValueError("LineConversionResource: line_channel_id must be digits only")
        if self.base_url:
            host = urlparse(self.base_url).hostname or ""
            local = host in ("127.0.0.1", "localhost", "::1")
            if not self.access_token and not local:
                raise ValueError(
                    "LineConversionResource: access_token is required for a non-local base_url"
                )
            return self.base_url, self.access_token or SANDBOX_TOKEN, channel
        if self.access_token:
            return API_URL, self.access_token, channel
        from line_exports.sandbox import ensure_sandbox

        return ensure_sandbox(), SANDBOX_TOKEN, channel or SANDBOX_CHANNEL_ID

    def get_client(self, retry: RetrySettings | None = None) -> LineConversionClient:
        retry = retry or RetrySettings()
        if retry not in self._clients:
            url, token, channel = self.endpoint()
            http = HttpClient(
                url,
                auth_headers=lambda: {"X-Line-TagAccessToken": token},
                secrets=lambda: (token,),
                retry=retry,
                limiter_scope=f"line_conversion:{url}:{content_key(token)[:12]}",
                debug=self.debug,
            )
            self._clients[retry] = LineConversionClient(http, self.line_tag_id, channel)
        return self._clients[retry]


def _present(frame: pd.DataFrame, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if n in frame.columns]


def _column_values(batch: pd.DataFrame, name: str) -> list[Any]:
    """One column as plain Python values, None where missing (timestamps as ints)."""
    series = batch[name]
    if name == "event_timestamp":
        return [None if pd.isna(v) else int(v) for v in series.tolist()]
    return series.astype(object).where(series.notna(), None).tolist()


def event_objects(batch: pd.DataFrame) -> list[dict[str, Any]]:
    """The request items: ``event`` and ``user`` always (both required), ``web`` when it has a field.

    Only present values are sent; ``event_timestamp`` as a JSON integer. Built column by
    column (one ``tolist`` each), then zipped, which is several times faster than row records.
    """
    n = len(batch)
    parts: dict[str, list[dict[str, Any]]] = {}
    for part, fields in (("event", EVENT_FIELDS), ("user", USER_FIELDS), ("web", WEB_FIELDS)):
        columns = _present(batch, fields)
        values = [_column_values(batch, c) for c in columns]
        parts[part] = (
            [
                {k: v for k, v in zip(columns, row, strict=True) if v is not None}
                for row in zip(*values, strict=True)
            ]
            if columns
            else [{} for _ in range(n)]
        )
    return [
        {"event": event, "user": user, "web": web} if web else {"event": event, "user": user}
        for event, user, web in zip(parts["event"], parts["user"], parts["web"], strict=True)
    ]


def encode(batch: pd.DataFrame) -> bytes:
    """The request body: a compact JSON array (UTF-8)."""
    return json.dumps(event_objects(batch), ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )


@dataclass(frozen=True)
class TimeWindow:
    """The event_timestamp range LINE accepts (90 days back, 24 h ahead), with a safety margin."""

    low: int
    high: int

    @classmethod
    def now(cls) -> TimeWindow:
        now = int(time.time())
        return cls(
            now - WINDOW_PAST_SECONDS + WINDOW_MARGIN_SECONDS,
            now + WINDOW_FUTURE_SECONDS - WINDOW_MARGIN_SECONDS,
        )

    def outside(self, batch: pd.DataFrame) -> np.ndarray:
        stamps = pd.to_numeric(batch["event_timestamp"], errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )
        return (stamps < self.low) | (stamps > self.high)

    def describe(self) -> str:
        return f"between {self.low} and {self.high} ({WINDOW_SPAN})"


@dataclass
class _Tally:
    batches: int = 0
    split_requests: int = 0
    refused: int = 0
    outside_window: int = 0


UNKNOWN_DELIVERY_ADVICE = (
    "to settle them, re-execute the same run (same tick or partition) soon: it sends those "
    "events again, and LINE counts events with the same event_name and deduplication_key once "
    "(every event carries a deduplication_key), so none is counted twice; LINE dates a "
    "conversion by when the event reaches it"
)
"""Rows of unknown delivery of a CAPI export. LINE Conversion API v1, Development Guidelines
(conversion-api-docs.linebiz.com): "Event deduplication" (events with the same ``event_name``
and ``deduplication_key`` are one event; a client retries after a network error or a temporary
failure) and "Timing to send events" (a conversion is timed, and its expiration judged, by
when the event reaches LINE)."""


class LineConversionDestination(Destination):
    type_name = "line_conversion"
    kind = "line"
    settings_class = LineConversionSettings
    resource_class = LineConversionResource
    pool = "line_conversion_api"
    invalid_policy_setting = "ignore_invalid_records"
    auth_fields = ("line_tag_id", "access_token", "line_channel_id")
    unknown_delivery_advice = UNKNOWN_DELIVERY_ADVICE

    def ruleset(self, settings: LineConversionSettings) -> RuleSet:
        return RuleSet(COLUMNS, row_rules=ROW_RULES, unique=UNIQUE)

    def refusal_is_transient(self, rule: str, message: str) -> bool:
        """LINE refuses an event with a 400 (a malformed or unknown value): permanent, the
        event is not sent again until it changes. (429 and 5xx are retried by the client and,
        when they persist, stop the run: its events come back next run.)"""
        return rule != REFUSED_RULE

    def sync_spec(self, settings: LineConversionSettings) -> SyncSpec:
        """Events are append-only: diff skips an event (``event_name``, ``deduplication_key``)
        an earlier run got accepted; an event without a ``deduplication_key`` is always sent."""
        return SyncSpec(
            DEDUPLICATION,
            resend_changed=False,
            required_key="deduplication_key",
        )

    def sync_account(
        self,
        resource: LineConversionResource,
        settings: LineConversionSettings,
        fingerprint: Callable[[str], str],
    ) -> str:
        """The LINE Tag the events go to (``line_tag_id``, not a secret): another tag starts
        empty and gets every event."""
        return f"capi={resource.line_tag_id}"

    def target_label(self, settings: LineConversionSettings) -> str:
        return "LINE Conversion API events"

    def deliver(
        self,
        resource: LineConversionResource,
        settings: LineConversionSettings,
        rows: ValidRows,
        run: ExportRun,
    ) -> DeliveryReport:
        try:
            client = resource.get_client(settings.retry_settings())
        except ValueError as exc:
            raise NothingSent(str(exc)) from None
        before_requests, before_retries = client.http.stats.requests, client.http.stats.retries
        report, tally = run.new_report(), _Tally()
        window = TimeWindow.now()
        self._precheck(client, settings, rows, window)
        for batch in rows.batches(settings.max_records):
            tally.batches += 1
            if "event_timestamp" in batch.columns:
                outside = window.outside(batch)
                if outside.any():
                    tally.outside_window += int(outside.sum())
                    report.rejected.append(
                        reject(
                            batch.loc[outside, ROW_NUMBER],
                            "event_timestamp",
                            "time_window",
                            f"event_timestamp {WINDOW_MESSAGE}: {window.describe()}",
                            value=_value_of(batch, "event_timestamp"),
                        )
                    )
                    batch = batch[~outside].reset_index(drop=True)
            if not len(batch):
                continue
            try:
                self._send(client, settings, batch, run, report, tally)
                run.progress(report.sent_rows)
            except (
                DeliveryFailed,
                dg.DagsterExecutionInterruptedError,
            ):  # a stopped run made requests too
                report.requests = client.http.stats.requests - before_requests
                raise
        report.requests = client.http.stats.requests - before_requests
        report.metadata.update(
            {
                "line_tag_id": client.line_tag_id,
                "batches": tally.batches,
                "batch_size": settings.max_records,
                "split_requests": tally.split_requests,
                "retries": client.http.stats.retries - before_retries,
                "events_refused_by_api": tally.refused,
                "events_outside_time_window": tally.outside_window,
            }
        )
        return report

    def _precheck(
        self,
        client: LineConversionClient,
        settings: LineConversionSettings,
        rows: ValidRows,
        window: TimeWindow,
    ) -> None:
        """Refuse, before anything is sent, what would make requests fail whatever the batch."""
        names = set(_columns_of(rows))
        wanted = [c for c in ("event_timestamp", "line_uid") if c in names]
        if not wanted or not rows.count:
            return
        with_uid = outside = 0
        for frame in rows.batches(MAX_EVENTS, columns=wanted):
            if "line_uid" in frame.columns:
                with_uid += int(frame["line_uid"].notna().sum())
            if "event_timestamp" in frame.columns:
                outside += int(window.outside(frame).sum())
        if with_uid and not client.line_channel_id:
            raise NothingSent(
                f"{with_uid:,} events carry line_uid but the resource has no line_channel_id; LINE needs the "
                "channel that issued the user IDs (X-Line-ChannelID). Set line_channel_id or drop the "
                "line_uid column. Nothing was sent."
            )
        if outside and not settings.ignore_invalid_records:
            raise NothingSent(
                f"{outside:,} events have an event_timestamp LINE refuses ({window.describe()}) and "
                "ignore_invalid_records is false, so nothing was sent."
            )

    def _send(
        self,
        client: LineConversionClient,
        settings: LineConversionSettings,
        batch: pd.DataFrame,
        run: ExportRun,
        report: DeliveryReport,
        tally: _Tally,
    ) -> None:
        """Send one batch; on 400 split it in halves until the refused events are isolated.

        A body over 300 MB is halved before sending (long user agents can make events large).
        """

        def send_halves(refused: ApiError | None = None) -> None:
            parts = [p.reset_index(drop=True) for p in _halves(batch)]
            for i, part in enumerate(parts):
                if refused is not None and run.interrupted:
                    self._not_isolated(part, refused, run, report, tally)
                elif not run.interrupted:  # a half of a body too big: never sent, unsent
                    try:
                        self._send(client, settings, part, run, report, tally)
                    except DeliveryFailed:
                        # The run stops while it isolates a refused event: the other half was
                        # sent in the request LINE refused (400), not "never sent" (13m F5).
                        if refused is not None:
                            for rest in parts[i + 1 :]:
                                self._not_isolated(rest, refused, run, report, tally)
                        raise

        body = encode(batch)
        if len(body) > MAX_BODY_BYTES and len(batch) > 1:
            send_halves()
            return
        request = LedgerRequest.look_up(
            run.ledger, content_key("line_conversion", client.line_tag_id, body)
        )
        if request.result is not None:
            report.resumed_rows += len(batch)
            report.sent_rows += len(batch)
            report.accepted_rows += len(batch)
            report.answered.append(batch[ROW_NUMBER])
            return
        earlier = request.pending  # what an earlier step attempt left of it (before sending)
        # Pending before the request: a step retry after a lost answer sends the same events
        # again (LINE keeps an event once per deduplication_key) and counts a 429 answer
        # to them of unknown delivery, not refused (a 5xx is unknown anyway).
        request.sending()
        try:
            with run.sending(
                batch[ROW_NUMBER],
                "event",
                "LINE Conversion API",
                client.http.stats,
                request.earlier_unanswered,
                request.not_started,
            ):
                client.send(body)
        except ApiError as exc:
            if exc.status != 400:
                # The one rule (outcomes.fate_of): a 4xx -> refused with its answer; a 5xx or
                # no answer -> unknown; never reached -> unsent; an earlier step attempt's
                # lost answer included.
                # The run stops: the next requests would fare alike. Events an earlier step
                # attempt got accepted while it isolated a refusal in this request stay
                # accepted (VERIFY-13m F4).
                taken = _accepted_before(run, client.line_tag_id, batch, earlier)
                report.resumed_rows += len(taken)
                report.sent_rows += len(taken)
                report.accepted_rows += len(taken)
                report.answered.append(pd.Series(taken, dtype="int64"))
                fate = request.count_failed(
                    report,
                    batch.loc[~batch[ROW_NUMBER].isin(taken), ROW_NUMBER],
                    "event",
                    exc,
                    "LINE Conversion API",
                )
                if exc.status == 401:
                    raise DeliveryFailed(
                        f"LINE Conversion API refused the access token for tag {client.line_tag_id} (401). "
                        "Issue a token for this tag in LINE Business Manager.",
                        report,
                    ) from None
                raise DeliveryFailed(
                    f"LINE Conversion API stopped the run: {fate.reason}",
                    report,
                    retryable=exc.retryable,
                ) from None
            request.failed(exc)  # 400: LINE kept none of it; the halves have records of their own
            if len(batch) > 1 and run.interrupted:  # a signal: no new request to isolate it
                self._not_isolated(batch, exc, run, report, tally)
                return
            if len(batch) > 1:
                tally.split_requests += 1
                send_halves(exc)
                return
            self._refused(client, settings, batch, exc, report, tally)
            return
        request.succeeded({"events": len(batch), "status": 202})
        report.sent_rows += len(batch)
        report.accepted_rows += len(batch)
        report.answered.append(batch[ROW_NUMBER])

    def _not_isolated(
        self,
        events: pd.DataFrame,
        exc: ApiError,
        run: ExportRun,
        report: DeliveryReport,
        tally: _Tally,
    ) -> None:
        """Events of a request LINE refused (400) that a run stopped by a signal did not split
        to find the refused one(s) (VERIFY-13i F5): refused, with LINE's answer. By the one
        rule (outcomes.fate_of) a 4xx is refused: LINE kept none of the request that carried
        them (a single bad event makes the whole request 400), and no new request is sent
        after the signal. A re-run of the same tick sends them again (their request is
        recorded failed in the ledger) and isolates the refused event then."""
        detail = f": {exc.body[:200]}" if exc.body else ""
        keys = dict(zip(events[ROW_NUMBER].tolist(), events["deduplication_key"], strict=True))
        tally.refused += len(events)
        report.sent_rows += len(events)
        why = not_isolated(run) if run.interrupted else STOPPED_ISOLATING
        report.refused.append(
            reject(
                events[ROW_NUMBER],
                "event",
                REFUSED_RULE,
                f"LINE Conversion API refused the request carrying this event (400){detail} "
                f"({why})",
                value=lambda row: str(keys[row]),
            )
        )

    def _refused(
        self,
        client: LineConversionClient,
        settings: LineConversionSettings,
        event: pd.DataFrame,
        exc: ApiError,
        report: DeliveryReport,
        tally: _Tally,
    ) -> None:
        """One event LINE refused (400): a reject, or the end of the run when invalid rows fail it."""
        row = int(event[ROW_NUMBER].iloc[0])
        detail = f": {exc.body[:200]}" if exc.body else ""
        message = f"LINE Conversion API refused the event (400){detail}"
        tally.refused += 1
        report.sent_rows += 1
        report.refused.append(
            reject(
                [row],
                "event",
                REFUSED_RULE,
                message,
                value=lambda _: str(event["deduplication_key"].iloc[0]),
            )
        )
        if not settings.ignore_invalid_records:
            raise DeliveryFailed(
                f"row {row}: {message}; ignore_invalid_records is false, so the run stops here",
                report,
            )
        if report.accepted_rows == 0 and tally.refused >= BLIND_REFUSALS:
            raise DeliveryFailed(
                f"LINE refused the first {tally.refused} events one by one and accepted none: the request itself "
                f"is likely wrong (tag {client.line_tag_id}, line_channel_id), not the events. Last answer{detail}",
                report,
            )


STOPPED_ISOLATING = (
    "not isolated: the run stopped on a later request's failure before the refused event was "
    "found, so this event was not sent again"
)
"""Why events of a refused request (400) the run did not isolate are refused: it stopped on a
failure (a 5xx, no answer) of another request while it split that one (VERIFY-13m F5)."""


def _halves(batch: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two requests a refused (or too big) request of ``batch`` is split into."""
    half = (len(batch) + 1) // 2
    return batch.iloc[:half], batch.iloc[half:]


def _accepted_before(
    run: ExportRun, tag: str, batch: pd.DataFrame, earlier: dict[str, Any] | None
) -> list[int]:
    """Rows of ``batch`` an earlier step attempt got accepted (202) in the requests it split
    the request of ``batch`` into to isolate a refused event (``earlier``: that request's
    pending record, answered 400), by the ledger alone; [] when it was not split. A request
    the run sends again and that then fails (a 5xx) counts these accepted, not of unknown
    delivery (LINE took them; it keeps an event once per ``deduplication_key``)."""
    if (earlier or {}).get(EARLIER_ANSWER) != 400 or len(batch) < 2:
        return []
    taken: list[int] = []
    parts = [p.reset_index(drop=True) for p in _halves(batch)]
    while parts:
        part = parts.pop()
        if not len(part):
            continue
        state = run.ledger.done(content_key("line_conversion", tag, encode(part)))
        if is_done(state):
            taken.extend(int(n) for n in part[ROW_NUMBER])
        elif (state or {}).get(EARLIER_ANSWER) == 400 and len(part) > 1:
            parts.extend(p.reset_index(drop=True) for p in _halves(part))
    return taken


def _columns_of(rows: ValidRows) -> list[str]:
    return list(pq.read_schema(rows.path).names) if rows.count else []


def _value_of(batch: pd.DataFrame, column: str) -> Any:
    values = dict(zip(batch[ROW_NUMBER].tolist(), batch[column].astype(str).tolist(), strict=True))
    return lambda row: values.get(row, "")


DESTINATION = LineConversionDestination()
