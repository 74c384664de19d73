"""A final 5xx is "delivery unknown", a 429 stays "refused" (issue 13, ``outcomes.fate_of``).

LINE, "Retry failed API requests" (https://developers.line.biz/en/docs/messaging-api/
retrying-api-request): "Your message may fail to be delivered and in that case, you'll get a
5xx error or request time out. But even if you get such error, there is a possibility that
your message was delivered." So the rows of a request the API answered 5xx once the retries are
spent are of unknown delivery, with that answer as their reason, in every destination. A 429
is not processed ("The Messaging API doesn't process requests that return HTTP status code
429", https://developers.line.biz/en/docs/messaging-api/handling-http-429-errors/): refused.

Real Dagster runs over HTTP to the sandbox: CAPI keeping half of what it answers 500 for
(VERIFY-13e F1), a LINE push the sandbox delivers while answering 500, MAAC, LinkedIn and every
other row-carrying request answered 5xx, the same answered 429; and a LINE push ``diff`` run
answered 500 (delivered) whose next tick settles it under the same retry keys, exactly once.
"""

from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from line_exports import LineConversionResource, SqlSource, build_export
from line_exports.run_summary import attention_lines, outcomes
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox import line_messaging as line_box
from line_exports.sandbox.line_conversion import events_of, fail_next_partially
from line_exports.sandbox.line_messaging import summary
from line_exports.sandbox.linkedin import store_of as linkedin_store
from line_exports_tests.test_outcomes import adds_up, check_of, outcome_metadata, run_case
from line_exports_tests.test_refused_by_api import CASES_HERE, ONE_RETRY, REQUEST, _run
from line_exports_tests.test_step_retry_outcomes import _run as step_retry_run
from line_exports_tests.test_sync_settle import (
    NEXT_TICK,
    RECIPIENTS,
    TICK,
    coupon_run,
    inbox_counts,
    store_statuses,
)
from line_exports_tests.test_sync_settle import meta_of as sync_meta_of

PUSH = "/v2/bot/message/push"


def failure(result: dg.ExecuteInProcessResult) -> str:
    """The failed step's headline (what the UI and ``line-exports run`` show first)."""
    (event,) = [e for e in result.all_events if e.is_step_failure]
    error = event.step_failure_data.error
    assert error is not None
    return error.message


def test_capi_events_kept_by_a_500_are_of_unknown_delivery_not_refused(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """VERIFY-13e F1: 2,500 events, 1,000 a request, one retry; CAPI keeps the first half of
    each request and answers 500. Both attempts of the first request are answered 500 and the
    sandbox kept 500 of its events: its 1,000 rows are of unknown delivery (not "refused"), the
    1,500 after it unsent, and the failure gives CAPI's answer and says it may have acted."""
    sandbox = sandbox_server.sandbox
    fail_next_partially(sandbox, times=1000)
    db = tmp_path / "capi.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "create table ev as select i, 'k' || i as deduplication_key from range(2500) t(i)"
        )
    now = int(time.time()) - 60
    asset = build_export(
        "capi500",
        destination="line_conversion",
        retry_policy=None,
        settings={
            "initial_retry_wait": 1,
            "max_retry": 1,
            "connection_timeout": 30,
            "max_records": 1000,
        },
        query=(
            "select deduplication_key, 'conversion' as event_type, 'web' as source_type, "
            f"{now} as event_timestamp, 'x' || i as external_id from ev order by i"
        ),
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "line_conversion": LineConversionResource(
                line_tag_id="t500", base_url=sandbox_server.url
            ),
        },
        raise_on_error=False,
    )
    meta = outcome_metadata(result)
    kept = events_of(sandbox, "t500")
    assert len(kept) == 500 and set(kept) == {f"k{i}" for i in range(500)}  # the first half
    assert not result.success and adds_up(meta), meta
    counts = [meta[f"rows_{k}"] for k in ("refused_by_api", "delivery_unknown", "unsent")]
    assert counts == [0, 1000, 1500] and meta["rows_accepted"] == 0, meta
    (reason,) = meta["delivery_unknown_reasons"]
    assert "LINE Conversion API answered 500 to POST /v1/t500/events" in reason, reason
    assert "may have acted on it" in reason, reason
    with open(meta["rejects_file"], newline="", encoding="utf-8") as f:
        rules = [row["rule"] for row in csv.DictReader(f)]
    assert rules == ["delivery_unknown"] * 1000, set(rules)
    said = failure(result)
    assert "LINE Conversion API answered 500" in said and "may have acted on it" in said, said
    assert "1,000 rows of unknown delivery" in said and "re-execute" in said, said
    assert "refused by the API" not in said, said


def test_a_push_line_delivered_while_answering_500_is_of_unknown_delivery(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """LINE delivers each push and answers 500 to every attempt (the retry under the same key
    delivers nothing more): 3 rows of unknown delivery with LINE's 500, none refused; each
    recipient got the message once."""
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=PUSH, method="POST", status=500, act=True, times=-1))
    result, meta = _run(sandbox_server, tmp_path, "line_push", **ONE_RETRY)
    assert not result.success and adds_up(meta), meta
    assert (meta["rows_refused_by_api"], meta["rows_delivery_unknown"]) == (0, 3), meta
    store = line_box.store_of(sandbox)
    assert store.pushes == 3 and store.conflicts == 3, (store.pushes, store.conflicts)
    reasons = meta["delivery_unknown_reasons"]
    assert all("LINE answered 500" in r and "may have acted" in r for r in reasons), reasons
    said = failure(result)
    assert "500" in said and "3 rows of unknown delivery" in said, said


@pytest.mark.parametrize("name", list(REQUEST))
@pytest.mark.parametrize("status", [500, 503])
def test_a_final_5xx_counts_its_rows_of_unknown_delivery_in_every_destination(
    sandbox_server: SandboxServer, tmp_path: Path, name: str, status: int
) -> None:
    """Each destination's row-carrying request answered ``status`` until the retries are spent:
    its rows are of unknown delivery with the API's answer (it may have acted), never refused;
    the run fails (the API accepted none) saying so."""
    sandbox_server.sandbox.add_fault(
        Fault(path=REQUEST[name], method="POST", status=status, times=-1)
    )
    result, meta = _run(sandbox_server, tmp_path, name, **ONE_RETRY)
    assert not result.success and adds_up(meta), meta
    assert meta["rows_accepted"] == 0 and meta["rows_refused_by_api"] == 0, meta
    assert meta["rows_delivery_unknown"] >= 1, meta
    assert meta["rows_delivery_unknown"] + meta["rows_unsent"] == 3, meta
    # Every attempt is a request made, also in a stopped run (one retry: at least two).
    assert meta["requests"] >= 2, meta
    reasons = meta["delivery_unknown_reasons"]
    assert all(f"answered {status}" in r and "may have acted" in r for r in reasons), reasons
    said = "\n".join(attention_lines(outcomes(result)))
    assert f"{meta['rows_delivery_unknown']} rows of unknown delivery" in said, said
    assert "refused by the API" not in said, said
    headline = failure(result)
    assert str(status) in headline and "of unknown delivery" in headline, headline


@pytest.mark.parametrize("name", list(REQUEST))
def test_a_429_until_the_retries_are_spent_stays_refused(
    sandbox_server: SandboxServer, tmp_path: Path, name: str
) -> None:
    """A rate limit (429) on every attempt: LINE does not process such a request; its rows are
    refused with the answer, none of unknown delivery."""
    sandbox_server.sandbox.add_fault(
        Fault(path=REQUEST[name], method="POST", status=429, retry_after=0, times=-1)
    )
    result, meta = _run(sandbox_server, tmp_path, name, **ONE_RETRY)
    assert not result.success and adds_up(meta), meta
    assert meta["rows_delivery_unknown"] == 0 and meta["rows_accepted"] == 0, meta
    assert meta["rows_refused_by_api"] >= 1, meta
    assert meta["rows_refused_by_api"] + meta["rows_unsent"] == 3, meta
    answers = meta["refusals_by_answer"]
    assert all("answered 429" in a for a in answers), answers


def test_a_429_after_a_500_is_of_unknown_delivery(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """MAAC answers the first import attempt 500 (after importing), the retry 429: the first
    attempt may have acted, so the rows are of unknown delivery, not refused."""
    path = REQUEST["maac"]
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=path, method="POST", status=500, act=True, times=1))
    sandbox.add_fault(Fault(path=path, method="POST", status=429, retry_after=0, times=-1))
    result, meta = _run(sandbox_server, tmp_path, "maac", **ONE_RETRY)
    assert not result.success and adds_up(meta), meta
    assert (meta["rows_refused_by_api"], meta["rows_delivery_unknown"]) == (0, 3), meta
    (reason,) = meta["delivery_unknown_reasons"]
    assert reason.startswith("a 5xx answer to 1 earlier attempt(s), then MAAC answered 429"), reason


def test_a_push_diff_run_answered_500_is_settled_by_the_next_tick_exactly_once(
    sandbox_server: SandboxServer,
) -> None:
    """Run 1 (sync diff): LINE delivers each of the 30 pushes and answers 500 until the retries
    are spent: 30 rows of unknown delivery with LINE's 500, kept pending; every recipient has
    the coupon once. Run 2 (the next tick, new retry keys): before planning it sends each
    request again under its own retry key; LINE answers 409 (delivered before): all 30 settled
    accepted, nothing delivered twice, nothing sent anew."""
    sandbox = sandbox_server.sandbox
    store = line_box.store_of(sandbox)
    sandbox.add_fault(Fault(path=PUSH, method="POST", status=500, act=True, times=-1))
    first = coupon_run(sandbox_server.url, TICK, concurrency=RECIPIENTS)
    assert not first.success
    meta = outcome_metadata(first)
    assert adds_up(meta), meta
    assert (meta["rows_delivery_unknown"], meta["rows_refused_by_api"]) == (RECIPIENTS, 0), meta
    assert all("LINE answered 500" in r for r in meta["delivery_unknown_reasons"]), meta
    assert inbox_counts(sandbox) == [1] * RECIPIENTS
    assert store_statuses("daily/coupon") == {"pending": RECIPIENTS}
    sandbox.clear_faults()
    conflicts = store.conflicts

    nxt = coupon_run(sandbox_server.url, NEXT_TICK)
    assert nxt.success
    meta = sync_meta_of(nxt, "daily__coupon")
    assert adds_up(meta) and meta["rows_accepted"] == RECIPIENTS, meta
    assert inbox_counts(sandbox) == [1] * RECIPIENTS  # exactly once
    assert (meta["earlier_requests_resent"], meta["earlier_requests_409"]) == (
        RECIPIENTS,
        RECIPIENTS,
    ), meta
    assert store.conflicts - conflicts == RECIPIENTS
    assert (meta["rows_settled_accepted"], meta["rows_settled_delivered"]) == (RECIPIENTS, 0)
    assert meta["rows_sent"] == 0 and meta["rows_delivery_unknown"] == 0, meta
    assert store_statuses("daily/coupon") == {"accepted": RECIPIENTS}


def test_429_in_every_step_attempt_stays_refused(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """LINE answers 429 (not the monthly quota) to every push of every Dagster step attempt:
    the ledger marks each answered 429, which says LINE did not process it, so the last step
    attempt counts the rows refused (a 503 there: of unknown delivery,
    test_step_retry_outcomes.py)."""
    sandbox_server.sandbox.add_fault(
        Fault(path=PUSH, method="POST", status=429, retry_after=0, times=-1)
    )
    result, meta = step_retry_run(sandbox_server, tmp_path, "line_push")
    assert summary(sandbox_server.sandbox)["messages_delivered"] == 0
    assert not result.success and adds_up(meta), meta
    assert (meta["rows_refused_by_api"], meta["rows_delivery_unknown"]) == (3, 0), meta


def test_a_linkedin_element_answered_500_is_of_unknown_delivery(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """LinkedIn's BATCH_CREATE answers 200 with a status per element; one element answered 500
    is of unknown delivery with that answer (LinkedIn may have acted on it), not refused; a 400
    element stays refused; the other elements are accepted and the run succeeds with its
    ``api_refusals`` check failed."""
    case = CASES_HERE["linkedin"]
    table = case.table(["valid"] * 4)
    emails = table.frame["email"].str.strip().str.lower()
    keys = [hashlib.sha256(e.encode()).hexdigest() for e in emails]
    store = linkedin_store(sandbox_server.sandbox)
    with sandbox_server.sandbox.lock:
        store.unavailable_values.add(keys[1])
        store.refused_values.add(keys[2])
    result, meta = run_case(sandbox_server, tmp_path, case, table)
    assert result.success and adds_up(meta), meta
    counts = [meta[f"rows_{k}"] for k in ("refused_by_api", "delivery_unknown", "accepted")]
    assert counts == [1, 1, 2], meta
    (reason,) = meta["delivery_unknown_reasons"]
    assert reason.startswith("LinkedIn answered 500: ") and "may have acted" in reason, reason
    (answer,) = meta["refusals_by_answer"]
    assert answer.startswith("LinkedIn answered 400: "), answer
    refusals = check_of(result, "api_refusals")
    assert refusals is not None and not refusals.passed


@pytest.mark.parametrize(("name", "unknown"), [("line_multicast", 3), ("line_push", 1)])
def test_a_500_then_429s_across_step_retries_stays_of_unknown_delivery(
    sandbox_server: SandboxServer, tmp_path: Path, name: str, unknown: int
) -> None:
    """The first attempt of a call is answered 500 (the API acted), every later one 429, over
    three Dagster step attempts: the 500 may have delivered, so the rows stay of unknown
    delivery; the step attempts after it must not count them refused (VERIFY-13h N2)."""
    path = REQUEST[name]
    sandbox_server.sandbox.add_fault(Fault(path=path, method="POST", status=500, act=True, times=1))
    sandbox_server.sandbox.add_fault(
        Fault(path=path, method="POST", status=429, retry_after=0, times=-1)
    )
    result, meta = step_retry_run(sandbox_server, tmp_path, name)
    assert not result.success and adds_up(meta), meta
    # push: only the first of 3 pushes met the 500; the others were answered 429 only
    assert meta["rows_delivery_unknown"] == unknown, meta
    assert meta["rows_refused_by_api"] == 3 - unknown, meta
