"""A 5xx is remembered across Dagster step retries (VERIFY-13h N2, N3).

LINE, "Retry failed API requests" (https://developers.line.biz/en/docs/messaging-api/
retrying-api-request): after a 5xx "there is a possibility that your message was delivered";
a 429 is not processed ("Handle HTTP status code 429 errors"), so it cannot undo what a 5xx
may have done. So a call whose first attempt(s) LINE answered 500 (acting on it) and every
later one 429, over three step attempts, keeps its rows of unknown delivery; the reasons say
what was answered (500, then 429), not "no answer". Real Dagster runs with a ``RetryPolicy``
(``test_step_retry_outcomes._run``: 3 rows, 2 HTTP attempts a call, 3 step attempts) over
HTTP to the sandbox, every destination's row-carrying request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import requests

from line_exports import build_export
from line_exports.run_summary import attention_lines, outcomes
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import summary
from line_exports.sources import SqlSource
from line_exports_tests.test_fate_5xx import failure
from line_exports_tests.test_line_messaging import TOKEN
from line_exports_tests.test_outcomes import COUNTER, FAST, adds_up, outcome_metadata, uid
from line_exports_tests.test_refused_by_api import CASES_HERE, ONE_RETRY, REQUEST

ROWS = 3
UPLOAD = "/v2/bot/audienceGroup/upload"


def step_retry_run(
    server: SandboxServer,
    tmp: Path,
    name: str,
    retries: int = 2,
    audience: str | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[dg.ExecuteInProcessResult, dict[str, Any]]:
    """``name``'s export of 3 valid rows, one HTTP retry a call, ``retries`` Dagster step
    retries (an audience export: to ``audience``, else a new one), with ``settings``."""
    case = CASES_HERE[name]
    frame = case.table(["valid"] * ROWS).frame  # noqa: F841 - read by DuckDB below
    db = tmp / f"r{next(COUNTER)}.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t as select * from frame")
    audience = audience or f"a{next(COUNTER)}"
    extra = {"audience_name": audience} if name == "line_audience" else {}
    asset = build_export(
        f"s{next(COUNTER)}",
        destination=case.destination,
        query="select * from t",
        settings={**FAST, **case.settings, **ONE_RETRY, **extra, **(settings or {})},
        retry_policy=dg.RetryPolicy(max_retries=retries, delay=0),
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            case.destination: case.resource(server),
        },
        raise_on_error=False,
    )
    return result, outcome_metadata(result)


FOUND = ("line_audience", "maac_segment")
"""Destinations that look up by name what a create answered 5xx made, and add to it."""


def expected(name: str, fives: int) -> tuple[int, int, int]:
    """(unknown, refused, unsent) when the first ``fives`` requests are answered 500 and every
    later one 429: a push is one request a row (only the first ``fives`` met a 500); a
    broadcast's first row stops the run (its other rows unsent); the rest send the 3 rows in
    one request."""
    if name == "line_push":
        return fives, ROWS - fives, 0
    if name == "line_broadcast":
        return 1, 0, ROWS - 1
    return ROWS, 0, 0


@pytest.mark.parametrize("fives", [1, 2], ids=["500_then_429", "500x2_then_429"])
@pytest.mark.parametrize("name", list(REQUEST))
def test_a_500_then_429s_across_step_retries_is_of_unknown_delivery(
    sandbox_server: SandboxServer, tmp_path: Path, name: str, fives: int
) -> None:
    """The first ``fives`` requests are answered 500 (the API acted), every later one 429, over
    three step attempts: the rows of every request that met a 500 are of unknown delivery, the
    rest (answered only 429) refused, and the reason says what the earlier attempts got (a 5xx
    answer), never "no answer" (VERIFY-13h N2, N3). An audience or MAAC segment the 500 created
    is found by name and added to: accepted."""
    path = REQUEST[name]
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=path, method="POST", status=500, act=True, times=fives))
    sandbox.add_fault(Fault(path=path, method="POST", status=429, retry_after=0, times=-1))
    result, meta = step_retry_run(sandbox_server, tmp_path, name)
    assert adds_up(meta), meta
    if name in FOUND:
        assert result.success and meta["rows_accepted"] == ROWS, meta
        return
    assert not result.success, meta
    counts = tuple(meta[f"rows_{k}"] for k in ("delivery_unknown", "refused_by_api", "unsent"))
    assert counts == expected(name, fives), meta
    reasons = list(meta["delivery_unknown_reasons"])
    assert all(r.startswith("a 5xx answer to ") and "answered 429" in r for r in reasons), reasons
    assert all("may have acted on it" in r for r in reasons), reasons


@pytest.mark.parametrize("name", list(REQUEST))
def test_500_in_every_step_attempt_says_500_not_no_answer(
    sandbox_server: SandboxServer, tmp_path: Path, name: str
) -> None:
    """Every attempt of every step attempt answered 500: of unknown delivery, and the reasons,
    the CLI's warning and the headline say LINE (the API) answered 500, never that an attempt
    got no answer (VERIFY-13h N3: "no answer to 1 earlier attempt(s)" after a step retry, and
    the CLI's "sent, no answer")."""
    sandbox_server.sandbox.add_fault(Fault(path=REQUEST[name], method="POST", status=500, times=-1))
    result, meta = step_retry_run(sandbox_server, tmp_path, name)
    assert not result.success and adds_up(meta), meta
    assert meta["rows_refused_by_api"] == 0 and meta["rows_accepted"] == 0, meta
    assert meta["rows_delivery_unknown"] >= 1, meta
    assert meta["rows_delivery_unknown"] + meta["rows_unsent"] == ROWS, meta
    reasons = list(meta["delivery_unknown_reasons"])
    assert all(" answered 500 to POST " in r for r in reasons), reasons
    said = "\n".join([*attention_lines(outcomes(result)), failure(result)])
    assert f"{meta['rows_delivery_unknown']} rows of unknown delivery" in said, said
    assert "no answer" not in said, said


@pytest.mark.parametrize("fives", [1, 2], ids=["500_then_429", "500x2_then_429"])
def test_an_audience_add_answered_500_then_429s_across_step_retries_is_of_unknown_delivery(
    sandbox_server: SandboxServer, tmp_path: Path, fives: int
) -> None:
    """IDs added to an existing audience (``PUT``): the first ``fives`` attempts answered 500
    (LINE added them), every later one 429, over three step attempts: of unknown delivery, as
    for every other sender (VERIFY-13h "Add to N2"; the upload is recorded pending in the
    ledger before it is sent). A create answered 500 is different: the next attempt looks the
    audience up by name, and adds to it when the 500 made it (accepted, above)."""
    name = "existing"
    answer = requests.post(
        f"{sandbox_server.url}{UPLOAD}",
        json={"description": name, "audiences": [{"id": uid(99)}]},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert answer.status_code == 202, answer.text
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=UPLOAD, method="PUT", status=500, act=True, times=fives))
    sandbox.add_fault(Fault(path=UPLOAD, method="PUT", status=429, retry_after=0, times=-1))
    result, meta = step_retry_run(sandbox_server, tmp_path, "line_audience", audience=name)
    assert not result.success and adds_up(meta), meta
    counts = tuple(meta[f"rows_{k}"] for k in ("delivery_unknown", "refused_by_api", "unsent"))
    assert counts == (ROWS, 0, 0), meta
    (reason,) = meta["delivery_unknown_reasons"]
    assert reason.startswith("a 5xx answer to ") and "answered 429" in reason, reason


def test_groups_a_multicast_retry_stops_before_sending_again_keep_their_5xx(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """Two multicast groups side by side, every attempt answered 500 (LINE delivered both);
    each step retry sends the first again, LINE answers 429, and the run stops before the second
    is sent again: it is counted by what the ledger recorded of it (a 5xx: of unknown delivery),
    not unsent (``sending.count_not_resent``, as the settle step counts them)."""
    path = REQUEST["line_multicast"]
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=path, method="POST", status=500, act=True, times=4))
    sandbox.add_fault(Fault(path=path, method="POST", status=429, retry_after=0, times=-1))
    groups = {"batch_size_multicast": 2, "multicast_concurrency": 2}
    result, meta = step_retry_run(sandbox_server, tmp_path, "line_multicast", settings=groups)
    assert summary(sandbox)["messages_delivered"] == ROWS
    assert not result.success and adds_up(meta), meta
    counts = tuple(meta[f"rows_{k}"] for k in ("delivery_unknown", "refused_by_api", "unsent"))
    assert counts == (ROWS, 0, 0), meta
