"""The rejects file masks the values of personal columns and shows a duplicate's normalized key,
as README's rejects-file paragraph says (VERIFY-13l L5); any other column's value is shown as
held. Real Dagster runs of an upstream asset and its CAPI / MAAC export over HTTP to the
sandbox, reading the rejects file back.
"""

from __future__ import annotations

import csv
import time
from typing import Any

import dagster as dg
import pandas as pd

from line_exports import LineConversionResource, MaacResource, build_export
from line_exports.rules import mask_value
from line_exports.sandbox import SandboxServer


def _rejects(
    name: str, frame: pd.DataFrame, destination: str, settings: dict[str, Any], resource: Any
) -> list[dict[str, str]]:
    @dg.asset(name=f"up_{name}")
    def upstream() -> pd.DataFrame:
        return frame

    export = build_export(
        name,
        destination=destination,
        upstream=f"up_{name}",
        settings={"initial_retry_wait": 1, "max_retry": 1, **settings},
        retry_policy=None,
    )
    result = dg.materialize([upstream, export], resources={destination: resource})
    meta = result.asset_materializations_for_node(name)[0].metadata
    with open(meta["rejects_file"].value, newline="", encoding="utf-8") as f:  # type: ignore[attr-defined]
        return list(csv.DictReader(f))


def test_capi_masks_phone_and_email_and_shows_other_values_as_held(
    sandbox_server: SandboxServer,
) -> None:
    frame = pd.DataFrame(
        {
            "deduplication_key": ["k0", "k1", "k2", "k3"],
            "event_type": "conversion",
            "source_type": "web",
            "event_timestamp": int(time.time()) - 60,
            "external_id": "x",
            "phone": ["0081 90 1234 5678", None, "123", None],
            "email": [None, "ann(at)example.com", None, None],
            "title": pd.Series([None, None, None, b"\xffok"], dtype=object),
        }
    )
    resource = LineConversionResource(line_tag_id="masked", base_url=sandbox_server.url)
    rows = _rejects("masked_capi", frame, "line_conversion", {}, resource)
    shown = {(r["_row_number"], r["column"]): r["value"] for r in rows}
    assert shown == {
        ("1", "phone"): "00*************78",
        ("2", "email"): "an**************om",
        ("3", "phone"): "***",
        ("4", "title"): "\\xFFok",  # not a personal column: as DuckDB prints the BLOB
    }, rows
    assert shown[("1", "phone")] == mask_value("0081 90 1234 5678")


def test_a_maac_duplicate_shows_the_normalized_key_masked(sandbox_server: SandboxServer) -> None:
    frame = pd.DataFrame(
        {
            "line_uid": [f"U{n:032x}" for n in range(3)],
            "mobile": ["0912-345-678", "+886912345678", "0912345678"],
            "customer_id": ["c0", "c1", "c2"],
        }
    )
    settings = {
        "data_object": "members",
        "import_key": "mobile",
        "tags": "t",
        "default_region": "TW",
    }
    resource = MaacResource(base_url=sandbox_server.url, poll_seconds=0.05)
    rows = _rejects("masked_maac", frame, "maac", settings, resource)
    assert [(r["_row_number"], r["rule"], r["value"]) for r in rows] == [
        ("2", "duplicate", "+8*********78"),
        ("3", "duplicate", "+8*********78"),
    ]
    assert mask_value("+886912345678") == "+8*********78"
