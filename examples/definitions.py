"""The example project: sample exports from the embedded DuckDB file to the sandbox.

Set ``MAAC_API_TOKEN`` (and optionally ``MAAC_REGION=japan``) to send the same exports to real
MAAC; point ``SqlSource(url=...)`` at a warehouse to read real tables.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from line_exports import MaacResource, SqlSource, build_export

QUERIES = Path(__file__).parent / "queries"

maac_members = build_export(
    "maac_members",
    destination="maac",
    query=QUERIES / "maac_members.sql",
    settings={"data_object": "members", "import_key": "line_uid", "tags": "import210707, apple product interested"},
    description="Sample LINE members (DuckDB table line_members) imported into MAAC with tags.",
)
maac_segment = build_export(
    "maac_segment",
    destination="maac",
    query=QUERIES / "maac_segment.sql",
    settings={"data_object": "segments", "segment_name": "sample segment", "update_segment": True},
    description="Sample LINE UIDs (DuckDB table segment_users) as a MAAC custom segment, replaced each run.",
)

maac_sample_job = dg.define_asset_job("maac_sample_job", selection=dg.AssetSelection.assets(maac_members, maac_segment))

defs = dg.Definitions(
    assets=[maac_members, maac_segment],
    jobs=[maac_sample_job],
    resources={"sql_source": SqlSource(), "maac": MaacResource.from_env()},
)
