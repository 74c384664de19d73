"""A LINE audience upload job LINE ended FAILED is sent again by a re-run of the same scope.

``manage-audience.yml``: an upload is a job; a FAILED job's IDs never join the audience. Its
rows are refused (test_retry_audience_jobs), and a refused row must be sendable by the next run
(as sync_mode diff / mirror send refused rows again): the ledger recorded the upload done (it
went through), so an append re-run of the same tick skipped it and counted those rows refused
again, LINE never holding them. Now the failed job's record is pending again: the re-run
uploads those IDs (under a new job description: the failed job keeps the old one), resumes the
others, and LINE holds every ID. Two real Dagster runs of one tick, HTTP to the sandbox, 300
IDs in three upload files of 100 (the limits lowered as test_audience_files does), the first
job failed over HTTP (``PUT /_sandbox/line_messaging/audience_job_failures``).
"""

from __future__ import annotations

import dagster as dg
import pytest

from line_exports.destinations import line_messaging
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports.session import SCHEDULED_TIME_TAG
from line_exports_tests.test_outcomes import adds_up, outcome_metadata
from line_exports_tests.test_retry_audience_jobs import audience_with_failed_jobs, user

ROWS, PER_FILE = 300, 100
TICK = {SCHEDULED_TIME_TAG: "2026-06-02T09:00:00+00:00"}


def test_a_failed_upload_job_is_uploaded_again_by_a_rerun_of_the_same_tick(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(line_messaging.audience, "AUDIENCE_JSON_MAX_IDS", PER_FILE)
    monkeypatch.setattr(line_messaging.audience, "AUDIENCE_FILE_MAX_IDS", PER_FILE)
    asset, resources = audience_with_failed_jobs(
        sandbox_server.url, "jobs again", ROWS, "INTERNAL_ERROR"
    )
    store = store_of(sandbox_server.sandbox)

    first = dg.materialize([asset], resources=resources, tags=TICK)
    meta = outcome_metadata(first)
    assert first.success and adds_up(meta), meta
    assert (meta["rows_refused_by_api"], meta["rows_accepted"]) == (PER_FILE, ROWS - PER_FILE)
    (audience,) = store.audiences.values()
    assert audience.ids == {user(n) for n in range(PER_FILE, ROWS)}

    again = dg.materialize([asset], resources=resources, tags=TICK)
    meta = outcome_metadata(again)
    assert again.success and adds_up(meta), meta
    assert (meta["rows_refused_by_api"], meta["rows_accepted"]) == (0, ROWS), meta
    assert meta["rows_resumed"] == ROWS - PER_FILE, meta  # only the failed job's IDs went again
    (audience,) = store.audiences.values()  # the same audience, added to
    assert audience.ids == {user(n) for n in range(ROWS)}
    assert meta["audience_count"] == ROWS, meta


def test_a_failed_upload_job_of_an_earlier_tick_is_not_this_ticks(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LINE lists an audience's earlier jobs too: the next tick uploads the same IDs, every job
    finishes, and the run counts them accepted, not refused by the earlier tick's FAILED job
    (VERIFY-13o G1: every later tick said 100 refused, 'upload failed: INTERNAL_ERROR')."""
    monkeypatch.setattr(line_messaging.audience, "AUDIENCE_JSON_MAX_IDS", PER_FILE)
    monkeypatch.setattr(line_messaging.audience, "AUDIENCE_FILE_MAX_IDS", PER_FILE)
    asset, resources = audience_with_failed_jobs(
        sandbox_server.url, "ticks apart", ROWS, "INTERNAL_ERROR"
    )
    first = dg.materialize([asset], resources=resources, tags=TICK)
    assert outcome_metadata(first)["rows_refused_by_api"] == PER_FILE
    for tick in ("2026-06-03T09:00:00+00:00", "2026-06-04T09:00:00+00:00"):
        later = dg.materialize([asset], resources=resources, tags={SCHEDULED_TIME_TAG: tick})
        meta = outcome_metadata(later)
        assert later.success and adds_up(meta), meta
        assert (meta["rows_refused_by_api"], meta["rows_accepted"]) == (0, ROWS), meta
        assert meta["audience_count"] == ROWS, meta
