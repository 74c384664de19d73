"""One request under the ledger, across the Dagster step attempts of a run scope.

The export's ``RetryPolicy`` re-runs the whole step in the same run scope (the same ledger).
When an attempt sends a request and gets no answer, the next attempt sends it again; if that
resend is answered 429/5xx once the retries are spent, the rows are of unknown delivery (the
first attempt may have delivered them), not refused. The next attempt can only know this if
the request was recorded before it was sent:

* :meth:`LedgerRequest.sending` records ``{"state": "pending", "at": <epoch seconds>}`` under
  the request's key right before the request;
* the destination records the request's result under the same key once it went through
  (:meth:`LedgerRequest.succeeded`); any record but a pending one is done, so records written
  by earlier versions (results without ``state``) still resume;
* a pending record is not done: the request is sent again. Only for requests the API takes
  twice as once (MAAC's member import matches members by the import key and overwrites;
  CAPI's ``deduplication_key``; LinkedIn's ADD / REMOVE of a segment member; LINE's retry key);
* a call that failed for good marks its pending record (:func:`failure_mark`): how many of
  its attempts, and of earlier step attempts, got no answer or a 5xx (the API may have acted:
  a 429 to a later resend leaves its rows of unknown delivery, and the reason says which,
  :func:`~line_exports.outcomes.fate_of`); else the status every attempt was answered
  (:data:`~line_exports.outcomes.EARLIER_ANSWER`: a 429 there is refused); one whose every
  attempt never reached the API (connection refused) is marked
  :data:`~line_exports.outcomes.NOT_REACHED` (the request never left: its rows are unsent,
  not of unknown delivery);
* :func:`~line_exports.outcomes.unanswered_before` reads the record:
  :meth:`LedgerRequest.count_failed` counts a failed resend with it;
* a record written before a request that was then never started (the run stopped, or failed
  on another request, first) is never evidence of sending: it is put back as it was before
  (:meth:`LedgerRequest.not_started`; LINE's senders: ``sending.put_back_unstarted``), an
  earlier attempt's record or :func:`unsent_record`, so a later attempt counts its rows by
  what really went out (VERIFY-13o G2).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from line_exports.destination import DeliveryReport
from line_exports.http import ApiError, may_have_acted
from line_exports.outcomes import (
    EARLIER_5XX,
    EARLIER_ANSWER,
    EARLIER_UNANSWERED,
    NOT_REACHED,
    Earlier,
    Fate,
    NotSent,
    count_failed_request,
    unanswered_before,
)

PENDING = "pending"
_MARKED = {"state", "at", EARLIER_ANSWER, EARLIER_UNANSWERED, EARLIER_5XX}
"""Fields of a pending record a mark writes anew; any other is a :meth:`LedgerRequest.sending`
extra."""


class LedgerLike(Protocol):
    """What a request needs of the ledger scope (:class:`~line_exports.ledger.LedgerScope`)."""

    def done(self, key: str) -> dict[str, Any] | None: ...

    def record(self, key: str, result: dict[str, Any]) -> None: ...


def pending_record(
    since: float | None, now: float | None = None, earlier: Earlier | None = None, **extra: Any
) -> dict[str, Any]:
    """The ledger record of a request about to be sent (or sent, its answer not final): ``at``
    is when it was first sent, ``since`` when an earlier attempt did (kept: LINE's 24 hours for
    an ``X-Line-Retry-Key`` run from the first request, "Retry failed API requests",
    https://developers.line.biz/en/docs/messaging-api/retrying-api-request/), else ``now``
    (epoch seconds; default the clock's). ``earlier``: what earlier step attempts of it got
    that may have acted (:func:`~line_exports.outcomes.unanswered_before`), kept with one more
    attempt unanswered, this one's, until its answer is marked (:func:`failure_mark`)."""
    now = time.time() if now is None else now
    record = {"state": PENDING, "at": now if since is None else min(since, now), **extra}
    if earlier:
        record.update(Earlier(earlier.unanswered + 1, earlier.server_errors).fields())
    return record


def failure_mark(exc: ApiError, earlier: Earlier | None, made: bool = True) -> dict[str, Any]:
    """What the pending record of a call that failed for good is marked with, so that the next
    step attempt counts it right (:func:`~line_exports.outcomes.unanswered_before`): when some
    attempt of it, or of an earlier step attempt (``earlier``), got no answer or a 5xx (the API
    may have acted), how many of each (:class:`~line_exports.outcomes.Earlier`) and the last
    status; else the status when the API answered every attempt (a 4xx: it did not act);
    :data:`~line_exports.outcomes.NOT_REACHED` when no attempt reached it (connection refused)
    or the request was never made (``made`` False: no token). The one rule of every destination
    (:class:`LedgerRequest`, LINE's push, multicast, narrowcast and settle step)."""
    answered = exc.status is not None
    acted = Earlier(
        exc.unanswered + int(made and not answered and exc.reached),
        exc.server_errors + int(answered and may_have_acted(exc.status or 0)),
    )
    total = Earlier(
        acted.unanswered + (earlier.unanswered if earlier else 0),
        acted.server_errors + (earlier.server_errors if earlier else 0),
    )
    last = {EARLIER_ANSWER: exc.status} if answered and made else {}
    if total:
        return {**total.fields(), **last}
    return last or {EARLIER_ANSWER: NOT_REACHED}


def unsent_record(now: float | None = None) -> dict[str, Any]:
    """The record of a request recorded ``pending`` and then never started, with no earlier
    record to put back: pending, never reached (:data:`~line_exports.outcomes.NOT_REACHED`),
    so nothing counts it as sent (:func:`never_sent`)."""
    return {
        "state": PENDING,
        "at": time.time() if now is None else now,
        EARLIER_ANSWER: NOT_REACHED,
    }


def never_sent(state: dict[str, Any] | None) -> bool:
    """Whether a ledger record is that of a request no attempt may have sent: pending, and
    every attempt certainly never reached the API (:data:`~line_exports.outcomes.NOT_REACHED`:
    connection refused, or never started, :func:`unsent_record`), nothing counted that may
    have acted. Its rows are sent as new (LINE never saw its retry key: its 24 hours have not
    begun), never counted of unknown delivery for it."""
    return (
        state is not None
        and state.get("state") == PENDING
        and state.get(EARLIER_ANSWER) == NOT_REACHED
        and not unanswered_before(state)
    )


def recorded_error(state: dict[str, Any], where: str) -> ApiError:
    """The failure an earlier attempt left in the pending record ``state`` of a request
    (``where``: which request, for the reason), as :func:`~line_exports.outcomes.fate_of` reads
    it with :func:`~line_exports.outcomes.unanswered_before` of the same record: the last
    status it was answered (:data:`~line_exports.outcomes.EARLIER_ANSWER`, retries spent),
    never reached (:data:`~line_exports.outcomes.NOT_REACHED`: unsent), or no answer recorded
    (it may have reached the API: unknown; so is a text answer, which holds no status). A
    record that counts what its attempts got (:data:`~line_exports.outcomes.EARLIER_5XX`,
    :data:`~line_exports.outcomes.EARLIER_UNANSWERED`) but no last answer: this attempt did not
    reach the API with it (it was not sent again, :class:`~line_exports.outcomes.NotSent`), and
    the counts say the rest ("a 5xx answer to 1 earlier attempt(s), then not sent again ...",
    not "no answer recorded" although the API answered 500: VERIFY-13k F3). For a request a run
    stops before sending again: its rows are counted by what the ledger knows of it."""
    answer = state.get(EARLIER_ANSWER)
    if answer == NOT_REACHED:
        return NotSent(f"{where} never left", path=where)
    if answer is None and EARLIER_UNANSWERED in state:
        return NotSent(f"the run stopped before sending it again: {where}", path=where)
    if answer is None:
        return ApiError(f"{where}: no answer recorded", path=where)
    if not str(answer).isdigit():  # a text answer (MAAC's failed import): no status to go by
        return ApiError(f"{where}: {answer}", path=where, body=str(answer))
    return ApiError(
        f"{where} answered {answer}",
        status=int(answer),
        path=where,
        body="so answered the last attempt of an earlier try, its retries spent; not sent again",
    )


def is_done(state: dict[str, Any] | None) -> bool:
    """Whether a ledger record says its request went through: any record but a pending one
    (a result written by an earlier version has no ``state`` and is done)."""
    return state is not None and state.get("state") != PENDING


@dataclass
class LedgerRequest:
    """The ledger's view of one request (``key``: its content key in the run scope).

    ``result``: the recorded result when the request went through already, else None.
    ``earlier_unanswered``: what earlier step attempts of it got that may have acted (no
    answer, a 5xx; :class:`~line_exports.outcomes.Earlier`, false when nothing).
    ``pending``: the pending record an earlier attempt left (with its :meth:`sending` extras),
    then the one :meth:`sending` wrote. ``prior``: the record :meth:`look_up` read (what
    :meth:`not_started` puts back).
    """

    ledger: LedgerLike
    key: str
    result: dict[str, Any] | None
    earlier_unanswered: Earlier
    pending: dict[str, Any] | None = None
    prior: dict[str, Any] | None = None

    @classmethod
    def look_up(cls, ledger: LedgerLike, key: str) -> LedgerRequest:
        """The request ``key`` as the ledger holds it (one read)."""
        state = ledger.done(key)
        if is_done(state):
            return cls(ledger, key, state, Earlier())
        return cls(ledger, key, None, unanswered_before(state), state, state)

    @property
    def first_sent(self) -> float | None:
        """When an earlier attempt first sent the request (its pending record's ``at``), or
        None (also for a record of a request never sent, :func:`never_sent`)."""
        if self.pending is None or never_sent(self.pending):
            return None
        return float(self.pending.get("at", time.time()))

    def sending(self, **extra: Any) -> None:
        """Record the request pending (with ``extra`` fields): call right before sending it.
        An earlier attempt's first send time is kept (:func:`pending_record`)."""
        self.pending = pending_record(self.first_sent, earlier=self.earlier_unanswered, **extra)
        self.ledger.record(self.key, self.pending)

    def not_started(self) -> None:
        """The request recorded by :meth:`sending` was never started (a second signal stopped
        the run before any attempt of it went out): its record is put back as it was, the
        earlier attempt's or :func:`unsent_record`, so that no later attempt reads it as sent."""
        self.pending = self.prior if self.prior is not None else unsent_record()
        self.ledger.record(self.key, self.pending)

    def succeeded(self, result: dict[str, Any]) -> None:
        """Record the request's result: it went through, a re-run resumes after it."""
        self.ledger.record(self.key, result)

    def answered(self, answer: int | str) -> None:
        """The API answered the request (``answer``: its status, or what it said) and did not
        take it: unless an earlier step attempt went unanswered, mark the pending record
        answered (its first send time kept), so the next step attempt counts a transient answer
        to its resend refused."""
        if not self.earlier_unanswered:
            self._mark(answer)

    def failed(self, exc: ApiError) -> None:
        """The call failed for good: mark its pending record by :func:`failure_mark` (what may
        have acted, counted; else its status, or not reached, so the next step attempt counts
        its rows unsent, not of unknown delivery); its :meth:`sending` extras kept."""
        mark = failure_mark(exc, self.earlier_unanswered)
        self.ledger.record(self.key, pending_record(self.first_sent, **self._extras(), **mark))

    def _mark(self, answer: int | str) -> None:
        mark = {EARLIER_ANSWER: answer}
        self.ledger.record(self.key, pending_record(self.first_sent, **self._extras(), **mark))

    def _extras(self) -> dict[str, Any]:
        """The :meth:`sending` extras of the pending record (MAAC's ``before``), kept by a mark:
        the next step attempt reads them."""
        return {k: v for k, v in (self.pending or {}).items() if k not in _MARKED}

    def count_failed(
        self,
        report: DeliveryReport,
        rows: Sequence[int] | pd.Series,
        column: str,
        exc: ApiError,
        api: str,
    ) -> Fate:
        """:func:`~line_exports.outcomes.count_failed_request` for this request (rule
        ``request_refused``), an earlier step attempt's lost answer included; then
        :meth:`failed`."""
        fate = count_failed_request(report, rows, column, exc, api, earlier=self.earlier_unanswered)
        self.failed(exc)
        return fate
