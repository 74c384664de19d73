"""Settle an earlier run's unanswered requests before a new run plans: no second delivery.

A ``sync_mode`` diff run records its rows ``pending`` before sending (:mod:`.sync_store`). A
re-execution of the same scope resumes them through the ledger under the same retry keys. A
run of another scope (the schedule's next tick, a new manual launch) has new retry keys, and
for LINE push and multicast a resend under a new key is a second message. So a destination
whose :attr:`~line_exports.sync.SyncSpec.settle_window` is set (LINE push and multicast) also
records every request it is about to send (retry key, exact body, recipients, when, scope) in
``sync_requests``, dropped when its run commits; a run settles those of runs that did not commit
before it plans, one request at a time, by what the earlier scope's ledger
holds:

* ``accepted``: its recipients are accepted (no call);
* ``refused`` (a 400 for one recipient): refused, with LINE's answer; a refused multicast
  group delivered nothing (its recipients were split into groups recorded on their own);
* ``pending`` and first sent less than ``settle_window`` ago: sent again, the same body under
  the same ``X-Line-Retry-Key``. LINE ("Retry failed API requests",
  https://developers.line.biz/en/docs/messaging-api/retrying-api-request/): a key is valid for
  24 hours from the first request, for push, multicast, narrowcast and broadcast; the retried
  request must be the same as the original, its content and recipients unchanged; a request
  whose key LINE already accepted answers ``409`` with ``X-Line-Accepted-Request-Id`` (the
  accepted request's ID) and delivers nothing, a 2xx means it is delivered now, a 400 that it
  is refused. A 409 or 2xx settles the recipients ``accepted`` (each counted once; a 2xx also
  in :attr:`Settled.delivered`), a 400 ``refused``; LINE's monthly-quota 429 delivered
  nothing: the rows stay ``pending`` and are planned as usual. So a recipient gets the earlier
  run's message (rendered then, not today's), at most once, also one who has since left the
  result: trimming the request to today's result would change it under its key, and a new key
  would deliver again to those LINE had reached. The destination cuts the resend's retries to
  end before the key does, or answers 'expired' (held, as below): for LINE
  :func:`~line_exports.destinations.line_messaging.sending.retries_within`;
* ``pending`` and first sent longer ago: the key expires before a resend surely reaches LINE
  (the window leaves clocks 10 minutes and one resend attempt its longest time:
  :func:`~line_exports.destinations.line_messaging.sending.resend_window`), whether it
  delivered cannot be known, and a resend could send the coupon twice: the rows are held
  ``unknown`` (reported as ``rows_delivery_unknown``; the ``sync_removals`` check fails saying
  how to release them), until the user decides with ``line-exports held EXPORT --resend`` or
  ``--delivered`` (:func:`line_exports.sync_held.release`);
* not in the ledger (the run was killed between recording the request and sending it), or
  recorded and never started (the sender stopped first, put back by
  :func:`~line_exports.destinations.line_messaging.sending.put_back_unstarted`;
  :func:`~line_exports.ledger_request.never_sent`): nothing was sent, the rows stay
  ``pending`` and are planned as usual (VERIFY-13o G2).

This holds for a re-execution of the same scope too (the same tick after a kill): its rows are
rendered anew from today's template and rows, so a changed message would give new retry keys;
the recorded requests are settled first, and only rows with no recorded request are sent.

A transient failure of a resend (5xx, no answer, 429 rate limit after retries) stops the run
before it plans anything; what was settled so far is kept, the rest is settled next run. The
stopped run still counts every row (:class:`SettleStopped`): the failed request's by
:func:`~line_exports.outcomes.fate_of` (a 5xx once the retries are spent: delivery unknown,
LINE may have acted; a 429: refused, unless an earlier attempt went unanswered), those of requests it did not send again by
what the ledger recorded of their earlier attempt
(:func:`~line_exports.ledger_request.recorded_error`), the others unsent.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlalchemy as sa

from line_exports.claims import ClaimOwner, ScopeClaimed, holder_is_gone
from line_exports.destination import DeliveryReport
from line_exports.http import ApiError
from line_exports.ledger import CLAIMS
from line_exports.ledger_request import failure_mark, never_sent, recorded_error
from line_exports.outcomes import (
    EARLIER_ANSWER,
    Earlier,
    count_failed_request,
    unanswered_before,
)
from line_exports.sync_store import SentRequest, SyncStore, store_name

if TYPE_CHECKING:
    from line_exports.destination import Destination, ExportRun

UNKNOWN_RULE = "delivery_unknown"
API = "LINE"
"""The API whose requests are settled (LINE push and multicast), as a row's reason names it."""


class ResendFailed(Exception):
    """:meth:`~line_exports.destination.Destination.resend` failed for good with a transient
    ``error`` (a 5xx or 429 once the retries are spent, no answer, no connection). ``made``:
    whether the request itself was sent (False: it failed before, e.g. issuing a token)."""

    def __init__(self, error: ApiError, made: bool = True) -> None:
        super().__init__(str(error))
        self.error = error
        self.made = made


class SettleStopped(Exception):
    """The settle step stopped at a resend that failed for good: the run stops before it plans.

    ``failed``: {member key: (the error its request's attempts ended with, what earlier
    attempts got that may have acted)} of the members of the requests not settled: the one that failed
    now, and those not sent again after it (their ledger record's error,
    :func:`~line_exports.ledger_request.recorded_error`); a request not made (no token) has no
    entry: its rows are unsent. ``settled``: what the step did before."""

    def __init__(
        self, error: ApiError, failed: dict[str, tuple[ApiError, Earlier]], settled: Settled
    ) -> None:
        super().__init__(
            f"{error} (sending again, before planning, a request an earlier run left without a "
            "final answer; the rest are settled next run)"
        )
        self.error = error
        self.failed = failed
        self.settled = settled

    def report(self, changed: pa.Table) -> DeliveryReport:
        """The stopped run's report over the rows it would send (``changed``: the plan's
        ``rn``, ``key``): each row of a request not settled where
        :func:`~line_exports.outcomes.count_failed_request` puts it, the others unsent."""
        report = DeliveryReport()
        keys, rows = changed.column("key").to_pylist(), changed.column("rn").to_pylist()
        row_of = dict(zip(keys, rows, strict=True))
        groups: dict[tuple[int, Earlier], tuple[ApiError, list[int]]] = {}
        for key, (error, earlier) in self.failed.items():
            if key in row_of:
                groups.setdefault((id(error), earlier), (error, []))[1].append(int(row_of[key]))
        for (_, earlier), (error, numbers) in groups.items():
            count_failed_request(report, sorted(numbers), "id", error, API, earlier=earlier)
        return report


def now() -> float:
    """Epoch seconds (one place, so a test can move the exporter's clock with the sandbox's)."""
    return time.time()


def export_of(store: str) -> str:
    """The export of a sync store's name (without ``#partition`` and ``@target``)."""
    return store.split("@")[0].split("#")[0]


def held_hint(export: str) -> str:
    """What the user can do about a held row."""
    return (
        f"Held: `line-exports held {export} --resend` sends it again next run, "
        "`--delivered` records it delivered"
    )


def span(seconds: float) -> str:
    """``23 h 10 min``: a settle window for people."""
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def unknown_reason(export: str, at: float, window: float, answered: int | None = None) -> str:
    """Why a row is held: sent when, what the ledger recorded of LINE's answer (``answered``:
    the status LINE gave every attempt, e.g. 500 once retries were spent; None: no answer was
    recorded, lost or the run stopped), the API's window, what the user can do. The one wording
    of a held row's reason; short enough (under 200 characters before the command) that the
    run's metadata keeps the command whole."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    if answered is None:
        what = "no answer recorded (lost, or the run stopped)"
    else:
        what = f"LINE answered {answered} each time"
        if answered >= 500:
            what += " (a 5xx may still deliver)"
    return (
        f"delivery unknown: sent by an earlier run at {stamp}, {what}; retry key past its "
        f"window ({span(window)}): a resend could deliver twice. {held_hint(export)}"
    )


@dataclass
class Settled:
    """What settling an earlier run's requests did: requests, and the export's members (rows of
    its sync store, whether in today's result or not) by what became of them."""

    requests: int = 0
    resent: int = 0
    already_accepted_409: int = 0
    quota_429: int = 0
    """Resent requests LINE answered its monthly-quota 429: nothing delivered, rows planned."""
    accepted: int = 0
    """Members settled delivered: by the earlier run (ledger, 409) or by this run's resend."""
    delivered: int = 0
    """Of :attr:`accepted`, members this run's resend delivered (LINE answered 2xx): the settle
    step's own deliveries."""
    refused: int = 0
    unknown: int = 0
    refused_here: set[str] = field(default_factory=set)
    """Of the members settled refused, those LINE refused to an earlier step attempt of this
    very run (its ledger record names the run): held as refused by "an earlier step attempt
    of this run", not "an earlier run" (VERIFY-13o G2 nit)."""

    def metadata(self) -> dict[str, int]:
        return {
            "earlier_requests_settled": self.requests,
            "earlier_requests_resent": self.resent,
            "earlier_requests_409": self.already_accepted_409,
            "earlier_requests_quota_429": self.quota_429,
            "rows_settled_accepted": self.accepted,
            "rows_settled_delivered": self.delivered,
            "rows_settled_refused": self.refused,
            "rows_settled_unknown": self.unknown,
        }

    def sent_text(self) -> str:
        """What the settle step sent, for a later failure text ('' when it sent nothing)."""
        if not self.resent:
            return ""
        answers = [
            f"{self.delivered:,} rows delivered now",
            f"{self.already_accepted_409:,} requests answered 409 (delivered before)",
        ]
        if self.quota_429:
            answers.append(f"{self.quota_429:,} refused for the monthly quota")
        return (
            f"before planning, this run sent {self.resent:,} requests an earlier run left "
            f"unanswered again under their retry keys: {', '.join(answers)}"
        )


def refuse_if_running(store: SyncStore, run: ExportRun, target: str) -> None:
    """Raise :class:`~line_exports.claims.ScopeClaimed` (nothing sent) when a live run of
    another scope of this export and store (another tick, a manual launch) holds its claim while
    the store has ``pending`` rows: they may be that run's, in flight or about to be sent, and
    this run would send them again under new retry keys."""
    ledger = run.ledger.ledger
    now = ledger.now()
    with ledger.engine.connect() as con:
        others = con.execute(
            sa.select(
                CLAIMS.c.scope,
                CLAIMS.c.run_id,
                CLAIMS.c.host,
                CLAIMS.c.pid,
                CLAIMS.c.process,
                CLAIMS.c.claimed_at,
                (now - CLAIMS.c.heartbeat_at).label("age"),
            ).where(CLAIMS.c.export == run.ledger.export, CLAIMS.c.scope != run.ledger.scope)
        ).all()
    for other in others:
        if store_name(run.ledger.export, other.scope, target) != store.export:
            continue  # another partition's or target's store
        if float(other.age) > ledger.claim_timeout or holder_is_gone(other.process):
            continue  # stale: its rows are settled below
        if not store.keys_by_recipient("pending"):
            return
        raise ScopeClaimed(
            run.ledger.export,
            other.scope,
            ClaimOwner(other.run_id, other.host, int(other.pid)),
            float(other.claimed_at),
            float(other.age),
            ledger.claim_timeout,
        )


def settle_earlier(
    dest: Destination,
    resource: Any,
    settings: Any,
    store: SyncStore,
    run: ExportRun,
    window: float,
) -> Settled | None:
    """Settle the requests recorded by earlier runs that did not commit (see the module's
    docstring), this run's own scope included: a re-execution of a killed tick whose template or
    rows changed since renders other messages, so other retry keys, and would deliver again what
    the killed run sent; the recorded request is sent as it was instead. None when there are
    none. Raises :class:`SettleStopped` at a resend that fails for good (the settled part
    kept: the rest is settled next run)."""
    requests = store.earlier_requests()
    if not requests:
        return None
    member = store.keys_by_recipient("pending")
    result = Settled()
    accepted: set[str] = set()
    delivered: set[str] = set()
    refused: dict[str, tuple[str, str]] = {}
    unknown: dict[str, str] = {}
    done: list[str] = []
    stop: ApiError | None = None  # the resend that failed for good: no more are sent
    failed: dict[str, tuple[ApiError, Earlier]] = {}
    export = export_of(store.export)
    scopes: dict[str, list[SentRequest]] = defaultdict(list)
    for request in requests:
        scopes[request.scope].append(request)
    try:
        for scope, group in scopes.items():
            ledger = run.ledger.ledger.scope(run.ledger.export, scope)
            states = ledger.done_many([r.key for r in group])
            for request in group:
                keys = [member[r] for r in request.recipients if r in member]
                state = states.get(request.key) or {}
                outcome = state.get("state")
                if never_sent(state):  # recorded, never started: nothing to settle
                    done.append(request.key)  # its rows stay pending, planned as usual
                    continue
                if (
                    outcome == "pending"
                    and stop is not None
                    and not _expired(request, state, window)
                ):
                    where = f"an earlier {request.kind} request"  # not sent again: as recorded
                    error = recorded_error(state, where)
                    failed.update((k, (error, unanswered_before(state))) for k in keys)
                    continue
                if outcome == "pending":
                    try:
                        outcome, state = _resend(dest, resource, settings, request, state, window)
                    except ResendFailed as exc:
                        stop = exc.error
                        result.resent += int(exc.made)
                        earlier = unanswered_before(state)
                        if exc.made:
                            failed.update((k, (exc.error, earlier)) for k in keys)
                        mark = failure_mark(exc.error, earlier, exc.made)
                        ledger.record(request.key, {**state, **mark})  # first send kept
                        continue
                    _count(result, outcome, state)
                    if outcome == "expired":
                        reason = unknown_reason(
                            export, state["at"], window, state.get(EARLIER_ANSWER)
                        )
                        unknown.update((k, reason) for k in keys)
                    elif outcome == "accepted" and state.get("status") != 409:
                        delivered.update(keys)
                    if outcome in ("accepted", "refused"):
                        ledger.record(request.key, {"state": outcome, "at": now(), **state})
                if outcome == "accepted":
                    accepted.update(keys)
                elif outcome == "refused" and len(request.recipients) == 1 and keys:
                    message = str(state.get("message", "")) or "refused (no answer recorded)"
                    refused[keys[0]] = (f"line_{request.kind}_refused", message)
                    if run.run_id and state.get("run") == run.run_id:
                        result.refused_here.add(keys[0])
                done.append(request.key)
                result.requests += 1
    finally:
        _apply(store, accepted, refused, unknown, result)
        result.delivered = len(delivered)
        store.drop_requests(keys=done)
        run.sent_before = result.sent_text()
    if result.resent:  # before the plan's line, whose "unchanged" rows include these
        run.log.info(f"{run.name}: {result.sent_text()}")
    if stop is not None:
        kept = {k: v for k, v in failed.items() if k not in accepted}
        raise SettleStopped(stop, kept, result) from stop
    return result


def _expired(request: SentRequest, state: dict[str, Any], window: float) -> bool:
    """Whether a pending request was first sent over ``window`` ago (held, not sent again)."""
    return now() - min(float(state.get("at", request.at)), request.at) > window


def _resend(
    dest: Destination,
    resource: Any,
    settings: Any,
    request: SentRequest,
    state: dict[str, Any],
    window: float,
) -> tuple[str, dict[str, Any]]:
    """A request the ledger shows ``pending``: sent again (the destination's outcome and
    answer) unless it was first sent over ``window`` ago, or its key would expire before a
    resend surely ends: ('expired', {'at': when it was first sent, 'answered': the status
    every attempt was answered, or None})."""
    # The earliest record: a resumed run records a request pending again.
    sent_at = min(float(state.get("at", request.at)), request.at)
    age = now() - sent_at
    expired = {"at": sent_at, EARLIER_ANSWER: state.get(EARLIER_ANSWER)}
    if age > window:
        return "expired", expired
    body = request.body.encode()
    outcome, answer = dest.resend(resource, settings, request.kind, body, request.key, age)
    return outcome, (expired if outcome == "expired" else answer)


def _count(result: Settled, outcome: str, answer: dict[str, Any]) -> None:
    """Count a resend's answer (a request held 'expired' was not sent)."""
    if outcome == "expired":
        return
    result.resent += 1
    result.already_accepted_409 += int(answer.get("status") == 409)
    result.quota_429 += int(outcome == "not_delivered")


def outlook(store: SyncStore, window: float) -> list[str]:
    """For ``line-exports plan``: the rows to retry that an earlier run's requests hold, which
    a run settles first (under their retry keys, never sent twice) or, sent longer than
    ``window`` ago, holds as delivery unknown. Reads only; the ledger's answers are not asked."""
    requests = store.earlier_requests()
    if not requests:
        return []
    pending = store.keys_by_recipient("pending")
    fresh: set[str] = set()
    stale: set[str] = set()
    for request in requests:
        keys = {pending[r] for r in request.recipients if r in pending}
        (fresh if now() - request.at <= window else stale).update(keys)
    lines = []
    if fresh:
        lines.append(
            f"settle first: {len(fresh):,} of the rows to retry are in requests an earlier run "
            "sent without a recorded answer: sent again under the same retry keys (LINE answers "
            "409 for those it delivered), never twice"
        )
    if stale - fresh:
        export = export_of(store.export)
        lines.append(
            f"hold: {len(stale - fresh):,} of the rows to retry were sent by an earlier run over "
            f"{span(window)} ago without a recorded answer: delivery unknown, held "
            f"(line-exports held {export})"
        )
    return lines


def _apply(
    store: SyncStore,
    accepted: set[str],
    refused: dict[str, tuple[str, str]],
    unknown: dict[str, str],
    result: Settled,
) -> None:
    """Write the settled statuses (accepted wins: a recipient delivered once is done)."""
    refused = {k: m for k, m in refused.items() if k not in accepted}
    unknown = {k: m for k, m in unknown.items() if k not in accepted and k not in refused}
    store.set_status(sorted(accepted), "accepted")
    store.set_status(sorted(refused), "refused")
    store.put_refusals(list(refused), [(rule, "id", m) for rule, m in refused.values()])
    store.set_status(sorted(unknown), "unknown")
    store.put_refusals(list(unknown), [(UNKNOWN_RULE, "id", m) for m in unknown.values()])
    result.accepted += len(accepted)
    result.refused += len(refused)
    result.unknown += len(unknown)
