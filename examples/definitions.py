"""The example project: sample exports from the embedded DuckDB file to the sandbox.

Set a destination's token variable (``MAAC_API_TOKEN``, ``LINE_CONVERSION_ACCESS_TOKEN``, ...)
to send the same exports to the real API; point ``SqlSource(url=...)`` at a warehouse to read
real tables. The LINE OA webhook import lands events spooled by ``line-exports webhook serve``.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from line_exports import MaacResource, SqlSource, build_export
from line_exports.destinations.line_conversion import LineConversionResource
from line_exports.webhook.assets import build_webhook_definitions
from line_exports.webhook.config import load_sources

HERE = Path(__file__).parent
QUERIES = HERE / "queries"

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

maac_sample_job = dg.define_asset_job(
    "maac_sample_job", selection=dg.AssetSelection.assets(maac_members, maac_segment)
)
line_conversion_job = dg.define_asset_job(
    "line_conversion_job", selection=dg.AssetSelection.assets(line_conversion_events)
)

exports = dg.Definitions(
    assets=[maac_members, maac_segment, line_conversion_events],
    jobs=[maac_sample_job, line_conversion_job],
    resources={
        "sql_source": SqlSource(),
        "maac": MaacResource.from_env(),
        "line_conversion": LineConversionResource.from_env(),
    },
)
webhook = build_webhook_definitions(
    load_sources(HERE / "webhook_sources.yaml"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

defs = dg.Definitions.merge(exports, webhook)
