"""A LINE IFA audience counts one device once whatever the case of its hex digits (VERIFY-13c
F6): the exporter uploads it once (the others are ``duplicate`` rejects) and the sandbox, like
LINE, keeps one device for ``EA7583CD-…`` and ``ea7583cd-…`` (identities.normalize_ifa).
Real Dagster runs and HTTP over loopback."""

from __future__ import annotations

import requests

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_line_messaging import TOKEN, export, resource, run

UPPER = "EA7583CD-A667-48BC-B806-42ECB2B48606"
OTHER = "cdda802e-fb9c-47ad-9794-0794d394c912"


def test_an_ifa_in_two_cases_is_uploaded_once_and_counted_once(
    sandbox_server: SandboxServer,
) -> None:
    spellings = [UPPER, UPPER.lower(), f" {UPPER} ", OTHER.upper(), OTHER]
    query = " UNION ALL ".join(f"SELECT {n} AS n, '{v}' AS id" for n, v in enumerate(spellings))
    meta = run(
        export(
            "ifa_case",
            f"SELECT id FROM ({query}) ORDER BY n",
            target="audience",
            audience_name="ifa case",
            is_ifa_audience=True,
        ),
        resource(sandbox_server),
    )
    assert meta["rows_rejected"] == 3 and meta["rows_accepted"] == 2
    assert meta["rejects_by_rule"] == {"id: duplicate": 3}
    assert meta["audience_count"] == 2
    audience = store_of(sandbox_server.sandbox).audiences[meta["audience_id"]]
    assert audience.ids == {UPPER.lower(), OTHER}  # uploaded once each, lower case


def test_the_sandbox_counts_an_ifa_uploaded_in_two_cases_as_one_device(
    sandbox_server: SandboxServer,
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    created = requests.post(
        f"{sandbox_server.url}/v2/bot/audienceGroup/upload",
        json={
            "description": "ifa by hand",
            "isIfaAudience": True,
            "audiences": [{"id": UPPER}, {"id": UPPER.lower()}],
        },
        headers=headers,
        timeout=5,
    )
    assert created.status_code == 202
    audience_id = created.json()["audienceGroupId"]
    added = requests.put(
        f"{sandbox_server.url}/v2/bot/audienceGroup/upload",
        json={"audienceGroupId": audience_id, "audiences": [{"id": UPPER.title()}]},
        headers=headers,
        timeout=5,
    )
    assert added.status_code == 202
    store_of(sandbox_server.sandbox).audiences[audience_id].settle(float("inf"))
    group = requests.get(
        f"{sandbox_server.url}/v2/bot/audienceGroup/{audience_id}", headers=headers, timeout=5
    ).json()["audienceGroup"]
    assert group["audienceCount"] == 1
