"""LINE Messaging API: upload audiences, push a templated message per row, multicast to batches.

Settings follow TD's "LINE Messaging" export (``line-messaging-export.txt``); every request
follows LINE's official OpenAPI (``line/line-openapi``: ``messaging-api.yml``,
``manage-audience.yml``, ``channel-access-token.yml``). One module per concern: ``settings``
(settings, limits, column rules), ``auth`` (tokens), ``client`` (HTTP client and resource),
``messages`` (message templates), ``sending`` (one request under the ledger), ``audience``,
``push`` and ``multicast`` (the three targets).
"""

from __future__ import annotations

import dagster as dg

from line_exports.destination import DeliveryReport, Destination, ExportRun, ValidRows
from line_exports.destinations.line_messaging.audience import deliver_audience, id_files
from line_exports.destinations.line_messaging.client import (
    LineMessagingClient,
    LineMessagingResource,
    explain,
)
from line_exports.destinations.line_messaging.multicast import deliver_multicast
from line_exports.destinations.line_messaging.push import deliver_push
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
from line_exports.rules import Column, RuleSet

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


class LineMessagingDestination(Destination):
    type_name = "line_messaging"
    kind = "line"
    settings_class = LineMessagingSettings
    resource_class = LineMessagingResource
    pool = "line_messaging_api"
    invalid_policy_setting = "skip_invalid_message"
    auth_fields = ("auth_method", "access_token", "client_id", "client_secret")

    def ruleset(self, settings: LineMessagingSettings) -> RuleSet:
        if settings.target == "audience":
            return RuleSet(
                AUDIENCE_IFA_COLUMNS if settings.is_ifa_audience else AUDIENCE_USER_COLUMNS
            )
        if settings.target == "multicast_message":
            return RuleSet(MULTICAST_COLUMNS)
        template = settings.push_template()
        # Every placeholder must be a column; an empty value is invalid (TD drops NULL/empty).
        extra = tuple(
            Column(name, required=True, normalize=()) for name in template.columns if name != "id"
        )
        return RuleSet(PUSH_COLUMNS + extra)

    def invalid_policy(self, settings: LineMessagingSettings) -> tuple[str, bool]:
        if settings.target == "multicast_message":
            return "skip_multicast_invalid_message", settings.skip_multicast_invalid_message
        return "skip_invalid_message", settings.skip_invalid_message

    def target_label(self, settings: LineMessagingSettings) -> str:
        if settings.target == "audience":
            which = (
                f"#{settings.audience_id}"
                if settings.use_audience_id
                else repr(settings.audience_name)
            )
            return f"line audience {which}{' (IFA)' if settings.is_ifa_audience else ''}"
        return f"line {settings.target.replace('_', ' ')}"

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
        try:
            if settings.target == "audience":
                report = deliver_audience(client, settings, rows, run)
            elif settings.target == "push_message":
                report = deliver_push(client, settings, rows, run)
            else:
                report = deliver_multicast(client, settings, rows, run)
        except ApiError as exc:
            raise dg.Failure(description=explain(exc), allow_retries=exc.retryable) from None
        report.requests = self._requests(client) - before  # token calls included
        report.metadata["retries"] = client.http.stats.retries - retries
        report.metadata["rate_limited_answers"] = client.http.stats.rate_limited - limited
        report.metadata["tokens_issued"] = client.tokens.issued
        return report

    @staticmethod
    def _requests(client: LineMessagingClient) -> int:
        return client.http.stats.requests + (
            client.tokens.http.stats.requests if client.tokens.http else 0
        )


DESTINATION = LineMessagingDestination()
