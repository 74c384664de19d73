"""LINE Messaging API: upload audiences, push a templated message per row, multicast to batches.

Settings follow TD's "LINE Messaging" export (``line-messaging-export.txt``); every request
follows LINE's official OpenAPI (``line/line-openapi``: ``messaging-api.yml``,
``manage-audience.yml``, ``channel-access-token.yml``). One module per concern: ``settings``
(settings, limits, column rules), ``auth`` (tokens), ``client`` (HTTP client and resource),
``messages`` (message templates), ``sending`` (one request under the ledger), ``audience``,
``push`` and ``multicast`` (the three targets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg
import pandas as pd

from line_exports.destination import (
    DeliveryFailed,
    DeliveryReport,
    Destination,
    ExportRun,
    ValidRows,
)
from line_exports.destinations.line_messaging import advice, audience_mirror
from line_exports.destinations.line_messaging.audience import deliver_audience, id_files
from line_exports.destinations.line_messaging.auth import TokenError
from line_exports.destinations.line_messaging.client import (
    LineMessagingClient,
    LineMessagingResource,
    explain,
    refusal,
)
from line_exports.destinations.line_messaging.consent import CONSENT_COLUMNS, screen
from line_exports.destinations.line_messaging.multicast import (
    deliver_multicast,
)
from line_exports.destinations.line_messaging.narrowcast import check_rows, deliver_campaign
from line_exports.destinations.line_messaging.push import bad_rendered_rows, deliver_push
from line_exports.destinations.line_messaging.quota import Quota, plan_lines
from line_exports.destinations.line_messaging.rich_menu import (
    RICH_MENU_COLUMNS,
    deliver_rich_menu,
)
from line_exports.destinations.line_messaging.sending import (
    final_answer,
    resend_window,
    retries_left,
)
from line_exports.destinations.line_messaging.settings import (
    AGGREGATION_UNIT,
    AUDIENCE_IFA_COLUMNS,
    AUDIENCE_USER_COLUMNS,
    LIMITS,
    MULTICAST_COLUMNS,
    PUSH_COLUMNS,
    PUSH_TO_PATTERN,
    LineMessagingSettings,
)
from line_exports.http import ApiError
from line_exports.rules import ROW_NUMBER, Column, RuleSet, Unique
from line_exports.sync import RemovalReport, SyncSpec
from line_exports.sync_settle import ResendFailed

LINE_400_RULES = frozenset(
    {"line_push_refused", "line_multicast_refused", "line_rich_menu_refused"}
)
"""Rules of the rows LINE refused with a 400 (sending.py, rich_menu.py): permanent."""

__all__ = [
    "AGGREGATION_UNIT",
    "DESTINATION",
    "LIMITS",
    "PUSH_TO_PATTERN",
    "LineMessagingDestination",
    "LineMessagingResource",
    "LineMessagingSettings",
    "id_files",
]


AUDIENCE_UNIQUE = (Unique(("id",)),)
"""An audience's IDs are sent once per export (``manage-audience.yml``: ``audienceCount`` is the
number of users, and the reference states no rule for a repeated ID)."""
RECIPIENT_UNIQUE = AUDIENCE_UNIQUE
"""A multicast's recipients are sent the message once per export, however often the query
repeats them (``messaging-api.yml`` ``MulticastRequest.to``: up to 500 user IDs, each a message
counted against the monthly quota)."""


def _placeholder(name: str) -> str:
    """Why a template's column is required (the missing-column error names the placeholder)."""
    return f"the message template's {{{{{name}}}}} placeholder"


class LineMessagingDestination(Destination):
    type_name = "line_messaging"
    kind = "line"
    settings_class = LineMessagingSettings
    resource_class = LineMessagingResource
    pool = "line_messaging_api"
    invalid_policy_setting = "skip_invalid_message"
    auth_fields = ("auth_method", "access_token", "client_id", "client_secret")
    unknown_delivery_advice = advice.MESSAGES

    def delivery_advice(self, settings: LineMessagingSettings) -> str:
        """Per target (:data:`.advice.BY_TARGET`): a message's retry key, an audience's upload,
        a rich menu's link."""
        return advice.BY_TARGET[settings.target]

    def ruleset(self, settings: LineMessagingSettings) -> RuleSet:
        if settings.target == "audience":
            # Each ID once per export (a repeat is a ``duplicate`` reject): LINE counts an
            # audience's users (``audienceCount``), so a repeated ID would take a place in a
            # 10,000-ID request and count as uploaded without adding anyone.
            if settings.is_ifa_audience:
                return RuleSet(AUDIENCE_IFA_COLUMNS, unique=AUDIENCE_UNIQUE)
            return RuleSet(AUDIENCE_USER_COLUMNS + CONSENT_COLUMNS, unique=AUDIENCE_UNIQUE)
        if settings.target == "multicast_message":
            # Each recipient once per export, found before sending (a repeat is a
            # ``duplicate`` reject): LINE would deliver the message to them once anyway.
            return RuleSet(MULTICAST_COLUMNS + CONSENT_COLUMNS, unique=RECIPIENT_UNIQUE)
        if settings.target == "rich_menu":
            return RuleSet(RICH_MENU_COLUMNS)
        if settings.target in ("narrowcast", "broadcast"):  # one request per row, no recipient
            return RuleSet(
                tuple(
                    Column(name, required=True, normalize=(), required_by=_placeholder(name))
                    for name in settings.campaign_template().columns
                )
            )
        template = settings.push_template()
        # Every placeholder must be a column; an empty value is invalid (TD drops NULL/empty).
        extra = tuple(
            Column(name, required=True, normalize=(), required_by=_placeholder(name))
            for name in template.columns
            if name != "id"
        )
        return RuleSet(PUSH_COLUMNS + CONSENT_COLUMNS + extra)

    def invalid_policy(self, settings: LineMessagingSettings) -> tuple[str, bool]:
        if settings.target == "multicast_message":
            return "skip_multicast_invalid_message", settings.skip_multicast_invalid_message
        return "skip_invalid_message", settings.skip_invalid_message

    def check_total(self, settings: LineMessagingSettings, valid_rows: int) -> None:
        if settings.target in ("narrowcast", "broadcast"):
            check_rows(settings.target, valid_rows)

    def sync_spec(self, settings: LineMessagingSettings) -> SyncSpec | None:
        """By recipient ``id``. Push / multicast: diff sends a (``campaign_key``, recipient)
        pair once across runs, whatever the row's other fields; an audience adds new IDs.
        Narrowcast and broadcast send one request whatever the rows: append only."""
        if settings.target == "rich_menu":  # diff: only users whose rich_menu changed
            return SyncSpec(("id",))
        if settings.target not in ("audience", "push_message", "multicast_message"):
            return None
        if settings.target == "audience":
            mirror = () if settings.use_audience_id else ("mirror",)
            return SyncSpec(
                ("id",),
                modes=("append", "diff", *mirror),
                resend_changed=False,
                rebuild=True,
                removal="a rebuild under the same audience_name (LINE audiences are add-only)",
                target=f"audience_id={settings.audience_id}"
                if settings.use_audience_id
                else f"audience_name={settings.audience_name}",
            )
        return SyncSpec(
            ("id",),
            resend_changed=False,
            namespace=settings.campaign_key,
            settle_window=resend_window(settings.retry_settings()),
        )

    def sync_account(
        self,
        resource: LineMessagingResource,
        settings: LineMessagingSettings,
        fingerprint: Callable[[str], str],
    ) -> str:
        """The channel: its bot's ``userId`` (``GET /v2/bot/info``), so another channel (a
        changed connection) starts empty and gets every row; its audiences, recipients' user
        IDs and retry keys are all per channel."""
        return "line=" + resource.get_client(settings.retry_settings()).bot_user_id()

    def resend(
        self,
        resource: LineMessagingResource,
        settings: LineMessagingSettings,
        kind: str,
        body: bytes,
        key: str,
        age: float = 0.0,
    ) -> tuple[str, dict[str, Any]]:
        """An earlier run's push or multicast again, same body and ``X-Line-Retry-Key``, first
        sent ``age`` seconds ago: 409 (LINE already accepted that key;
        ``X-Line-Accepted-Request-Id`` names the request) or 2xx is accepted, a 400 refused, the
        monthly-quota 429 delivered nothing ("Retry failed API requests":
        https://developers.line.biz/en/docs/messaging-api/retrying-api-request/). The client's
        retries are cut so the last attempt ends before the key's 24 hours do
        (:func:`.sending.retries_left`); 'expired' when not even one attempt would. Other
        errors raise :class:`~line_exports.sync_settle.ResendFailed` once those retries are
        spent."""
        retry = retries_left(settings.retry_settings(), age)
        if retry is None:
            return "expired", {}
        client = resource.get_client(retry)
        try:
            status, answer = client.send("push" if kind == "push" else "multicast", body, key)
        except ApiError as exc:
            final = final_answer(exc)
            if final == "refused":
                return "refused", {"message": f"LINE refused: {refusal(exc)}"}
            if final == "quota":
                return "not_delivered", {"message": exc.body}
            # No token, no request: its rows were not sent again.
            raise ResendFailed(exc, made=not isinstance(exc, TokenError)) from exc
        return "accepted", {"status": status, "request_id": answer.get("_request_id")}

    def refusal_is_transient(self, rule: str, message: str) -> bool:
        """A push, multicast or rich-menu link LINE answered 400 for (an unknown or blocked
        user, a message LINE will not take) waits until the row changes; a monthly quota
        refusal comes back next run (the quota renews)."""
        return rule not in LINE_400_RULES

    def rebuild_reason(
        self, resource: LineMessagingResource, settings: LineMessagingSettings, run: ExportRun
    ) -> str:
        client = resource.get_client(settings.retry_settings())
        return audience_mirror.rebuild_reason(client, settings)

    def rebuild(
        self,
        resource: LineMessagingResource,
        settings: LineMessagingSettings,
        rows: ValidRows,
        departed: pd.DataFrame,
        run: ExportRun,
        reason: str,
    ) -> tuple[DeliveryReport, RemovalReport]:
        """A new audience of the same name with every current ID, READY, old ones deleted."""
        client = resource.get_client(settings.retry_settings())
        client.begin_run()
        before = self._requests(client)
        screened: list[Any] = []
        screen_meta: dict[str, Any] = {}
        if not settings.is_ifa_audience:  # consent and suppression, as deliver screens them
            rows, screened, screen_meta = screen(rows, settings.skip_suppressed)
        try:
            report, removal = audience_mirror.rebuild(client, settings, rows, departed, run, reason)
        except ApiError as exc:
            raise dg.Failure(description=explain(exc), allow_retries=exc.retryable) from None
        report.rejected.extend(screened)
        report.metadata.update(screen_meta)
        report.requests = self._requests(client) - before
        return report, removal

    def target_label(self, settings: LineMessagingSettings) -> str:
        if settings.target == "audience":
            which = (
                f"#{settings.audience_id}"
                if settings.use_audience_id
                else repr(settings.audience_name)
            )
            return f"line audience {which}{' (IFA)' if settings.is_ifa_audience else ''}"
        return f"line {settings.target.replace('_', ' ')}"

    def plan_capacity(
        self, resource: LineMessagingResource, settings: LineMessagingSettings, rows: ValidRows
    ) -> tuple[list[str], str, int | None]:
        """Push and multicast: the messages a run would need (rows whose rendered message
        passes LINE's limits, or distinct recipients) against the monthly quota read now from
        ``GET /v2/bot/message/quota`` and ``/quota/consumption``; nothing is sent."""
        if settings.target in ("audience", "rich_menu"):
            return [], "", None
        if settings.target in ("narrowcast", "broadcast"):
            return (
                [
                    f"{settings.target}: one request per row; the quota is checked when the run "
                    "starts, against an upper bound of the recipients (see narrowcast.py)"
                ],
                "",
                None,
            )
        lines: list[str] = []
        note = ""
        if settings.target == "push_message":
            template = settings.push_template()
            columns = [ROW_NUMBER, "id", *[c for c in template.columns if c != "id"]]
            bad = bad_rendered_rows(template, rows, columns, DeliveryReport())
            if bad:
                lines.append(f"{len(bad):,} rows render a message LINE would refuse")
                if not settings.skip_invalid_message:
                    note = (
                        f"would fail: {len(bad):,} rows render an invalid message and "
                        "skip_invalid_message is false"
                    )
            needed, kind = rows.count - len(bad), "push"
        else:
            needed, kind = rows.count, "multicast"  # validation rejected the repeats
        client = resource.process_config_and_initialize().get_client(settings.retry_settings())
        quota = Quota.read(client, needed)
        more, over = plan_lines(quota, settings, kind)
        cap = needed if quota.fits or over else quota.remaining
        return lines + more, note or over, 0 if (note or over) else cap

    def deliver(
        self,
        resource: LineMessagingResource,
        settings: LineMessagingSettings,
        rows: ValidRows,
        run: ExportRun,
    ) -> DeliveryReport:
        pool_size = {
            "push_message": settings.push_concurrency,
            "multicast_message": settings.multicast_concurrency,
        }.get(settings.target, 10)
        client = resource.get_client(settings.retry_settings(), pool_size=pool_size)
        client.begin_run()
        before = self._requests(client)
        retries, limited = client.http.stats.retries, client.http.stats.rate_limited
        screened: list[Any] = []
        screen_meta: dict[str, Any] = {}
        if settings.target in ("push_message", "multicast_message") or (
            settings.target == "audience" and not settings.is_ifa_audience
        ):
            rows, screened, screen_meta = screen(rows, settings.skip_suppressed)
        try:
            if settings.target == "audience":
                report = deliver_audience(client, settings, rows, run)
            elif settings.target == "push_message":
                report = deliver_push(client, settings, rows, run)
            elif settings.target == "rich_menu":
                report = deliver_rich_menu(client, settings, rows, run)
            elif settings.target in ("narrowcast", "broadcast"):
                report = deliver_campaign(client, settings, rows, run, settings.target)
            else:
                report = deliver_multicast(client, settings, rows, run)
        except ApiError as exc:
            done = run.report or run.new_report()  # what the export counts of a failed run
            done.rejected.extend(screened)
            done.requests = self._requests(client) - before
            raise dg.Failure(description=explain(exc), allow_retries=exc.retryable) from None
        except DeliveryFailed as exc:  # the screened rows stay rejected in a failed run too
            exc.report.rejected.extend(screened)
            exc.report.metadata.update(screen_meta)
            exc.report.requests = self._requests(client) - before
            raise
        except dg.DagsterExecutionInterruptedError:  # a signal: the export counts run.report
            if run.report is not None:
                run.report.rejected.extend(screened)
                run.report.requests = self._requests(client) - before
            raise
        finally:
            if screened:  # the screened copy of the spool (personal data) goes with the run
                rows.path.unlink(missing_ok=True)
        report.rejected.extend(screened)
        report.metadata.update(screen_meta)
        report.requests = self._requests(client) - before  # token calls included
        report.metadata["retries"] = client.http.stats.retries - retries
        report.metadata["rate_limited_answers"] = client.http.stats.rate_limited - limited
        report.metadata["tokens_issued"] = client.tokens.issued
        if settings.custom_aggregation_units:  # whose statistics results_back reads
            report.metadata["custom_aggregation_units"] = settings.custom_aggregation_units
        return report

    @staticmethod
    def _requests(client: LineMessagingClient) -> int:
        return client.http.stats.requests + (
            client.tokens.http.stats.requests if client.tokens.http else 0
        )


DESTINATION = LineMessagingDestination()
