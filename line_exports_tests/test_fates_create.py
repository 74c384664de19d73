"""A new LINE audience or MAAC custom segment whose create was answered 5xx, then 429
(VERIFY-13k F1).

The create is looked up by name after each attempt that failed (``audience.create_audience``,
``create_once``): a create a 5xx answer made is found and taken (accepted,
``test_retry_fates``). When the lookup finds nothing, the 429 that followed was not processed
("The Messaging API doesn't process requests that return HTTP status code 429",
https://developers.line.biz/en/docs/messaging-api/handling-http-429-errors/), but the 5xx may
still act: LINE says a request answered 5xx may have been processed ("even if you get such
error, there is a possibility that your message was delivered",
https://developers.line.biz/en/docs/messaging-api/retrying-api-request/), a 504's backend may
finish after the lookup, and MAAC documents no 5xx at all. So the rows are of unknown delivery
(a re-run looks the name up again and takes what a late create made), the same whether one 500
or two came first and with or without step retries, and the reason names the 5xx (it said only
"answered 429", or counted 500x2 on a MAAC segment unknown). Real Dagster runs over HTTP to the sandbox, and the real
``line-exports run`` stopped by SIGINT in the 429's Retry-After wait.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of as line_store
from line_exports.sandbox.maac import summary as maac_summary
from line_exports_tests.test_fate_5xx import failure
from line_exports_tests.test_interrupt_reading import HEX_ID, Export, exports, workflow
from line_exports_tests.test_outcomes import adds_up
from line_exports_tests.test_refused_by_api import REQUEST
from line_exports_tests.test_retry_fates import ROWS, step_retry_run
from line_exports_tests.test_stop_counts_interrupt import _table_row, stopped_run

CREATES = ("line_audience", "maac_segment")


def _held(server: SandboxServer, name: str) -> int:
    """Audiences (LINE) or custom segments (MAAC) the sandbox holds."""
    if name == "line_audience":
        return len(line_store(server.sandbox).audiences)
    return len(maac_summary(server.sandbox)["segments"])


@pytest.mark.parametrize(
    ("fives", "retries"),
    [(1, 2), (2, 2), (1, 0)],
    ids=["500_then_429", "500x2_then_429", "500_then_429_no_step_retry"],
)
@pytest.mark.parametrize("name", CREATES)
def test_a_create_answered_500_then_429_with_none_found_is_unknown_naming_the_500(
    sandbox_server: SandboxServer, tmp_path: Path, name: str, fives: int, retries: int
) -> None:
    """The first ``fives`` creates answered 500 (the sandbox not acting), every later one 429:
    unknown 3 in both scenarios and both destinations (a lookup that finds nothing does not
    rule out a 5xx the API may still act on), with the 500s named in the reason and the
    headline; the sandbox holds no audience / segment."""
    path = REQUEST[name]
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=path, method="POST", status=500, times=fives))
    sandbox.add_fault(Fault(path=path, method="POST", status=429, retry_after=0, times=-1))
    result, meta = step_retry_run(sandbox_server, tmp_path, name, retries=retries)
    assert not result.success and adds_up(meta), meta
    counts = tuple(meta[f"rows_{k}"] for k in ("refused_by_api", "delivery_unknown", "unsent"))
    assert counts == (0, ROWS, 0), meta
    assert _held(sandbox_server, name) == 0
    (reason,) = meta["delivery_unknown_reasons"]
    assert reason.startswith(f"a 5xx answer to {fives} earlier attempt(s), then "), reason
    assert "answered 429 to POST " in reason, reason
    assert reason in failure(result), failure(result)


@pytest.mark.parametrize("name", CREATES)
def test_a_create_answered_500_then_no_answer_then_429_stays_unknown(
    sandbox_server: SandboxServer, tmp_path: Path, name: str
) -> None:
    """A create answered 500, then cut off without an answer (the request may still be under
    way at the API), then answered 429 leaves its rows of unknown delivery, the reason naming
    all three."""
    path = REQUEST[name]
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=path, method="POST", status=500, times=1))
    sandbox.add_fault(Fault(path=path, method="POST", drop=True, times=1))
    sandbox.add_fault(Fault(path=path, method="POST", status=429, retry_after=0, times=-1))
    result, meta = step_retry_run(
        sandbox_server, tmp_path, name, retries=0, settings={"max_retry": 2}
    )
    assert not result.success and adds_up(meta), meta
    assert meta["rows_delivery_unknown"] == ROWS, meta
    (reason,) = meta["delivery_unknown_reasons"]
    expected = "no answer to 1 and a 5xx answer to 1 earlier attempt(s), then "
    assert reason.startswith(expected), reason


@pytest.mark.parametrize("name", CREATES)
def test_signal_in_the_429_wait_after_a_500_names_the_500(
    sandbox_server: SandboxServer, tmp_path: Path, name: str
) -> None:
    """``line-exports run`` of 300 rows: the create answered 500, looked up (none), answered
    429 with Retry-After 30, and SIGINT in that wait: the run stops at once, its 300 rows
    of unknown delivery with the 500 named (it said "300 refused", the 500 forgotten,
    VERIFY-13k F1)."""
    rows = 300
    url = sandbox_server.url
    if name == "maac_segment":
        export = exports(url)["maac_segment"]
        export = Export(export.connection, f"{HEX_ID} AS line_uid", export.settings)
    else:
        push = exports(url)["push"]
        settings = "    target: audience\n    audience_name: created\n"
        export = Export(push.connection, f"{HEX_ID} AS id", settings)
    folder = tmp_path / "wf"
    workflow(folder, "create", export, rows, retry=0)
    dig = folder / "create.dig"  # retries enough that the 429 is waited on, not the last word
    dig.write_text(dig.read_text().replace("max_retry: 1", "max_retry: 3"))
    path = REQUEST[name]
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=path, method="POST", status=500, times=1))
    wait = sandbox.add_fault(Fault(path=path, method="POST", status=429, retry_after=30, times=-1))
    returncode, out, err, at_signal, seconds = stopped_run("create", folder, wait, 1)
    assert returncode != 0, out + err
    assert at_signal == wait.hits == 1, (at_signal, wait.hits, out + err)
    counts = _table_row(out, "create")
    assert counts["read"] == rows == counts["unknown"], out
    assert counts["refused"] == counts["unsent"] == counts["accepted"] == 0, out
    assert "stopped by SIGINT" in out + err, out + err
    assert "a 5xx answer to 1 earlier attempt(s), then " in out, out
    assert _held(sandbox_server, name) == 0
    assert seconds < 15, (seconds, out + err)  # not the 30 s wait
