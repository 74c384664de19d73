"""LINE audience names are case-insensitive (manage-audience.yml, every ``description``: "This
is case-insensitive, meaning AUDIENCE and audience are considered identical"; issue 13,
VERIFY-13n N4): ``audience_name: spring buyers`` adds to ``Spring Buyers``, and a narrowcast
naming ``spring buyers`` finds it. White space counts (the spec does not say LINE trims names),
and a create under a name LINE already has makes another audience (the spec refuses none)."""

from __future__ import annotations

import json

import requests

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_line_messaging import TOKEN, export, resource, run, users_query
from line_exports_tests.test_line_narrowcast import TEMPLATE, audience


def test_audience_name_in_another_case_adds_to_the_audience(sandbox_server: SandboxServer) -> None:
    res = resource(sandbox_server)
    first = run(
        export("an_first", users_query(3), target="audience", audience_name="Spring Buyers"), res
    )
    again = run(
        export("an_again", users_query(3, 3), target="audience", audience_name="spring buyers"), res
    )
    assert first["audience_action"] == "created"
    assert (again["audience_action"], again["audience_id"]) == ("added", first["audience_id"])
    assert again["rows_accepted"] == 3
    store = store_of(sandbox_server.sandbox)
    assert len(store.audiences) == 1
    assert sum(job.count for job in store.audiences[first["audience_id"]].jobs) == 6
    # White space counts: another name, another audience.
    spaced = run(
        export("an_spaced", users_query(1, 6), target="audience", audience_name="Spring Buyers "),
        res,
    )
    assert spaced["audience_action"] == "created" and spaced["audience_id"] != first["audience_id"]


def test_sandbox_creates_another_audience_under_a_name_in_another_case(
    sandbox_server: SandboxServer,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    made = [
        requests.post(
            f"{sandbox_server.url}/v2/bot/audienceGroup/upload",
            json={"description": name},
            headers=auth,
            timeout=5,
        )
        for name in ("Spring Buyers", "spring buyers")
    ]
    assert [m.status_code for m in made] == [202, 202]
    assert made[0].json()["audienceGroupId"] != made[1].json()["audienceGroupId"]
    listed = requests.get(
        f"{sandbox_server.url}/v2/bot/audienceGroup/list",
        params={"page": 1, "size": 40, "description": "SPRING"},
        headers=auth,
        timeout=5,
    ).json()["audienceGroups"]
    assert sorted(g["description"] for g in listed) == ["Spring Buyers", "spring buyers"]


def test_narrowcast_finds_an_audience_named_in_another_case(sandbox_server: SandboxServer) -> None:
    ident = audience(sandbox_server, "Spring Buyers", range(0, 60))
    recipient = json.dumps({"type": "audience", "description": "spring buyers"})
    meta = run(
        export(
            "nc_case",
            "SELECT 'Spring' AS campaign",
            target="narrowcast",
            template_message=TEMPLATE,
            recipient=recipient,
        ),
        resource(sandbox_server),
    )
    assert meta["recipient_audiences"] == {str(ident): 60}
    assert meta["narrowcast_success_count"] == 60
