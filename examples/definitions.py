"""The example project: sample exports from the embedded DuckDB file to the sandbox.

Set a destination's token variable (``MAAC_API_TOKEN``, ``LINE_CONVERSION_ACCESS_TOKEN``, ...)
to send the same exports to the real API; point ``SqlSource(url=...)`` at a warehouse to read
real tables. The LINE OA webhook import lands events spooled by ``line-exports webhook serve``;
``line_suppression`` turns its follow/unfollow events into the users the LINE audience, push and
multicast exports skip (rule ``suppressed``: LINE answers 200 to a user who blocked the account
and drops the message).
Every export brings its results back (``line_exports.results_back``): after each send and once a
day for 14 days, what LINE, MAAC and LinkedIn report is observed on the export asset.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from line_exports import (
    LineConversionResource,
    LineMessagingResource,
    LinkedInResource,
    MaacResource,
    SqlSource,
    build_export,
)
from line_exports.destinations.line_messaging.consent import build_suppression_asset
from line_exports.results_back import results_back_for
from line_exports.webhook.assets import build_webhook_definitions
from line_exports.webhook.config import load_sources

HERE = Path(__file__).parent
QUERIES = HERE / "queries"
WEBHOOK_SOURCES = load_sources(HERE / "webhook_sources.yaml")

# Rebuilt after the webhook import's events land; read by every LINE audience/push/multicast
# export (skip_suppressed, default true), hence their deps on it.
line_suppression = build_suppression_asset(WEBHOOK_SOURCES)

maac_members = build_export(
    "maac_members",
    destination="maac",
    query=QUERIES / "maac_members.sql",
    settings={
        "data_object": "members",
        "import_key": "line_uid",
        "tags": "import210707, apple product interested",
    },
    description="Sample LINE members (DuckDB table line_members) imported into MAAC with tags.",
)
maac_segment = build_export(
    "maac_segment",
    destination="maac",
    query=QUERIES / "maac_segment.sql",
    settings={"data_object": "segments", "segment_name": "sample segment", "update_segment": True},
    description="Sample LINE UIDs (DuckDB table segment_users) as a MAAC custom segment, replaced each run.",
)
line_conversion_events = build_export(
    "line_conversion_events",
    destination="line_conversion",
    query=QUERIES / "line_conversion_events.sql",
    settings={"ignore_invalid_records": True},
    description="Sample web conversions (DuckDB table conversion_events) sent to the LINE Conversion API.",
)

line_audience = build_export(
    "line_audience",
    destination="line_messaging",
    deps=[line_suppression.key],
    query=QUERIES / "line_audience.sql",
    settings={"target": "audience", "audience_name": "sample audience"},
    description="Sample LINE user IDs uploaded to a LINE audience (created, or added to by exact name).",
)
line_push = build_export(
    "line_push",
    destination="line_messaging",
    deps=[line_suppression.key],
    query=QUERIES / "line_push.sql",
    settings={
        "target": "push_message",
        "template_message": '{"type": "text", "text": "Hi {{display_name}}, your coupon {{coupon_code}} is ready."}',
        "custom_aggregation_units": "sample_coupon",  # LINE's per-unit statistics of this send
    },
    description="One templated push message per sample recipient.",
)
line_multicast = build_export(
    "line_multicast",
    destination="line_messaging",
    deps=[line_suppression.key],
    query=QUERIES / "line_multicast.sql",
    settings={
        "target": "multicast_message",
        "template_message_multicast": '{"type": "text", "text": "Spring sale starts today!"}',
        "custom_aggregation_units": "spring_sale",
    },
    description="One message multicast to every sample recipient, 500 per request.",
)
linkedin_contacts = build_export(
    "linkedin_contacts",
    destination="linkedin",
    query=QUERIES / "linkedin_contacts.sql",
    settings={
        "ad_account_id": "512345678",  # the sandbox's ad account; yours in production
        "audience_type": "users",
        "segment_name": "sample contacts",
        "ignore_invalid_records": True,
    },
    description="Sample contacts added to a LinkedIn DMP segment (hashed emails, device IDs, names).",
)
linkedin_companies = build_export(
    "linkedin_companies",
    destination="linkedin",
    query=QUERIES / "linkedin_companies.sql",
    settings={
        "ad_account_id": "512345678",  # the sandbox's ad account; yours in production
        "audience_type": "companies",
        "segment_name": "sample companies",
        "ignore_invalid_records": True,
    },
    description="Sample companies added to a LinkedIn DMP segment.",
)

maac_sample_job = dg.define_asset_job(
    "maac_sample_job", selection=dg.AssetSelection.assets(maac_members, maac_segment)
)
line_conversion_job = dg.define_asset_job(
    "line_conversion_job", selection=dg.AssetSelection.assets(line_conversion_events)
)
line_messaging_job = dg.define_asset_job(
    "line_messaging_job",
    selection=dg.AssetSelection.assets(line_audience, line_push, line_multicast),
)
linkedin_job = dg.define_asset_job(
    "linkedin_job", selection=dg.AssetSelection.assets(linkedin_contacts, linkedin_companies)
)
all_exports_job = dg.define_asset_job(
    "all_exports_job", selection=dg.AssetSelection.groups("exports")
)

EXPORTS = [
    maac_members,
    maac_segment,
    line_conversion_events,
    line_audience,
    line_push,
    line_multicast,
    linkedin_contacts,
    linkedin_companies,
]

defs = dg.Definitions.merge(
    dg.Definitions(
        assets=[*EXPORTS, line_suppression],
        jobs=[
            maac_sample_job,
            line_conversion_job,
            line_messaging_job,
            linkedin_job,
            all_exports_job,
        ],
        resources={
            "sql_source": SqlSource(),
            "maac": MaacResource.from_env(),
            "line_conversion": LineConversionResource.from_env(),
            "line_messaging": LineMessagingResource.from_env(),
            "linkedin": LinkedInResource.from_env(),
        },
    ),
    # Checks results_back / segment_ready / match_rate / volume and a daily sensor per export;
    # line_statistics: this LINE account (the sandbox) is granted per-unit statistics.
    results_back_for(EXPORTS, line_statistics=True),
    build_webhook_definitions(
        WEBHOOK_SOURCES,
        default_status=dg.DefaultScheduleStatus.STOPPED,
    ),
)
