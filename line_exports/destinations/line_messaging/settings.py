"""LINE Messaging export settings, hosts, limits and the reference's column tables.

Settings follow TD's "LINE Messaging" export (``line-messaging-export.txt``); rate limits are the
Messaging API reference's: push 2,000 requests/s, multicast 200/s, every audience endpoint
together 60/min, short-lived token issue 370/s.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from line_exports.destination import ExportSettings
from line_exports.destinations.line_messaging.messages import MessageTemplate, TemplateError
from line_exports.http import RateLimit
from line_exports.identities import IFA_NORMALIZE
from line_exports.rules import UUID_PATTERN, Column

API_HOST = "https://api.line.me"
DATA_HOST = "https://api-data.line.me"
SANDBOX_TOKEN = "sandbox-line-channel-token"
SANDBOX_CLIENT_ID = "1650000001"
SANDBOX_CLIENT_SECRET = "sandbox-line-channel-secret"
AUDIENCE_JSON_MAX_IDS = 10_000
AUDIENCE_FILE_MAX_IDS = 1_500_000
AUDIENCE_NAME_MAX = 120
MULTICAST_MAX_RECIPIENTS = 500
MAX_BODY_BYTES = 2 * 1024 * 1024
RETRY_KEY_TTL_SECONDS = 24 * 3600
"""LINE honours an ``X-Line-Retry-Key`` for 24 hours from the first request that carried it
("Retry failed API requests": https://developers.line.biz/en/docs/messaging-api/retrying-api-request/);
after that the same request is a new one and delivers again."""
CLOCK_MARGIN_SECONDS = 10 * 60
"""Of those 24 hours, what a resend leaves unused for clocks: the request's time is this
machine's (or, on a shared ledger, another machine's) clock, LINE counts on its own."""
TOKEN_RENEW_BEFORE_SECONDS = 24 * 3600
AUDIENCE_TIMEOUT_SECONDS = 6 * 3600
PUSH_BATCH_ROWS = 2_000
PUSH_RUN = 16  # pushes a worker sends per task
MULTICAST_READ_ROWS = 50_000  # spool rows read at once, then cut into multicast groups
LIMITS = {
    "push": RateLimit(requests=2000, per_seconds=1),
    "multicast": RateLimit(requests=200, per_seconds=1),
    "audience": RateLimit(requests=60, per_seconds=60),
    "narrowcast": RateLimit(requests=60, per_seconds=3600),
    "broadcast": RateLimit(requests=60, per_seconds=3600),
    "insight": RateLimit(requests=60, per_seconds=3600),
    "richmenu_list": RateLimit(requests=10, per_seconds=1),
    "token": RateLimit(requests=370, per_seconds=1),
    "validate_push": RateLimit(requests=2000, per_seconds=1),
    "validate_multicast": RateLimit(requests=2000, per_seconds=1),
}

USER_ID_PATTERN = r"U[0-9a-f]{32}"
PUSH_TO_PATTERN = r"[UCR][0-9a-f]{32}"
AGGREGATION_UNIT = r"[a-zA-Z0-9_]{1,30}"
RECIPIENT_ALIASES = ("user_id", "line_uid", "uid", "ifa", "to")
USER_ID_MESSAGE = "is not a LINE user ID (U and 32 lowercase hex digits)"


def recipient_column(pattern: str, message: str, normalize: tuple[str, ...] = ("trim",)) -> Column:
    """The reference's recipient column ``id`` (``SELECT my_col AS id``); common names accepted.
    ``normalize``: its :class:`~line_exports.rules.Column` normalize steps (trim by default)."""
    return Column(
        "id",
        required=True,
        pattern=pattern,
        pattern_message=message,
        aliases=RECIPIENT_ALIASES,
        normalize=normalize,
    )


# The reference's column tables, as rules (per target).
AUDIENCE_USER_COLUMNS = (recipient_column(USER_ID_PATTERN, USER_ID_MESSAGE),)
AUDIENCE_IFA_COLUMNS = (
    recipient_column(UUID_PATTERN, "is not an IFA (a UUID such as IDFA or AAID)", IFA_NORMALIZE),
)
PUSH_COLUMNS = (
    recipient_column(
        PUSH_TO_PATTERN, "is not a LINE user, group or room ID (U/C/R and 32 hex digits)"
    ),
)
MULTICAST_COLUMNS = (recipient_column(USER_ID_PATTERN, USER_ID_MESSAGE),)


class LineMessagingSettings(ExportSettings):
    """``result_settings`` of a LINE Messaging export, named as in the reference.

    Deviations, each documented: ``batch_size_multicast`` defaults to LINE's maximum 500 (the
    reference says 10; 500 sends 50x fewer requests); ``notification_disabled`` defaults to
    false (LINE's default and the reference's form; its CLI table says true);
    ``notification_disabled``/``custom_aggregation_units`` apply to push too, as LINE allows.
    """

    target: Literal[
        "audience", "push_message", "multicast_message", "narrowcast", "broadcast", "rich_menu"
    ] = Field(
        "audience",
        description="audience, push_message, multicast_message, narrowcast or broadcast "
        "(one request per row, see narrowcast.py), rich_menu (link users, see rich_menu.py)",
    )
    audience_name: str | None = Field(
        None,
        description="Audience: name to create, or to add to if it exists (case-insensitive, as LINE)",
    )
    audience_id: int | None = Field(
        None, ge=1, description="Audience: existing audience ID (with use_audience_id)"
    )
    use_audience_id: bool = Field(
        False, description="Audience: add to audience_id instead of finding audience_name"
    )
    is_ifa_audience: bool = Field(
        False, description="Audience: IDs are IFAs (IDFA/AAID) instead of LINE user IDs"
    )
    template_message: str | None = Field(
        None,
        description="Push: a message object (or a list of up to 5) as JSON, with {{column}} placeholders",
    )
    template_message_multicast: str | None = Field(
        None,
        description="Multicast: a message object (or a list of up to 5) as JSON, no placeholders",
    )
    skip_invalid_message: bool = Field(
        True, description="Push/audience: skip invalid rows or refused recipients and go on"
    )
    skip_multicast_invalid_message: bool = Field(
        True, description="Multicast: skip invalid or refused recipients and go on"
    )
    notification_disabled: bool = Field(False, description="Send silently (no push notification)")
    custom_aggregation_units: str | None = Field(
        None, description="One aggregation unit name: 1-30 of a-z, A-Z, 0-9, _ (case-sensitive)"
    )
    batch_size_multicast: int = Field(
        MULTICAST_MAX_RECIPIENTS,
        ge=1,
        le=MULTICAST_MAX_RECIPIENTS,
        description="Recipients per multicast request, 1-500 (default 500, LINE's maximum; the reference says 10)",
    )
    push_concurrency: int = Field(
        50, ge=1, le=500, description="Push requests in flight at once (paced to 2,000/s)"
    )
    multicast_concurrency: int = Field(
        8,
        ge=1,
        le=100,
        description="Multicast requests in flight at once (paced to 200/s; 1 when skip_multicast_invalid_message is false)",
    )
    over_quota: Literal["fail", "send_up_to_quota"] = Field(
        "fail",
        description="When the run needs more messages than the month's quota leaves: fail before "
        "sending (default), or send_up_to_quota (the rest reported as rejects)",
    )
    recipient: str | None = Field(
        None,
        description="Narrowcast: LINE's recipient object as JSON (audience objects by "
        'audienceGroupId or by name: {"type": "audience", "description": "name"}; operator '
        "and/or/not; redelivery); empty sends to every friend the filter keeps",
    )
    filter: str | None = Field(
        None, description='Narrowcast: LINE\'s filter object as JSON ({"demographic": ...})'
    )
    limit_max: int | None = Field(
        None, ge=1, description="Narrowcast: limit.max, the most recipients (chosen at random)"
    )
    up_to_remaining_quota: bool = Field(
        False,
        description="Narrowcast: limit.upToRemainingQuota (send within what the quota leaves)",
    )
    forbid_partial_delivery: bool = Field(
        False,
        description="Narrowcast: limit.forbidPartialDelivery (with up_to_remaining_quota: cancel "
        "rather than reach only part of the audience)",
    )
    progress_timeout: float = Field(
        AUDIENCE_TIMEOUT_SECONDS,
        ge=10,
        description="Narrowcast: seconds to wait for LINE's progress to reach succeeded or failed",
    )
    campaign_key: str = Field(
        "",
        description="Push/multicast with sync_mode diff: a recipient gets this campaign once "
        "across runs (default: the export is one campaign; a new key reaches everyone again)",
    )
    skip_suppressed: bool = Field(
        True,
        description="Audience/push/multicast: reject users in the suppression table (they "
        "unfollowed, per the webhook import's events) instead of sending (see consent.py)",
    )
    validate_with_api: bool = Field(
        False,
        description="Also check the message with LINE's /v2/bot/message/validate/* before sending",
    )

    @model_validator(mode="after")
    def _required_by_target(self) -> LineMessagingSettings:
        if self.target == "audience":
            if self.use_audience_id:
                if self.audience_id is None:
                    raise ValueError("audience_id is required when use_audience_id is true")
            else:
                name = (self.audience_name or "").strip()
                if not name:
                    raise ValueError(
                        "audience_name is required when target is audience and use_audience_id is false"
                    )
                if len(self.audience_name or "") > AUDIENCE_NAME_MAX:
                    raise ValueError(
                        f"audience_name is {len(self.audience_name or '')} characters; LINE allows 1 to {AUDIENCE_NAME_MAX}"
                    )
                if re.search(r"[\x00-\x1f\x7f]", self.audience_name or ""):
                    raise ValueError(
                        "audience_name must not contain control characters such as newlines"
                    )
        elif self.target == "rich_menu":
            pass  # columns only (rich_menu.py)
        elif self.target in ("narrowcast", "broadcast"):
            from line_exports.destinations.line_messaging.targeting import check_campaign_settings

            check_campaign_settings(self)
        elif self.target == "push_message":
            if not (self.template_message or "").strip():
                raise ValueError("template_message is required when target is push_message")
            self.push_template()
        else:
            if not (self.template_message_multicast or "").strip():
                raise ValueError(
                    "template_message_multicast is required when target is multicast_message"
                )
            self.multicast_template()
        if self.custom_aggregation_units is not None and not re.fullmatch(
            AGGREGATION_UNIT, self.custom_aggregation_units
        ):
            raise ValueError(
                "custom_aggregation_units must be one unit name of 1 to 30 half-width alphanumerics or underscores"
            )
        return self

    def push_template(self) -> MessageTemplate:
        return MessageTemplate.parse(self.template_message or "", target="push")

    def campaign_template(self) -> MessageTemplate:
        """Narrowcast / broadcast: ``template_message``, filled per row like a push's."""
        return MessageTemplate.parse(self.template_message or "", target=self.target)

    def multicast_template(self) -> MessageTemplate:
        try:
            return MessageTemplate.parse(
                self.template_message_multicast or "", target="multicast", allow_placeholders=False
            )
        except TemplateError as exc:
            raise TemplateError(
                f"{exc} (a multicast message is the same for every recipient: no placeholders)"
            ) from None

    def options(self) -> dict[str, Any]:
        """Request fields besides ``to`` and ``messages``."""
        extra: dict[str, Any] = {}
        if self.notification_disabled:
            extra["notificationDisabled"] = True
        if self.custom_aggregation_units:
            extra["customAggregationUnits"] = [self.custom_aggregation_units]
        return extra
