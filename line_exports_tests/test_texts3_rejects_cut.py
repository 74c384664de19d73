"""A value the rejects file cuts says it is cut and how long it was (VERIFY-13r R6).

The rejects file showed a refused value's first 200 characters and nothing more, so a
"company_name is longer than 255 characters" reason sat beside a value of 200 characters that
looked whole. Now a longer value is its first 200 characters followed by ``… (N characters)``
(code points, as the length rules count them), in a rule's reject, a ``duplicate`` reject
(the key as compared) and a masked one (masked over the whole value, then cut) alike; a value
of 200 characters or fewer is shown whole (README, the rejects-file paragraph). One Dagster run
of a LinkedIn companies export and a CAPI export to the sandbox over HTTP.
"""

from __future__ import annotations

import csv
import json
import time

import dagster as dg
import pandas as pd

from line_exports import LineConversionResource, LinkedInResource, build_export
from line_exports.sandbox import Sandbox
from line_exports.sandbox.line_conversion import events_of
from line_exports_tests.test_upstream_exact import FAST, RecordingServer, _upstream

ASTRAL = "\U0001d400"  # one code point, two UTF-16 units
COMPANIES = [
    "x" * 1000,  # 1: longer than 255: cut
    ASTRAL * 300,  # 2: longer than 255: cut, counted in code points
    "B" * 250,  # 3: sent
    "b" * 250 + " ",  # 4: a duplicate of row 3 (trimmed, lower-cased): its key is cut
    "z" * 256,  # 5: one past the limit: cut
    "y" * 199 + "é",  # 6: sent (200 characters)
]
LONG_EMAIL = "a" * 299 + "@"  # 7 in CAPI: not an email, masked then cut


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict[str, object]:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def _rejects(meta: dict[str, object]) -> dict[int, dict[str, str]]:
    with open(str(meta["rejects_file"]), newline="", encoding="utf-8") as f:
        return {int(r["_row_number"]): r for r in csv.DictReader(f)}


def test_a_cut_value_says_it_is_cut_and_how_long_it_was_over_http() -> None:
    server = RecordingServer(Sandbox(rate_scale=100, job_seconds=0.05))
    now = int(time.time()) - 60
    capi = pd.DataFrame(
        {
            "deduplication_key": ["k1", "k2"],
            "event_type": "conversion",
            "source_type": "web",
            "event_timestamp": now,
            "email": [LONG_EMAIL, "ann@example.com"],
            "title": ["t" * 200, "ok"],
        }
    )
    with server:
        assets = [
            _upstream("cut_companies", pd.DataFrame({"company_name": COMPANIES})),
            build_export(
                "e_cut_companies",
                destination="linkedin",
                upstream="up_cut_companies",
                settings={
                    **FAST,
                    "ad_account_id": "512345678",
                    "segment_name": "cut",
                    "audience_type": "companies",
                    "ignore_invalid_records": True,
                },
                retry_policy=None,
            ),
            _upstream("cut_capi", capi),
            build_export(
                "e_cut_capi",
                destination="line_conversion",
                upstream="up_cut_capi",
                settings=FAST,
                retry_policy=None,
            ),
        ]
        resources = {
            "linkedin": LinkedInResource(api_url=server.url, new_segment_wait=0),
            "line_conversion": LineConversionResource(line_tag_id="cut", base_url=server.url),
        }
        result = dg.materialize(assets, resources=resources, raise_on_error=False)
        assert result.success
        sent = [
            element["companyName"]
            for path, body in server.bodies
            if path.endswith("/companies") and body
            for element in json.loads(body).get("elements", [])
        ]
        events = events_of(server.sandbox, "cut")

    assert sorted(sent) == sorted(["B" * 250, "y" * 199 + "é"])
    meta = _meta(result, "e_cut_companies")
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (6, 4, 2)
    rejects = _rejects(meta)
    assert {row: r["rule"] for row, r in rejects.items()} == {
        1: "max_length",
        2: "max_length",
        4: "duplicate",
        5: "max_length",
    }
    assert "longer than 255 characters" in rejects[1]["message"]
    assert rejects[1]["value"] == "x" * 200 + "\u2026 (1000 characters)"
    assert rejects[2]["value"] == ASTRAL * 200 + "\u2026 (300 characters)"
    assert rejects[4]["value"] == "b" * 200 + "\u2026 (250 characters)"  # the key compared
    assert rejects[5]["value"] == "z" * 200 + "\u2026 (256 characters)"

    meta = _meta(result, "e_cut_capi")
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (2, 1, 1)
    assert set(events) == {"k2"}
    (reject,) = _rejects(meta).values()
    assert reject["column"] == "email"
    # masked over the whole value, then cut: its first two characters and its length
    assert reject["value"] == "aa" + "*" * 198 + "\u2026 (300 characters)"
