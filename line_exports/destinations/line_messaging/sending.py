"""One push or multicast request under the ledger, and the report of many.

Never sending twice: each request carries an ``X-Line-Retry-Key`` (a UUID hashed from the export,
its run scope, the recipient(s) and the exact message), so HTTP retries, Dagster retries and
re-runs within LINE's 24-hour window get ``409`` (already accepted: success) instead of a second
delivery; the ledger records each accepted request so a re-run skips it without a call.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from dagster import DagsterExecutionInterruptedError

from line_exports.destination import DeliveryFailed, DeliveryReport, ExportRun
from line_exports.destinations.line_messaging.auth import TokenError
from line_exports.destinations.line_messaging.client import (
    LineMessagingClient,
    explain,
    line_error,
    monthly_limit,
    refusal,
)
from line_exports.destinations.line_messaging.settings import (
    CLOCK_MARGIN_SECONDS,
    MAX_BODY_BYTES,
    RETRY_KEY_TTL_SECONDS,
)
from line_exports.http import ApiError, RetrySettings
from line_exports.interrupts import DeliveryInterrupted
from line_exports.ledger_request import (
    failure_mark,
    never_sent,
    pending_record,
    recorded_error,
    unsent_record,
)
from line_exports.outcomes import Earlier, count_failed_request, unanswered_before
from line_exports.rules import reject

QUOTA_REASON = "LINE's monthly message quota is used up"
T = TypeVar("T")


def resend_seconds(retry: RetrySettings) -> float:
    """The longest a message request can take under ``retry``, seconds: each of up to three
    calls (the request; a token issued for the client; one re-issue after a 401) makes
    ``max_retry + 1`` attempts of at most a connect and a read timeout (``connection_timeout``
    each) with waits of at most ``max_retry_wait`` between them (a ``Retry-After`` is capped
    there too, :class:`~line_exports.http.HttpClient`), and the request is sent once more after
    the re-issue."""
    timeout = 2 * retry.connection_timeout
    call = (retry.max_retry + 1) * timeout + retry.max_retry * retry.max_retry_wait
    return 3 * call + timeout


def retries_within(retry: RetrySettings, seconds: float) -> RetrySettings | None:
    """``retry`` with as many of its retries as surely end within ``seconds`` (fewer near the
    end of a retry key's 24 hours: an attempt after them would deliver a second time), or None
    when not even one attempt does."""
    for retries in range(retry.max_retry, -1, -1):
        fitted = replace(retry, max_retry=retries)
        if resend_seconds(fitted) <= seconds:
            return fitted
    return None


def resend_window(retry: RetrySettings) -> float:
    """How long after its first request an earlier run's push or multicast can still be sent
    again safely, seconds: LINE's 24 hours for its retry key (:data:`RETRY_KEY_TTL_SECONDS`)
    less :data:`CLOCK_MARGIN_SECONDS` and one attempt's longest time under ``retry``
    (:func:`resend_seconds`): 23 h 10 min with the default 300 s ``connection_timeout``,
    22 h 30 min with the largest (600 s). A request sent longer ago is held, delivery unknown
    (:mod:`line_exports.sync_settle`); a younger one is resent with the retries that fit
    (:func:`retries_within`)."""
    once = resend_seconds(replace(retry, max_retry=0))
    return RETRY_KEY_TTL_SECONDS - CLOCK_MARGIN_SECONDS - once


def retries_left(retry: RetrySettings, age: float) -> RetrySettings | None:
    """The retries of ``retry`` a request first sent ``age`` seconds ago may still make: those
    that surely end before its retry key's 24 hours less :data:`CLOCK_MARGIN_SECONDS`
    (:func:`retries_within`); None past :func:`resend_window` (not even one attempt would).
    The one rule for every resend under an earlier key: the settle step's and a resumed run's."""
    return retries_within(retry, RETRY_KEY_TTL_SECONDS - CLOCK_MARGIN_SECONDS - age)


def first_sent(state: dict[str, Any] | None) -> float | None:
    """When an earlier attempt first sent the request the ledger ``state`` holds ``pending``
    (epoch seconds: LINE's 24 hours for its key run from then), or None when none is pending
    or no attempt may have sent it (:func:`~line_exports.ledger_request.never_sent`)."""
    if state is None or state.get("state") != "pending" or never_sent(state):
        return None
    return float(state.get("at", 0))


def left_by_earlier(state: dict[str, Any] | None, retry: RetrySettings) -> str | None:
    """What an earlier attempt of this run scope left of a request, by its ledger ``state``:
    'accepted'; 'resend' when it is pending (sent, its answer lost or not final) and can still
    be sent again safely under ``retry`` (:func:`retries_left`): a step retry sends it again
    under its retry key before it reads anything (the quota), so that its rows are counted by
    what LINE answers and what the earlier attempt got (a 5xx, no answer), not left unsent when
    LINE cannot be reached; else None. The one rule of push and multicast."""
    if state is None:
        return None
    if state.get("state") == "accepted":
        return "accepted"
    since = first_sent(state)
    if since is not None and retries_left(retry, time.time() - since) is not None:
        return "resend"
    return None


def count_not_resent(tally: Tally, left: dict[str, list[int]], ledger: Any) -> None:
    """The requests an earlier attempt left pending (``left``: {retry key: its rows}) that this
    attempt stopped before sending again: counted by what the ledger recorded of each
    (:func:`~line_exports.ledger_request.recorded_error`), as the settle step counts them: of
    unknown delivery when the earlier attempt may have acted (no answer, a 5xx:
    :func:`~line_exports.outcomes.unanswered_before`), else unsent."""
    states = ledger.done_many([key for key in left if key not in tally.resent])
    for key, state in states.items():
        if before := unanswered_before(state):
            where = "an earlier request"
            with tally.lock:
                tally.failed.append((left[key], recorded_error(state, where), before))


def pending(tally: Tally, key: str) -> dict[str, Any] | None:
    """The ledger record of request ``key`` about to be sent
    (:func:`~line_exports.ledger_request.pending_record`): ``at`` is when it was first sent, by
    an earlier attempt (:attr:`Tally.since`) or now; kept in :attr:`Tally.first_sent` so that
    the mark of its answer keeps it too (LINE's 24 hours for its retry key run from the first
    request). None once the run was stopped at once (:attr:`Tally.cut`): it is not sent."""
    with tally.lock:
        if tally.cut:
            return None
        record = pending_record(tally.since.get(key), time.time(), tally.earlier.get(key))
        tally.first_sent[key] = record["at"]
        tally.recorded[key] = tally.before.pop(key, None)
    return record


def put_back_unstarted(tally: Tally, ledger: Any) -> None:
    """Put back the ledger records of the requests this attempt recorded pending (:func:`pending`)
    and then never started (:meth:`Tally.start`): the sender stopped first (a fatal answer to
    another request, a signal) or held them. Each gets the record it had before, an earlier
    attempt's or :func:`~line_exports.ledger_request.unsent_record` (one transaction): a record
    written before a request was started is never evidence of sending, so a step retry or a
    later run counts their rows unsent, not of unknown delivery (VERIFY-13o G2). Call once the
    sender is done: none starts after it (a thread of a sender stopped at once records no more,
    :attr:`Tally.cut`)."""
    with tally.recording:
        with tally.lock:
            entries = [(key, prior or unsent_record()) for key, prior in tally.recorded.items()]
            tally.recorded.clear()
        if entries:
            ledger.record_many(entries)


def nothing_sent(run: ExportRun) -> str:
    """ "nothing was sent" for a run that stops before its delivery sends anything, or, when
    its settle step had already sent an earlier run's requests again
    (:attr:`~line_exports.destination.ExportRun.sent_before`), what that step sent."""
    return f"nothing more was sent ({run.sent_before})" if run.sent_before else "nothing was sent"


@dataclass
class Tally:
    """Outcomes of message requests, for the report (thread-safe)."""

    accepted: int = 0
    already_accepted: int = 0
    resumed: int = 0
    refused: list[tuple[int, str, str]] = field(default_factory=list)
    refused_requests: list[tuple[list[int], list[str], str]] = field(default_factory=list)
    """Each refused request as LINE answered it: (its rows, its recipients, LINE's reason), in
    the order of the answers; what a failure headline names (:func:`refused_text`)."""
    unknown: list[tuple[int, str]] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)
    final: bool = False  # the fatal error is not worth a retry (LINE's monthly limit)
    quota_refused: list[int] = field(default_factory=list)  # LINE answered its monthly 429
    quota_cut: list[int] = field(default_factory=list)  # not sent: over what the quota leaves
    failed: list[tuple[list[int], ApiError, Earlier]] = field(default_factory=list)
    """Requests that failed for good other than a 400 or the monthly 429 (rows, error, what
    earlier step attempts of it got that may have acted): counted by
    :func:`~line_exports.outcomes.count_failed_request`."""
    earlier: dict[str, Earlier] = field(default_factory=dict)
    """Retry keys an earlier attempt of this run scope sent without an answer, or got a 5xx
    for (:func:`~line_exports.outcomes.unanswered_before`): it may have delivered them."""
    since: dict[str, float] = field(default_factory=dict)
    """Retry keys an earlier attempt of this run scope left pending: when it first sent each
    (:func:`first_sent`). Sent again, each makes only the retries that end before its key does
    (:func:`resend_retry`)."""
    first_sent: dict[str, float] = field(default_factory=dict)
    """When each request this attempt recorded pending was first sent (:func:`pending`): its
    answer's mark keeps it (:func:`failed`)."""
    before: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The ledger records read of requests about to be recorded pending (retry key: record), so
    that one never started is put back as it was (:func:`put_back_unstarted`)."""
    recorded: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """Requests this attempt recorded pending (:func:`pending`) and has not started yet, with
    the record each had before (None: none); a request leaves it when it starts
    (:meth:`start`), so it holds at most the requests queued, not every one sent."""
    resent: set[str] = field(default_factory=set)
    """Requests an earlier attempt left pending (:attr:`since`) that this attempt started again:
    their rows are counted by this attempt's answer, not by their record
    (:func:`count_not_resent`)."""
    in_flight: dict[str, list[int]] = field(default_factory=dict)
    """Requests sent whose answer is not counted yet (retry key: rows): a stop at once counts
    them of unknown delivery (:meth:`cut_in_flight`)."""
    counting: int = 0  # answers taken off in_flight and being counted
    cut: bool = False  # stopped at once: an answer arriving now is not counted
    lock: threading.Lock = field(default_factory=threading.Lock)
    recording: threading.Lock = field(default_factory=threading.Lock)
    """Held while a request is recorded pending and while records are put back
    (:func:`put_back_unstarted`): a record is never written after it was put back."""

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def going_out(self, key: str, row_numbers: list[int]) -> bool:
        """Request ``key`` is about to be sent: in flight until its answer is counted; False
        once the run was stopped at once (it is not sent)."""
        with self.lock:
            if self.cut:
                return False
            self.in_flight[key] = list(row_numbers)
            self._started(key)
            return True

    def start(self, key: str) -> None:
        """Request ``key`` goes out now (an attempt of it may reach LINE): its pending record
        is evidence of sending (:func:`put_back_unstarted` leaves it)."""
        with self.lock:
            self._started(key)

    def _started(self, key: str) -> None:  # under the lock
        self.recorded.pop(key, None)
        if key in self.since:
            self.resent.add(key)

    def answer_arrived(self, key: str) -> bool:
        """The answer to ``key`` arrived: True to count it (then :meth:`counted`); False when a
        stop at once already counted the request (of unknown delivery)."""
        with self.lock:
            if self.in_flight.pop(key, None) is None:
                return False
            self.counting += 1
            return True

    def counted(self) -> None:
        """An answer taken by :meth:`answer_arrived` (or a refusal a caller counts) is in."""
        with self.changed:
            self.counting -= 1
            self.changed.notify_all()

    def cut_in_flight(self, path: str, wait: float = 5.0) -> None:
        """Stopped at once (a second signal) while requests to ``path`` are in flight in other
        threads: each is counted by :func:`~line_exports.outcomes.fate_of` as cut off (it may
        have reached LINE: delivery unknown; its pending record stays, so a re-run sends it
        again under its retry key), no answer arriving later is counted, and the answers
        already being counted are waited for (a moment: nothing on the network)."""
        with self.changed:
            self.cut = True
            for key, rows in self.in_flight.items():
                cut = ApiError("the run was stopped at once", method="POST", path=path)
                self.failed.append((rows, cut, self.earlier.get(key, Earlier())))
            self.in_flight.clear()
            self.changed.wait_for(lambda: self.counting == 0, timeout=wait)

    def refuse(self, row_numbers: list[int], recipients: list[str], reason: str) -> None:
        """Count one request LINE refused: its rows (each with its recipient) and the request."""
        with self.lock:
            self.refused.extend(
                zip(row_numbers, recipients, [reason] * len(row_numbers), strict=True)
            )
            self.refused_requests.append((list(row_numbers), list(recipients), reason))

    @property
    def stopped(self) -> bool:
        """A fatal error was met, or the run was stopped at once: no further request is sent."""
        return bool(self.fatal) or self.cut


def settled(
    state: dict[str, Any] | None,
    key: str,
    row_numbers: list[int],
    tally: Tally,
    retry: RetrySettings,
) -> str | None:
    """'resumed' or 'unknown' when the ledger already decides a request; None to send it.

    A request an earlier attempt left pending is sent again only within
    :func:`resend_window` of its first request (its retries then cut by
    :func:`resend_retry`); later, LINE may forget its key before a resend ends and a resend
    could deliver twice: reported 'unknown' instead."""
    if state is not None and state.get("state") == "accepted":
        with tally.lock:
            tally.resumed += len(row_numbers)
        return "resumed"
    since = first_sent(state)
    if since is None:
        return None
    if retries_left(retry, time.time() - since) is None:
        hold(row_numbers, since, retry, tally)
        return "unknown"
    with tally.lock:
        tally.since[key] = since
    return None


def hold(row_numbers: list[int], since: float, retry: RetrySettings, tally: Tally) -> None:
    """Rows of a request first sent at ``since`` whose key ends before a resend surely would:
    delivery unknown (:func:`held_reason`), never sent again by this run."""
    reason = held_reason(since, retry)
    with tally.lock:
        tally.unknown.extend((n, reason) for n in row_numbers)


def held_reason(since: float, retry: RetrySettings) -> str:
    """Why a request first sent at ``since`` (epoch seconds) is not sent again under ``retry``."""
    hours, minutes = divmod(round(resend_window(retry) / 60), 60)
    stamp = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"delivery unknown: an earlier attempt sent it at {stamp}, its answer lost; the retry "
        f"key is past the window for a safe resend ({hours} h {minutes} min), so a resend could "
        "deliver twice"
    )


def resend_retry(retry: RetrySettings, key: str, tally: Tally) -> RetrySettings | None:
    """The retries to send request ``key`` with now: ``retry`` for a first send; for one an
    earlier attempt sent (:attr:`Tally.since`), those that end before its key does
    (:func:`retries_left`), None when not even one attempt would (hold it)."""
    since = tally.since.get(key)
    return retry if since is None else retries_left(retry, time.time() - since)


def send_once(
    client: LineMessagingClient,
    kind: Literal["push", "multicast"],
    body: bytes,
    key: str,
    row_numbers: list[int],
    recipients: list[str],
    run: ExportRun,
    tally: Tally,
    refusals: list[tuple[int, str, str]] | None = None,
) -> str:
    """One request under the ledger: 'accepted' | 'resumed' | 'refused' | 'unknown' | 'fatal'."""
    state = run.ledger.done(key)
    decided = settled(state, key, row_numbers, tally, client.http.retry)
    if decided is not None:
        return decided
    with tally.lock:
        if before := unanswered_before(state):
            tally.earlier[key] = before
        if state is not None:  # put back should the request not start (put_back_unstarted)
            tally.before[key] = state
    if run.keep_requests is not None:  # sync diff: a later scope can settle it
        run.keep_requests([(key, kind, body.decode(), recipients)])
    with tally.recording:  # not while put_back_unstarted runs (a stop at once, other thread)
        record = pending(tally, key)
        if record is None:
            return "cut"
        run.ledger.record(key, record)
    return post(
        client,
        kind,
        body,
        key,
        row_numbers,
        recipients,
        run,
        tally,
        run.ledger.record,
        refusals,
    )


def post(
    client: LineMessagingClient,
    kind: Literal["push", "multicast"],
    body: bytes,
    key: str,
    row_numbers: list[int],
    recipients: list[str],
    run: ExportRun,
    tally: Tally,
    record: Callable[[str, dict[str, Any]], None],
    refusals: list[tuple[int, str, str]] | None = None,
) -> str:
    """Send one request already recorded as pending; ``record`` writes its acceptance.

    A refusal goes to ``refusals`` when given (the caller decides: multicast isolates the
    refused recipient, then calls ``tally.counted()``), else to the tally. 'cut' when the run
    was stopped at once before the request went out or before its answer was counted
    (:meth:`Tally.cut_in_flight` counted it)."""
    if len(body) > MAX_BODY_BYTES:
        with tally.lock:
            tally.counting += refusals is not None  # the caller counts it
        return too_big(body, row_numbers, recipients, tally, refusals)
    retry = resend_retry(client.http.retry, key, tally)
    if retry is None:  # the key ends before even one attempt surely would
        hold(row_numbers, tally.since[key], client.http.retry, tally)
        return "unknown"
    if not tally.going_out(key, row_numbers):
        return "cut"
    try:
        status, answer = client.with_retry(retry).send(kind, body, key)
    except ApiError as exc:
        if not tally.answer_arrived(key):
            return "cut"
        outcome = "fatal"
        try:
            outcome = failed(exc, client, key, row_numbers, recipients, run, tally, refusals)
            return outcome
        finally:
            if outcome != "refused" or refusals is None:
                tally.counted()
    if not tally.answer_arrived(key):
        return "cut"
    try:
        return answered(status, answer.get("_request_id"), key, recipients, tally, record)
    finally:
        tally.counted()


def too_big(
    body: bytes,
    row_numbers: list[int],
    recipients: list[str],
    tally: Tally,
    refusals: list[tuple[int, str, str]] | None = None,
) -> str:
    """A body over LINE's 2 MB is refused without a call."""
    reason = f"request body is {len(body):,} bytes; LINE takes at most 2 MB"
    refuse(row_numbers, recipients, reason, tally, refusals)
    return "refused"


def refuse(
    row_numbers: list[int],
    recipients: list[str],
    reason: str,
    tally: Tally,
    refusals: list[tuple[int, str, str]] | None,
) -> None:
    """A refused request into ``refusals`` when given (the caller decides what it counts:
    multicast isolates the recipient LINE named), else into the tally."""
    if refusals is None:
        tally.refuse(row_numbers, recipients, reason)
        return
    refusals.extend(zip(row_numbers, recipients, [reason] * len(row_numbers), strict=True))


NAMED_RECIPIENT = re.compile(r"\bto\[(\d+)\]")
"""How LINE's answer to a multicast names the one recipient it refuses (its ``details``
property ``to[i]``: "The property, 'to[1]', in the request body is invalid")."""


def named_recipient(reason: str, count: int) -> int | None:
    """The index (0-based, under ``count``) of the recipient LINE's ``reason`` names
    (:data:`NAMED_RECIPIENT`), or None when it names none of a request's ``count``."""
    found = NAMED_RECIPIENT.search(reason)
    return int(found.group(1)) if found and int(found.group(1)) < count else None


def refused_text(kind: str, row_numbers: list[int], recipients: list[str], reason: str) -> str:
    """Whom one refused request addressed, for a headline: "the multicast to U… (row 2, to[1]
    of the request to rows 1, 2)" when LINE's answer names a recipient, "the push to U… (row 3)"
    for one recipient, else the request's rows ("the multicast to rows 1, 2, 3 (3 recipients)"),
    never a recipient LINE did not name."""
    rows = ", ".join(str(n) for n in row_numbers[:5]) + (
        f" and {len(row_numbers) - 5:,} more" if len(row_numbers) > 5 else ""
    )
    if len(recipients) == 1:
        return f"the {kind} to {recipients[0]} (row {row_numbers[0]})"
    i = named_recipient(reason, len(recipients))
    if i is not None:
        return f"the {kind} to {recipients[i]} (row {row_numbers[i]}, to[{i}] of the request to rows {rows})"
    return f"the {kind} to rows {rows} ({len(recipients):,} recipients)"


def final_answer(exc: ApiError) -> Literal["refused", "quota"] | None:
    """What LINE's answer to a message request that failed for good says: 'refused' (a 400:
    the message or a recipient, never a token error), 'quota' (its monthly-limit 429, never
    retried: nothing was delivered), None for anything else (a 5xx, no answer, a token)."""
    if exc.status == 400 and not isinstance(exc, TokenError):
        return "refused"
    return "quota" if monthly_limit(exc) else None


def failed(
    exc: ApiError,
    client: LineMessagingClient,
    key: str,
    row_numbers: list[int],
    recipients: list[str],
    run: ExportRun,
    tally: Tally,
    refusals: list[tuple[int, str, str]] | None = None,
) -> str:
    """A request that failed for good: 'refused' (400, with LINE's reason) or 'fatal'."""
    final = final_answer(exc)
    if final == "refused":
        message, _ = line_error(exc)
        reason = refusal(exc)  # kept whole: a step retry counts it (settled_before)
        record = {"state": "refused", "at": time.time(), "message": message, "reason": reason}
        run.ledger.record(key, {**record, "run": run.run_id})  # which run LINE refused it to
        refuse(row_numbers, recipients, reason, tally, refusals)
        return "refused"
    if final == "quota":
        run.ledger.record(key, {"state": "refused", "at": time.time(), "message": exc.body})
        with tally.lock:
            tally.quota_refused.extend(row_numbers)
            tally.final = True
            tally.fatal.append(f"LINE answered 429, {QUOTA_REASON} (not retried): {exc.body}")
        return "fatal"
    made = not isinstance(exc, TokenError)  # no token, no request: its rows stay unsent
    with tally.lock:
        earlier = tally.earlier.get(key, Earlier())
        if made:
            tally.failed.append((list(row_numbers), exc, earlier))
        since = tally.first_sent.get(key, tally.since.get(key))
    # What may have acted (no answer, a 5xx), else how LINE answered or that it was not
    # reached: a step retry that meets it pending counts it right.
    run.ledger.record(key, pending_record(since, time.time(), **failure_mark(exc, earlier, made)))
    with tally.lock:
        tally.fatal.append(
            explain(exc)
            if exc.status == 401 and not isinstance(exc, TokenError)
            else client.http.redact(str(exc))
        )
    return "fatal"


def answered(
    status: int,
    request_id: str | None,
    key: str,
    recipients: list[str],
    tally: Tally,
    record: Callable[[str, dict[str, Any]], None],
) -> str:
    """LINE accepted the request (200), or had already (409 for a known retry key)."""
    record(key, {"state": "accepted", "status": status, "request_id": request_id})
    with tally.lock:
        if status == 409:
            tally.already_accepted += len(recipients)
        else:
            tally.accepted += len(recipients)
    return "accepted"


def _classify_refusals(report: DeliveryReport, tally: Tally, kind: str) -> None:
    """The tally's refusals (with LINE's reason), deliveries of unknown fate and accepted rows
    into the report: what a failed run's counts need too."""
    if tally.refused:
        by_reason: dict[str, list[int]] = {}
        for n, _, reason in tally.refused:
            by_reason.setdefault(reason, []).append(n)
        for reason, numbers in by_reason.items():
            report.refused.append(
                reject(numbers, "id", f"line_{kind}_refused", f"LINE refused: {reason}")
            )
    if tally.unknown:  # sent, answer lost, key expired: neither refused nor accepted
        report.unknown.append(
            reject([n for n, _ in tally.unknown], "id", "delivery_unknown", tally.unknown[0][1])
        )
    for numbers, exc, earlier in tally.failed:  # the one rule (outcomes.fate_of)
        count_failed_request(report, numbers, "id", exc, "LINE", earlier=earlier)
    report.resumed_rows += tally.resumed
    report.accepted_rows = tally.accepted + tally.already_accepted + tally.resumed
    # Sent: every row a request carried, whatever became of it (not the rows of a batch the
    # run stopped in before their requests went out: those are unsent).
    report.sent_rows = report.accepted_rows + report.refused_rows + report.unknown_rows


def cut_off(tally: Tally, row_numbers: list[int], key: str, path: str) -> None:
    """A request (``key``, to ``path``) the run stopped at once (a second signal) while it was
    in flight: no answer, and it may have reached LINE, so it is counted by
    :func:`~line_exports.outcomes.fate_of` (delivery unknown), never unsent; its pending record
    stays, so a re-run sends it again under its retry key. One not yet started (waiting for
    the rate limiter) is not counted: its rows are unsent."""
    cut = ApiError("the run was stopped at once", method="POST", path=path, reached=True)
    with tally.lock:
        if key in tally.recorded:  # never went out: unsent (put_back_unstarted)
            return
        tally.failed.append((list(row_numbers), cut, tally.earlier.get(key, Earlier())))


class Workers:
    """``width`` daemon threads running the calls given to :meth:`submit`, each answering a
    :class:`~concurrent.futures.Future`. Not a ``ThreadPoolExecutor``: its threads are joined
    when the interpreter exits, so a run stopped at once (a second signal) would still wait for
    the requests in flight; these are left to end with the process."""

    def __init__(self, width: int, name: str) -> None:
        self._calls: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ]
        self._calls = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(width)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, call: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._calls.put((future, call, args))
        return future

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            future, call, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call(*args))
            except BaseException as exc:  # handed to whoever waits for it
                future.set_exception(exc)

    def shutdown(self, wait: bool = True) -> None:
        """Let the threads end once the calls given are done; ``wait`` for them (False: a stop
        at once, the calls in flight are left to end on their own)."""
        for _ in self._threads:
            self._calls.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


@contextmanager
def workers(width: int, name: str, tally: Tally, path: str) -> Iterator[Workers]:
    """:class:`Workers` for a sender's requests to ``path``: waited for when the block ends (a
    first signal too: every request sent is answered and counted), but not once the run is
    stopped at once (a second signal, in the block or while waiting): then the requests in
    flight are counted of unknown delivery (:meth:`Tally.cut_in_flight`) and left to end."""
    pool = Workers(width, name)
    try:
        yield pool
    except DeliveryInterrupted:  # a first signal (run.progress): stop after those in flight
        _wait(pool, tally, path)
        raise
    except DagsterExecutionInterruptedError:
        _cut(pool, tally, path)
        raise
    except BaseException:
        _wait(pool, tally, path)
        raise
    _wait(pool, tally, path)


def _wait(pool: Workers, tally: Tally, path: str) -> None:
    try:
        pool.shutdown(wait=True)
    except DagsterExecutionInterruptedError:  # stopped at once while waiting
        _cut(pool, tally, path)
        raise


def _cut(pool: Workers, tally: Tally, path: str) -> None:
    tally.cut_in_flight(path)
    pool.shutdown(wait=False)


@contextmanager
def counted_stop(report: DeliveryReport, tally: Tally, kind: str, run: Any) -> Iterator[None]:
    """Around a push or multicast sender: when the run is stopped, ``report`` counts what LINE
    answered so far (as :func:`finish` does) and the stop goes on.

    * Asked to stop between requests (SIGINT / SIGTERM; ``run.progress`` raised
      :class:`~line_exports.interrupts.DeliveryInterrupted`, or the sender returned once its
      requests in flight were answered): the run stops after the block with
      ``DeliveryInterrupted``, which the export turns into its counts.
    * Stopped at once (a second signal, ``DagsterExecutionInterruptedError``): counted, re-raised.

    Nothing changes while the run was not asked to stop."""
    try:
        yield
    except DeliveryInterrupted:
        pass
    except DagsterExecutionInterruptedError:
        _classify_refusals(report, tally, kind)
        raise
    if run.interrupted:
        _classify_refusals(report, tally, kind)
        raise DeliveryInterrupted(run.interrupted)


def finish(
    report: DeliveryReport, tally: Tally, skip: bool, policy: str, kind: str
) -> DeliveryReport:
    """The report of a push or multicast run, honest about LINE's answers.

    Refused requests become rejects with LINE's reason. The run fails (:class:`DeliveryFailed`,
    the counts classified and the rejects still written) on a fatal error (retryable, unless
    ``tally.final``), when the policy says stop, or when LINE accepted none of the requests
    sent."""
    if tally.quota_cut:  # known before sending: rejected, not refused
        report.rejected.append(
            reject(
                tally.quota_cut,
                "id",
                "line_monthly_quota",
                f"{QUOTA_REASON}: over_quota is send_up_to_quota, so it was not sent",
            )
        )
    if tally.quota_refused:
        report.refused.append(
            reject(tally.quota_refused, "id", "line_monthly_quota", f"LINE refused: {QUOTA_REASON}")
        )
    _classify_refusals(report, tally, kind)  # before any raise: a failed run's counts too
    if tally.final:
        raise DeliveryFailed(f"LINE {kind} stopped: {tally.fatal[0]}", report)
    if tally.fatal:  # a retry resumes after the accepted requests
        raise DeliveryFailed(f"LINE {kind} failed: {tally.fatal[0]}", report, retryable=True)
    report.metadata.update(
        {
            f"{kind}_accepted": tally.accepted,
            f"{kind}_already_accepted_409": tally.already_accepted,
            f"{kind}_refused_recipients": len(tally.refused),
            f"{kind}_delivery_unknown": len(tally.unknown),
        }
    )
    if tally.refused and not skip:
        numbers, recipients, reason = tally.refused_requests[0]
        raise DeliveryFailed(
            f"LINE refused {refused_text(kind, numbers, recipients, reason)}: {reason}. {policy} "
            "is false, so the run stops here; accepted requests are recorded and a re-run resumes "
            "after them.",
            report,
        )
    if tally.refused and report.accepted_rows == 0:
        numbers, recipients, reason = tally.refused_requests[0]
        raise DeliveryFailed(
            f"LINE accepted none of the {kind} requests: {len(tally.refused):,} recipients "
            f"refused. First: {refused_text(kind, numbers, recipients, reason)}: {reason}",
            report,
        )
    return report
