"""What really happened to every row of a run, in five counts that add up.

Every row read ends in exactly one place:

* ``rows_rejected``: refused by us before sending, with the rule (validation, duplicates after
  normalization, and what a destination knows the API would refuse, e.g. CAPI's time window);
* ``rows_refused_by_api``: sent and refused by the API, with its answer;
* ``rows_unsent``: valid but never sent, because the run stopped;
* ``rows_delivery_unknown``: sent, but whether the API took them nobody can tell (a request
  that got no answer, or a 5xx once the retries were spent; LINE: a request whose answer was
  lost longer ago than the resend window, 23 h 10 min at the default ``connection_timeout``,
  when its retry key may have expired and a resend could deliver twice); listed in the
  rejects file with rule ``delivery_unknown``. What to do about them depends on the API (how it takes a request sent twice): each
  destination says it (``Destination.delivery_advice``), in the failure, the metadata
  (``delivery_unknown_advice``) and the CLI's warning;
* ``rows_accepted``: accepted by the API (rows of a resumed batch included; in ``sync_mode``
  diff / mirror also the unchanged rows an earlier run delivered, ``rows_unchanged``).

``rows_read = rows_rejected + rows_refused_by_api + rows_unsent + rows_delivery_unknown +
rows_accepted`` holds in every destination's metadata, and ``rows_valid = rows_read -
rows_rejected`` (the rows meant for the API); where an API's own counts do not add up
to the rows sent, the difference is shown as ``rows_unaccounted``. The ``api_refusals`` check
fails when any row was refused, is of unknown delivery, or is unaccounted for.

A request that failed for good puts its rows in one place by one rule, in every destination
(:func:`fate_of`, :func:`count_failed_request`): the API answered it with a 4xx (a 429 too,
once the retries are spent: a rate limit, not processed) -> refused, with that answer; it
answered a 5xx once the retries are spent, or gave no answer although the request may have
reached it (a timeout after sending, a connection cut) -> delivery unknown, with its answer:
it may have acted (LINE, "Retry failed API requests": "even if you get such error, there is a
possibility that your message was delivered"); the request never reached it (no connection,
TLS refused) -> unsent, like every row after it in a stopped run.

A run whose valid rows the API accepted none of (or fewer than ``min_accepted_ratio`` of)
fails with the API's reasons; a run with some refusals (or deliveries of unknown fate) succeeds
with a failing ``api_refusals`` check that carries the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
import pandas as pd

from line_exports.destination import DeliveryReport
from line_exports.http import RETRYABLE_STATUS, ApiError, may_have_acted
from line_exports.rules import ROW_NUMBER, reject

if TYPE_CHECKING:
    from line_exports.export import ValidationSummary

API_REFUSALS_CHECK = "api_refusals"
REASONS_SHOWN = 5
REQUEST_REFUSED = "request_refused"
"""Rule of rows whose whole request the API refused (not a judgement of each row): sync_mode
diff / mirror sends them again next run (every destination's ``refusal_is_transient``)."""
DELIVERY_UNKNOWN = "delivery_unknown"


@dataclass(frozen=True)
class Fate:
    """Where the rows of a request that failed for good belong, and why."""

    kind: Literal["refused", "unknown", "unsent"]
    reason: str


EARLIER_ANSWER = "answered"
"""Key of a ``pending`` ledger record holding the status with which the last attempt of an
earlier step attempt was answered (or :data:`NOT_REACHED`: every attempt of it certainly
never reached the API)."""

NOT_REACHED = "not reached"
""":data:`EARLIER_ANSWER` of a pending record whose every attempt certainly never reached the
API (``ApiError.reached`` False, none unanswered): the request never left."""

EARLIER_UNANSWERED = "unanswered"
EARLIER_5XX = "answered_5xx"
"""Keys of a ``pending`` ledger record counting the attempts of earlier step attempts that may
have acted: those that got no answer, those answered a 5xx (:class:`Earlier`)."""


class NotSent(ApiError):
    """A request this attempt did not send (again): it never left, so it cannot have reached
    the API (``reached`` False). Unlike a request that could not reach the API (connection
    refused), nothing was tried: :func:`fate_of` says "then not sent again (why)", never "then
    LINE was not reached" (VERIFY-13k F3 nit). ``why``: why it was not sent (the run stopped
    before it, or was stopped at once)."""

    def __init__(self, why: str, path: str = "") -> None:
        super().__init__(why, path=path, reached=False)


@dataclass(frozen=True)
class Earlier:
    """What the earlier (Dagster step) attempts of a request got that may have acted on it:
    ``unanswered`` attempts that may have reached the API without an answer, ``server_errors``
    attempts it answered a 5xx (:func:`~line_exports.http.may_have_acted`). True when any.

    A lookup by name that found nothing after a create's 5xx does not rule the 5xx out: the API
    may still act on it (a 504's backend may finish later; README "One rule")."""

    unanswered: int = 0
    server_errors: int = 0

    def __bool__(self) -> bool:
        return bool(self.unanswered or self.server_errors)

    def plus(self, other: Earlier | None) -> Earlier:
        """Both counts together."""
        if other is None:
            return self
        return Earlier(self.unanswered + other.unanswered, self.server_errors + other.server_errors)

    def fields(self) -> dict[str, int]:
        """The pending record's counts (:data:`EARLIER_UNANSWERED`, :data:`EARLIER_5XX`)."""
        return {EARLIER_UNANSWERED: self.unanswered, EARLIER_5XX: self.server_errors}

    def text(self) -> str:
        """``no answer to 1 and a 5xx answer to 2 earlier attempt(s)``."""
        parts = [f"no answer to {self.unanswered}"] if self.unanswered else []
        parts += [f"a 5xx answer to {self.server_errors}"] if self.server_errors else []
        return " and ".join(parts) + " earlier attempt(s)"


def unanswered_before(state: dict[str, Any] | None) -> Earlier:
    """What an earlier (Dagster step) attempt of this run scope left of a request it sent
    (:class:`Earlier`, false when nothing that may have acted): the ledger holds it ``pending``
    (recorded before sending) with the counts of its attempts (:data:`EARLIER_UNANSWERED`,
    :data:`EARLIER_5XX`); a record without counts (an attempt cut off after sending, or written
    by an earlier version) got no answer unless one is recorded (:data:`EARLIER_ANSWER`: a 5xx
    may have acted; a 4xx or :data:`NOT_REACHED` did not)."""
    if state is None or state.get("state") != "pending":
        return Earlier()
    if EARLIER_UNANSWERED in state or EARLIER_5XX in state:
        return Earlier(int(state.get(EARLIER_UNANSWERED, 0)), int(state.get(EARLIER_5XX, 0)))
    answer = state.get(EARLIER_ANSWER)
    if answer is None:
        return Earlier(unanswered=1)
    return Earlier(server_errors=int(isinstance(answer, int) and may_have_acted(answer)))


def fate_of(exc: ApiError, api: str, earlier: Earlier | None = None) -> Fate:
    """The one rule for a request that failed for good (``api``: the API's name, e.g. MAAC).

    ``earlier``: what earlier attempts of the step (Dagster's RetryPolicy re-runs the export)
    got that sent the same request (:func:`unanswered_before`: no answer, or a 5xx); they
    count like earlier attempts of this call.

    * The API answered a 5xx (once retries are spent): ``unknown``, the reason being its
      answer: it may have acted on the request (LINE, "Retry failed API requests",
      https://developers.line.biz/en/docs/messaging-api/retrying-api-request: "even if you get
      such error, there is a possibility that your message was delivered"; CAPI may keep part
      of a request it answers 500). A re-run of the same session resends it under its
      idempotency key (LINE's retry key: 409 if it was delivered; the ledger).
    * The API answered a 4xx (a 429 once retries are spent included: a rate limit, the request
      was not processed: "The Messaging API doesn't process requests that return HTTP status
      code 429", https://developers.line.biz/en/docs/messaging-api/handling-http-429-errors/):
      ``refused``, the reason being its answer. Unless the answer is a transient one (429,
      408) and an earlier attempt may have acted (no answer, or a 5xx): then ``unknown``.
    * No answer, and the request may have reached the API (a read timeout, a connection cut
      mid-request): ``unknown`` -- it may or may not have acted.
    * The request never reached the API (the connection could not be opened, TLS refused,
      credentials refused over plain HTTP), or this attempt did not send it (again)
      (:class:`NotSent`): ``unsent``, unless an earlier attempt may have acted (no answer, or
      a 5xx): ``unknown`` ("a 5xx answer to 1 earlier attempt(s), then not sent again (the run
      stopped before it)").

    The reason says what the earlier attempts got (``a 5xx answer to 2 earlier attempt(s),
    then LINE answered 429 ...``), never "no answer" for an attempt that was answered.
    """
    where = f"{exc.method} {exc.path}".strip()
    before = Earlier(exc.unanswered, exc.server_errors).plus(earlier)
    # "may have acted" when a 5xx was the last word, "may or may not" after a lost answer
    acted = "may or may not have acted on it" if before.unanswered else "may have acted on it"
    if exc.status is not None:
        answer = f"{api} answered {exc.status} to {where}: {exc.body[:300]}".rstrip(": ")
        transient = exc.status in RETRYABLE_STATUS or may_have_acted(exc.status)
        if before.unanswered and transient:
            return Fate("unknown", f"{before.text()}, then {answer}: {api} {acted}")
        if may_have_acted(exc.status):
            return Fate(
                "unknown", f"{answer} (a 5xx: {api} may have acted on it, in whole or part)"
            )
        if transient and before.server_errors:
            return Fate("unknown", f"{before.text()}, then {answer}: {api} {acted}")
        if before:  # a lasting refusal of the request itself: its earlier attempts' too
            return Fate("refused", f"{before.text()}, then {answer}")
        return Fate("refused", answer)
    if exc.reached:
        return Fate(
            "unknown",
            f"no answer from {api} ({exc}): the request may or may not have reached it",
        )
    then = (
        f"not sent again ({exc})" if isinstance(exc, NotSent) else f"{api} was not reached ({exc})"
    )
    if before:
        return Fate("unknown", f"{before.text()}, then {then}: {api} {acted}")
    if isinstance(exc, NotSent):
        return Fate("unsent", f"not sent ({exc})")
    return Fate("unsent", f"{api} was not reached ({exc})")


def count_failed_request(
    report: DeliveryReport,
    rows: Sequence[int] | pd.Series,
    column: str,
    exc: ApiError,
    api: str,
    rule: str = REQUEST_REFUSED,
    earlier: Earlier | None = None,
) -> Fate:
    """Count the rows (row numbers) of a request that failed for good where :func:`fate_of`
    puts them: refused (rejects with ``rule`` and the API's answer) or delivery unknown, both
    sent; unsent rows are left out of the report (the export counts them unsent)."""
    fate = fate_of(exc, api, earlier)
    numbers = [int(n) for n in rows]
    if fate.kind == "refused":
        report.refused.append(reject(numbers, column, rule, fate.reason))
    elif fate.kind == "unknown":
        report.unknown.append(reject(numbers, column, DELIVERY_UNKNOWN, fate.reason))
    if fate.kind != "unsent":
        report.sent_rows += len(numbers)
    return fate


@dataclass(frozen=True)
class Outcome:
    """The five counts of a run (and the rows this run sent, for the pace of things: rows of
    a batch resumed from an earlier run's ledger records are not)."""

    read: int
    rejected: int
    refused: int
    unsent: int
    unknown: int
    accepted: int
    sent: int
    valid: int

    @property
    def unaccounted(self) -> int:
        """Rows the API's counts leave unexplained (0 when accepted + refused = sent)."""
        return self.read - self.rejected - self.refused - self.unsent - self.unknown - self.accepted

    @classmethod
    def of(cls, summary: ValidationSummary, report: DeliveryReport | None) -> Outcome:
        """Counts from the validation summary (after the report's rejects were added to it).

        ``valid`` has one meaning everywhere: the rows read less the rows rejected before
        sending (by validation, duplicates included, or by the destination's own rules), i.e.
        the rows meant for the API: ``valid = refused + unsent + unknown + accepted``.
        """
        valid = summary.rows_read - summary.rejected_rows
        if report is None:
            return cls(
                read=summary.rows_read,
                rejected=summary.rejected_rows,
                refused=0,
                unsent=valid,
                unknown=0,
                accepted=0,
                sent=0,
                valid=valid,
            )
        return cls(
            read=summary.rows_read,
            rejected=summary.rejected_rows,
            refused=report.refused_rows,
            unsent=max(valid - report.sent_rows - report.unchanged_rows, 0),
            unknown=report.unknown_rows,
            accepted=report.accepted_rows,
            # this run's requests only: rows of a batch an earlier run delivered (resumed from
            # the ledger) count accepted, not sent again (README, "rows_sent")
            sent=max(report.sent_rows - report.resumed_rows, 0),
            valid=valid,
        )

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "rows_read": self.read,
            "rows_valid": self.valid,
            "rows_rejected": self.rejected,
            "rows_refused_by_api": self.refused,
            "rows_unsent": self.unsent,
            "rows_delivery_unknown": self.unknown,
            "rows_accepted": self.accepted,
        }
        if self.unaccounted:
            meta["rows_unaccounted"] = self.unaccounted
        return meta


def first_answers(frames: list[pd.DataFrame], limit: int = REASONS_SHOWN) -> str:
    """The API's first distinct answers, with a row each: what a user reads first."""
    seen: dict[str, int] = {}
    for frame in frames:
        for row, message in zip(frame[ROW_NUMBER].tolist(), frame["message"].tolist(), strict=True):
            if message not in seen:
                seen[message] = int(row)
                if len(seen) >= limit:
                    break
    return "; ".join(f"row {row}: {message}" for message, row in seen.items())


def acceptance_failure(
    name: str,
    outcome: Outcome,
    report: DeliveryReport,
    summary: ValidationSummary,
    min_accepted_ratio: float,
    metadata: dict[str, Any],
    advice: str,
    api: str = "API",
) -> dg.Failure | None:
    """The failure of a run whose valid rows the API accepted none of, or too few; else None.

    ``advice``: what to do about rows of unknown delivery at this API
    (``Destination.delivery_advice``), said after their count and first reason; ``api``: the
    API's name, first in the headline (``headlines.API_NAMES``, e.g. ``LinkedIn API``)."""
    if outcome.valid == 0:
        return None  # nothing to deliver: the reject_rate check says why
    share = outcome.accepted / outcome.valid
    if outcome.accepted > 0 and share >= min_accepted_ratio:
        return None
    wanted = (
        "none"
        if outcome.accepted == 0
        else f"{outcome.accepted:,} ({share:.1%}, under min_accepted_ratio {min_accepted_ratio:.1%})"
    )
    parts = [f"{name}: the {api} accepted {wanted} of {outcome.valid:,} valid rows"]
    if outcome.refused:
        named = [first_answers(report.refused)] if report.refused else []
        unnamed = [f"{n:,} rows: {a}" for a, n in report.refused_unnamed_answers.items()]
        answers = "; ".join(named + unnamed)  # unnamed: rows the API only counted (MAAC)
        parts.append(
            f"{outcome.refused:,} refused by the API"
            + (f" (first answers: {answers})" if answers else "")
        )
    if report.rejected_rows:
        parts.append(
            f"{report.rejected_rows:,} rejected before sending ({first_answers(report.rejected)})"
        )
    if outcome.unsent:
        parts.append(f"{outcome.unsent:,} never sent")
    if outcome.unknown:
        parts.append(
            f"{outcome.unknown:,} of unknown delivery ({first_answers(report.unknown, 1)}): "
            + advice
        )
    if outcome.unaccounted:
        parts.append(f"{outcome.unaccounted:,} unaccounted for by the API's counts")
    return dg.Failure(description="; ".join(parts), metadata=metadata, allow_retries=False)


def refusal_check(asset_key: dg.AssetKey, outcome: Outcome) -> dg.AssetCheckResult:
    """Fails when the API refused some rows, some deliveries are of unknown fate, or the API's
    counts do not add up; with the counts."""
    return dg.AssetCheckResult(
        check_name=API_REFUSALS_CHECK,
        asset_key=asset_key,
        passed=outcome.refused == 0 and outcome.unaccounted == 0 and outcome.unknown == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows_sent": outcome.sent,
            "rows_refused_by_api": outcome.refused,
            "rows_delivery_unknown": outcome.unknown,
            "rows_accepted": outcome.accepted,
            "rows_unaccounted": outcome.unaccounted,
        },
    )


def refusal_check_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        API_REFUSALS_CHECK,
        asset=asset_key,
        description=(
            "Fails when the API refused rows that were sent, or whether it took some is unknown "
            "(the counts are in its metadata)."
        ),
    )
