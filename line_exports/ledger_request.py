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
* a call that failed for good after every attempt was answered (429/5xx, 4xx) marks the
  pending record :data:`~line_exports.outcomes.EARLIER_ANSWER`, so the next attempt knows the
  request was answered (a 503 there is refused, not unknown); one whose every attempt never
  reached the API (connection refused) marks it :data:`~line_exports.outcomes.NOT_REACHED`
  the same way (the request never left: its rows are unsent, not of unknown delivery);
* :func:`~line_exports.outcomes.unanswered_before` reads the record:
  :meth:`LedgerRequest.count_failed` counts a failed resend with it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from line_exports.destination import DeliveryReport
from line_exports.http import ApiError
from line_exports.outcomes import (
    EARLIER_ANSWER,
    NOT_REACHED,
    Fate,
    count_failed_request,
    unanswered_before,
)

PENDING = "pending"


class LedgerLike(Protocol):
    """What a request needs of the ledger scope (:class:`~line_exports.ledger.LedgerScope`)."""

    def done(self, key: str) -> dict[str, Any] | None: ...

    def record(self, key: str, result: dict[str, Any]) -> None: ...


def is_done(state: dict[str, Any] | None) -> bool:
    """Whether a ledger record says its request went through: any record but a pending one
    (a result written by an earlier version has no ``state`` and is done)."""
    return state is not None and state.get("state") != PENDING


@dataclass
class LedgerRequest:
    """The ledger's view of one request (``key``: its content key in the run scope).

    ``result``: the recorded result when the request went through already, else None.
    ``earlier_unanswered``: an earlier step attempt sent it without a known answer.
    ``pending``: the pending record an earlier attempt left (with its :meth:`sending` extras).
    """

    ledger: LedgerLike
    key: str
    result: dict[str, Any] | None
    earlier_unanswered: bool
    pending: dict[str, Any] | None = None

    @classmethod
    def look_up(cls, ledger: LedgerLike, key: str) -> LedgerRequest:
        """The request ``key`` as the ledger holds it (one read)."""
        state = ledger.done(key)
        if is_done(state):
            return cls(ledger, key, state, False)
        return cls(ledger, key, None, unanswered_before(state), state)

    def sending(self, **extra: Any) -> None:
        """Record the request pending (with ``extra`` fields): call right before sending it."""
        self.ledger.record(self.key, {"state": PENDING, "at": time.time(), **extra})

    def succeeded(self, result: dict[str, Any]) -> None:
        """Record the request's result: it went through, a re-run resumes after it."""
        self.ledger.record(self.key, result)

    def answered(self, answer: int | str) -> None:
        """The API answered the request (``answer``: its status, or what it said) and did not
        take it: unless an earlier step attempt went unanswered, mark the pending record
        answered, so the next step attempt counts a transient answer to its resend refused."""
        if not self.earlier_unanswered:
            self.ledger.record(
                self.key, {"state": PENDING, "at": time.time(), EARLIER_ANSWER: answer}
            )

    def failed(self, exc: ApiError) -> None:
        """The call failed for good: :meth:`answered` when the API answered every attempt of it
        (429/5xx, 4xx), or :data:`~line_exports.outcomes.NOT_REACHED` when no attempt of it
        reached the API (connection refused...: the request never left, so the next step
        attempt counts its rows unsent, not of unknown delivery); else the record stays
        pending, of unknown answer."""
        if exc.unanswered:
            return
        if exc.status is not None:
            self.answered(exc.status)
        elif not exc.reached:
            self.answered(NOT_REACHED)

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
        fate = count_failed_request(
            report, rows, column, exc, api, earlier_unanswered=self.earlier_unanswered
        )
        self.failed(exc)
        return fate
