"""Narrowcast and broadcast targets: one request per row, the row filling ``template_message``.

``POST /v2/bot/message/narrowcast`` (``messaging-api.yml``, answered ``202``) sends to the
``recipient`` (audiences by id or by name, LINE's ``and``/``or``/``not`` operators, redelivery),
narrowed by a demographic ``filter`` and a ``limit`` (``max``, ``upToRemainingQuota``,
``forbidPartialDelivery``); LINE selects the recipients asynchronously, so each request's
progress (``GET /v2/bot/message/progress/narrowcast``) is polled until ``succeeded`` or
``failed`` and its ``targetCount`` / ``successCount`` / ``failureCount`` land in the metadata.
``POST /v2/bot/message/broadcast`` (``200``) sends to every friend; LINE gives no progress for
it. Both are limited to 60 requests an hour, so an export holds at most 60 rows.

Quota: LINE counts one message per recipient. What a narrowcast will reach is known only after
LINE selects its recipients, so the check before sending uses an upper bound (audience sizes:
``or`` adds, ``and`` takes the smallest, capped by ``limit.max``; a broadcast uses the
``targetedReaches`` of ``GET /v2/bot/insight/followers`` for the last day counted); the metadata
says which (``messages_needed_basis``). When no bound can be known the run says so and sends.

Never twice: each request carries an ``X-Line-Retry-Key`` derived from the export, its run scope
and the exact request, and the ledger records it pending before and accepted (with LINE's request
id) after; a re-run resumes a recorded request by polling its progress, and a request whose
answer was lost is resent with the same key: LINE answers ``409`` with the accepted request's id
(``x-line-accepted-request-id``), which is then polled.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import dagster as dg
import sqlalchemy as sa

from line_exports.destination import (
    DeliveryFailed,
    DeliveryReport,
    ExportRun,
    NothingSent,
    ValidRows,
)
from line_exports.destinations.line_messaging.auth import TokenError
from line_exports.destinations.line_messaging.client import (
    LineMessagingClient,
    explain,
    line_error,
    monthly_limit,
    refusal,
    retry_key,
)
from line_exports.destinations.line_messaging.push import bad_rendered_rows
from line_exports.destinations.line_messaging.sending import (
    QUOTA_REASON,
    first_sent,
    held_reason,
    left_by_earlier,
    retries_left,
)
from line_exports.destinations.line_messaging.settings import LineMessagingSettings
from line_exports.destinations.line_messaging.targeting import (
    PROGRESS_ERROR_CODES,
    TargetingError,
    audience_ids,
    audience_names,
    recipient_problems,
    request_targeting,
    resolve_names,
    upper_bound,
)
from line_exports.http import ApiError, RetrySettings, poll
from line_exports.interrupts import DeliveryInterrupted
from line_exports.ledger import ENTRIES, Ledger
from line_exports.ledger_request import (
    failure_mark,
    pending_record,
    recorded_error,
    unsent_record,
)
from line_exports.outcomes import (
    DELIVERY_UNKNOWN,
    count_failed_request,
    fate_of,
    unanswered_before,
)
from line_exports.rules import ROW_NUMBER, reject

Kind = Literal["narrowcast", "broadcast"]
MAX_ROWS = 60  # LINE: narrowcast and broadcast, 60 requests an hour each
JST = timezone(timedelta(hours=9))


def check_rows(kind: str, valid_rows: int) -> None:
    """Refuse, before sending, more rows than LINE takes requests in an hour."""
    if valid_rows > MAX_ROWS:
        raise ValueError(
            f"a {kind} export sends one request per row and LINE takes {MAX_ROWS} {kind} "
            f"requests an hour; the query returned {valid_rows:,} valid rows. Return one row per "
            "message to send (its columns fill template_message's {{placeholders}})."
        )


def audience_of_export(ledger: Ledger, export: str) -> int | None:
    """The audience the ``audience`` export ``export`` (asset key, ``/``-joined) last uploaded
    to, from the ledger's records of its uploads (any run scope, the newest)."""
    query = (
        sa.select(ENTRIES.c.result)
        .where(ENTRIES.c.export == export, ENTRIES.c.result.like('%"audience_id"%'))
        .order_by(ENTRIES.c.recorded_at.desc())
        .limit(1)
    )
    with ledger.engine.connect() as con:
        row = con.execute(query).first()
    return int(json.loads(row[0])["audience_id"]) if row else None


def resolve_recipient(
    client: LineMessagingClient, recipient: dict[str, Any] | None, ledger: Ledger
) -> tuple[dict[str, Any] | None, dict[int, int]]:
    """The recipient with audiences named by ``description`` or ``export`` replaced by ids,
    and each audience's size.

    A ``description`` is an audience's name (as LINE compares names: case-insensitive; the
    newest when several); an ``export`` is the ``audience`` export that uploads it (read from
    the ledger). An audience that does not exist, or is not ``READY``, fails the run before
    anything is sent."""
    if recipient is None:
        return None, {}

    def lookup(field: str, name: str) -> int:
        if field == "export":
            ident = audience_of_export(ledger, name)
            if ident is None:
                raise NothingSent(
                    f"the ledger holds no audience uploaded by export {name!r} "
                    "(recipient audience by export); run that audience export first"
                )
            return ident
        found = [g for g in client.audiences_named(name) if g.get("status") != "EXPIRED"]
        if not found:
            raise NothingSent(
                f"no LINE audience is named {name!r} (recipient audience by "
                "description); create it first, e.g. with a target: audience export"
            )
        return int(max(found, key=lambda g: int(g.get("created") or 0))["audienceGroupId"])

    try:
        resolved = resolve_names(recipient, lookup)
    except TargetingError as exc:
        raise NothingSent(f"recipient: {exc}") from None
    problems = recipient_problems(resolved)
    if problems:
        raise NothingSent(
            "recipient breaks LINE's rules: " + "; ".join(f"{p}: {m}" for p, m in problems)
        )
    sizes: dict[int, int] = {}
    for ident in audience_ids(resolved):
        try:
            group = client.audience(ident).get("audienceGroup", {})
        except ApiError as exc:
            if exc.status in (400, 404):
                raise NothingSent(
                    f"LINE audience {ident} (recipient) was not found: {exc}"
                ) from None
            raise
        if group.get("status") != "READY":
            raise NothingSent(
                f"LINE audience {ident} (recipient) is {group.get('status')}, not "
                "READY; nothing was sent"
            )
        sizes[ident] = int(group.get("audienceCount") or 0)
    return resolved, sizes


def reachable_friends(client: LineMessagingClient) -> int | None:
    """``targetedReaches`` of the last day LINE has counted (``insight.yml``:
    ``GET /v2/bot/insight/followers``, dates in UTC+9, ready the next day); None when unknown."""
    today = datetime.now(JST).date()
    for back in (1, 2):
        day = (today - timedelta(days=back)).strftime("%Y%m%d")
        try:
            body = client.http.request(
                "GET", "/v2/bot/insight/followers", endpoint="insight", params={"date": day}
            ).json()
        except ApiError as exc:
            if exc.retryable:
                raise
            return None
        if body.get("status") == "ready" and body.get("targetedReaches") is not None:
            return int(body["targetedReaches"])
    return None


def deliver_campaign(
    client: LineMessagingClient,
    settings: LineMessagingSettings,
    rows: ValidRows,
    run: ExportRun,
    kind: Kind,
) -> DeliveryReport:
    report = run.new_report()
    template = settings.campaign_template()
    columns = [ROW_NUMBER, *template.columns]
    bad = bad_rendered_rows(template, rows, columns, report)
    if bad and not settings.skip_invalid_message:
        first = report.rejected[0].iloc[0]
        raise DeliveryFailed(
            f"{len(bad):,} rows render an invalid message and skip_invalid_message is false, so "
            f"nothing was sent. First: row {first[ROW_NUMBER]}: {first['message']}",
            report,
        )
    targeting = request_targeting(settings)
    named = audience_names(targeting.get("recipient"))
    try:
        recipient, sizes = resolve_recipient(client, targeting.get("recipient"), run.ledger.ledger)
    except NothingSent as exc:  # the rows rejected above stay rejected
        raise DeliveryFailed(str(exc), report) from None
    if recipient is not None:
        targeting["recipient"] = recipient
    options = {"notificationDisabled": True} if settings.notification_disabled else {}
    # Keys from the settings' targeting, before the quota check may add upToRemainingQuota:
    # a re-run finds the same keys whatever the quota says now.
    planned: list[tuple[int, str, str]] = []  # (row, messages, key)
    for batch in rows.batches(MAX_ROWS, columns=columns):
        if bad:
            batch = batch[~batch[ROW_NUMBER].isin(bad)]
        rendered = template.render(batch) if len(batch) else []
        for number, messages in zip(batch[ROW_NUMBER].tolist(), list(rendered), strict=True):
            key = retry_key(run, kind, messages, targeting, options)
            planned.append((int(number), messages, key))
    if not planned:
        return report
    known = run.ledger.done_many([key for *_, key in planned])
    outcomes: list[dict[str, Any]] = []

    def count_rest(after: list[tuple[int, str, str]]) -> None:
        """The requests ``after`` the last one sent, counted by what earlier attempts got
        (:func:`settled_before`; VERIFY-13m F4), those left pending and not sent again by
        what their records say (:func:`not_resent`)."""
        resend = [p for p in after if p in first]
        earlier = settled_before([p for p in after if p not in first], known, client.http.retry)
        earlier += not_resent(resend, known, kind)
        outcomes.extend(earlier)
        report.sent_rows += len(earlier)

    def stopped(after: list[tuple[int, str, str]]) -> None:
        """A signal stopped the run: LINE's answers so far and the requests ``after``
        (:func:`count_rest`), counted."""
        count_rest(after)
        summarize(report, outcomes, kind, settings, named, sizes)

    def send(
        requests: list[tuple[int, str, str]],
        sending: dict[str, Any],
        later: list[tuple[int, str, str]] | None = None,
    ) -> bool:
        """Send ``requests`` in order; True once one failed for good (the run stops).
        ``later``: the requests a later pass sends (a stop counts them too)."""
        for i, (number, messages, key) in enumerate(requests):
            done = known.get(key)

            def put_back(key: str = key, done: dict[str, Any] | None = done) -> None:
                run.ledger.record(key, done if done is not None else unsent_record())

            try:
                # A second signal cutting it off: unknown once it went out, or when an earlier
                # attempt may have acted (a 5xx); never sent, its record is put back
                # (run.sending).
                with run.sending(
                    [number],
                    "template_message",
                    "LINE",
                    client.http.stats,
                    unanswered_before(done),
                    put_back,
                ):
                    outcome = send_one(
                        client, settings, kind, messages, key, done, sending, options, run
                    )
            except dg.DagsterExecutionInterruptedError:  # and LINE's answers so far
                stopped(requests[i + 1 :] + (later or []))
                raise
            outcome["row"] = number
            outcomes.append(outcome)
            if outcome["state"] != "fatal" or outcome.get("quota"):
                report.sent_rows += 1  # a request that failed for good leaves its row unsent
            try:
                run.progress(report.sent_rows)
            except DeliveryInterrupted:  # a signal: count LINE's answers so far, then stop
                stopped(requests[i + 1 :] + (later or []))
                raise
            if outcome["state"] == "fatal":
                return True
        return False

    # What an earlier attempt left pending goes first, with its recorded targeting, before the
    # quota is read (as push and multicast: .sending.left_by_earlier): a step retry that cannot
    # reach LINE counts it by what LINE answered the earlier attempt (a 5xx: unknown).
    retry = client.http.retry
    first = [p for p in planned if left_by_earlier(known.get(p[2]), retry) == "resend"]
    if send(first, targeting, [p for p in planned if p not in first]):
        # The requests the earlier attempt settled, by the ledger (VERIFY-13m F4)
        sent = {o["row"] for o in outcomes}
        count_rest([p for p in planned if p[0] not in sent])
        return summarize(report, outcomes, kind, settings, named, sizes)
    fresh = sum(1 for *_, key in planned if key not in known)
    if fresh:
        sending = quota_check(client, settings, targeting, sizes, fresh, report, run, kind)
    else:
        sending = targeting
        report.metadata.update(
            messages_needed=0, messages_needed_basis="every request was sent by an earlier run"
        )
    send([p for p in planned if p not in first], sending)
    return summarize(report, outcomes, kind, settings, named, sizes)


def settled_before(
    requests: list[tuple[int, str, str]], known: dict[str, dict[str, Any]], retry: RetrySettings
) -> list[dict[str, Any]]:
    """The outcomes an earlier attempt of this run scope got for ``requests`` (row, messages,
    key) by their ledger records ``known``, without a request: accepted (resumed), refused
    with LINE's recorded answer, or, left pending past the window for a safe resend under
    ``retry``, of unknown delivery (as :func:`send_one` says); the others (never sent) have
    none, so their rows stay unsent. For a step retry that stops while it resends what that
    attempt left pending (its main pass, which counts them, never runs; VERIFY-13m F4)."""
    outcomes: list[dict[str, Any]] = []
    for number, _, key in requests:
        state = known.get(key) or {}
        if state.get("state") == "accepted":
            outcomes.append(
                {
                    "state": "accepted",
                    "request_id": str(state.get("request_id") or ""),
                    "status": int(state.get("status", 200)),
                    "resumed": True,
                    "row": number,
                }
            )
        elif state.get("state") == "refused":
            reason = str(state.get("reason") or state.get("message") or "")
            outcomes.append({"state": "refused", "reason": reason, "row": number})
        elif (since := first_sent(state)) is not None:  # not in the resend: past its window
            outcomes.append(
                {"state": "unknown", "reason": held_reason(since, retry), "row": number}
            )
    return outcomes


def not_resent(
    requests: list[tuple[int, str, str]], known: dict[str, dict[str, Any]], kind: Kind
) -> list[dict[str, Any]]:
    """The outcomes of ``requests`` (row, messages, key) an earlier attempt left pending and this
    one stopped before sending again, by their ledger records ``known``
    (:func:`~line_exports.ledger_request.recorded_error`, the push and multicast rule,
    :func:`.sending.count_not_resent`): of unknown delivery when an earlier attempt may have
    acted (no answer, a 5xx), with what it got; else none (their rows stay unsent)."""
    outcomes: list[dict[str, Any]] = []
    for number, _, key in requests:
        state = known.get(key)
        if before := unanswered_before(state):
            assert state is not None
            error = recorded_error(state, f"an earlier {kind} request")
            fate = fate_of(error, "LINE", before)
            if fate.kind == "unknown":
                outcomes.append({"state": "unknown", "reason": fate.reason, "row": number})
    return outcomes


def quota_check(
    client: LineMessagingClient,
    settings: LineMessagingSettings,
    targeting: dict[str, Any],
    sizes: dict[int, int],
    sends: int,
    report: DeliveryReport,
    run: ExportRun,
    kind: Kind,
) -> dict[str, Any]:
    """Compare the month's remaining quota with an upper bound of the messages needed.

    Fails before sending when the bound passes what remains and nothing lets LINE cap the
    delivery (``up_to_remaining_quota``, or ``over_quota: send_up_to_quota``, which sets it for
    a narrowcast; a broadcast cannot be capped). Returns the targeting to send."""
    limit, used = client.quota()
    remaining = None if limit is None else max(0, limit - used)
    everyone = (
        reachable_friends(client) if kind == "broadcast" or "recipient" not in targeting else None
    )
    if kind == "broadcast":
        bound, basis = everyone, "insight followers targetedReaches (last day counted)"
    elif "recipient" in targeting:
        bound = upper_bound(targeting["recipient"], sizes, None)
        basis = "audience sizes (upper bound: the friends LINE selects may be fewer)"
    else:
        bound, basis = everyone, "insight followers targetedReaches (every friend)"
    cap = (targeting.get("limit") or {}).get("max")
    if cap is not None:
        bound = cap if bound is None else min(bound, cap)
        basis += ", capped by limit.max"
    needed = None if bound is None else bound * sends
    report.metadata.update(
        {
            "messages_needed": "unknown" if needed is None else needed,
            "messages_needed_basis": basis if needed is not None else "no bound known: " + basis,
            "quota_limit": "none" if limit is None else limit,
            "quota_used": used,
            "quota_remaining": "unlimited" if remaining is None else remaining,
        }
    )
    run.log.info(
        f"LINE {kind}: at most {'an unknown number of' if needed is None else f'{needed:,}'} "
        f"messages ({basis}); monthly quota "
        + ("none (no target limit)" if remaining is None else f"{remaining:,} of {limit:,} remain")
    )
    capped = bool((targeting.get("limit") or {}).get("upToRemainingQuota"))
    if remaining is None or needed is None or needed <= remaining or capped:
        return targeting
    if settings.over_quota == "send_up_to_quota" and kind == "narrowcast":
        run.log.info("over_quota is send_up_to_quota: the narrowcast sets limit.upToRemainingQuota")
        report.metadata["up_to_remaining_quota_set_by_over_quota"] = True
        return {**targeting, "limit": {**targeting.get("limit", {}), "upToRemainingQuota": True}}
    raise DeliveryFailed(
        f"LINE {kind} may need up to {needed:,} messages ({basis}) but only {remaining:,} of "
        f"this month's {limit:,} remain (used {used:,}); nothing was sent. Raise the target "
        "limit"
        + (
            ", set up_to_remaining_quota (LINE then sends within what remains), or over_quota: "
            "send_up_to_quota."
            if kind == "narrowcast"
            else " (a broadcast cannot be sent to part of the friends: use a narrowcast with "
            "up_to_remaining_quota)."
        ),
        report,
    )


def send_one(
    client: LineMessagingClient,
    settings: LineMessagingSettings,
    kind: Kind,
    messages: str,
    key: str,
    done: dict[str, Any] | None,
    targeting: dict[str, Any],
    options: dict[str, Any],
    run: ExportRun,
) -> dict[str, Any]:
    """One narrowcast or broadcast under the ledger (``done``: what it recorded for ``key``);
    its outcome (``state``: accepted | refused | fatal | unknown, LINE's ``request_id`` and, for a
    narrowcast, its final progress). A request left pending is resent with the body it had and
    the retries that end before its key's 24 hours do (:func:`.sending.retries_left`, the
    push/multicast rule); past that window it is reported of unknown delivery, never resent."""
    resumed = done is not None and done.get("state") == "accepted"
    if resumed:
        assert done is not None
        request_id = str(done["request_id"])
        status = int(done.get("status", 200))
    else:
        since, sender = first_sent(done), client
        if done is not None and since is not None:
            retry = retries_left(client.http.retry, time.time() - since)
            if retry is None:
                return {"state": "unknown", "reason": held_reason(since, client.http.retry)}
            sender = client.with_retry(retry)
            targeting = done.get("targeting", targeting)
        earlier = unanswered_before(done)
        record = pending_record(since, earlier=earlier, targeting=targeting)  # first send kept
        run.ledger.record(key, record)
        body = (
            '{"messages":'
            + messages
            + (
                "," + json.dumps(targeting | options, separators=(",", ":"))[1:-1]
                if targeting | options
                else ""
            )
            + "}"
        ).encode()
        try:
            status, answer = sender.send(kind, body, key, ok_status=(200, 202, 409))
        except ApiError as exc:
            outcome = failed(exc, client, key, run)
            if outcome["state"] == "fatal" and not outcome.get("quota"):
                # A step retry must know what may have acted (no answer, a 5xx), or none left.
                if "error" in outcome:
                    outcome["earlier"] = earlier
                mark = failure_mark(exc, earlier, made="error" in outcome)
                run.ledger.record(key, {**record, **mark})
            return outcome
        request_id = answer["_request_id"] or ""
        run.ledger.record(key, {"state": "accepted", "status": status, "request_id": request_id})
    outcome: dict[str, Any] = {
        "state": "accepted",
        "request_id": request_id,
        "status": status,
        "resumed": resumed,
    }
    if kind == "narrowcast" and request_id:
        try:
            outcome["progress"] = wait_progress(client, request_id, settings.progress_timeout, run)
        except dg.DagsterExecutionInterruptedError:  # a stop (one signal or two) while LINE
            return outcome  # sends it: LINE took the request, its progress is not read
        except ApiError as exc:  # LINE took the request; what it did with it is not known
            outcome["state"] = "unknown"
            outcome["reason"] = (
                f"LINE accepted narrowcast {request_id}; its progress could not be read ({exc})"
            )
            return outcome
        if outcome["progress"].get("phase") == "failed":
            outcome["state"] = "refused"
            outcome["reason"] = progress_failure(outcome["progress"])
    return outcome


def failed(exc: ApiError, client: LineMessagingClient, key: str, run: ExportRun) -> dict[str, Any]:
    if exc.status == 400:
        message, _ = line_error(exc)
        reason = refusal(exc)  # kept whole: a step retry counts it (settled_before)
        record = {"state": "refused", "at": time.time(), "message": message, "reason": reason}
        run.ledger.record(key, record)
        return {"state": "refused", "reason": reason}
    if monthly_limit(exc):
        run.ledger.record(key, {"state": "refused", "at": time.time(), "message": exc.body})
        return {"state": "fatal", "quota": True, "reason": f"LINE answered 429: {QUOTA_REASON}"}
    reason = explain(exc) if exc.status in (401, 403) else client.http.redact(str(exc))
    outcome = {"state": "fatal", "reason": reason, "retryable": exc.retryable}
    if not isinstance(exc, TokenError):  # no token, no request: its row stays unsent
        outcome["error"] = exc
    return outcome


def wait_progress(
    client: LineMessagingClient, request_id: str, timeout: float, run: ExportRun
) -> dict[str, Any]:
    """Poll the narrowcast's progress until ``succeeded`` or ``failed`` (``waiting`` and
    ``sending`` are not final). A run asked to stop stops polling
    (:class:`~line_exports.interrupts.DeliveryInterrupted`)."""
    seen: list[str] = []

    def final() -> dict[str, Any] | None:
        if run.interrupted:
            raise DeliveryInterrupted(run.interrupted)
        body = client.http.request(
            "GET",
            "/v2/bot/message/progress/narrowcast",
            endpoint="progress",
            params={"requestId": request_id},
        ).json()
        phase = str(body.get("phase"))
        if not seen or seen[-1] != phase:
            seen.append(phase)
            run.log.info(f"LINE narrowcast {request_id}: {phase}")
        return body if phase in ("succeeded", "failed") else None

    body = poll(
        final,
        what=f"LINE narrowcast {request_id}",
        timeout=timeout,
        max_pause=client.poll_seconds,
    )
    body["phases_seen"] = seen
    return body


def progress_failure(progress: dict[str, Any]) -> str:
    code = progress.get("errorCode")
    meaning = PROGRESS_ERROR_CODES.get(int(code)) if isinstance(code, int) else None
    parts = [f"LINE's narrowcast failed (errorCode {code}" + (f": {meaning})" if meaning else ")")]
    if progress.get("failedDescription"):
        parts.append(str(progress["failedDescription"]))
    return ": ".join(parts)


def summarize(
    report: DeliveryReport,
    outcomes: list[dict[str, Any]],
    kind: Kind,
    settings: LineMessagingSettings,
    named: list[str],
    sizes: dict[int, int],
) -> DeliveryReport:
    accepted = [o for o in outcomes if o["state"] == "accepted"]
    refused = [o for o in outcomes if o["state"] == "refused"]
    fatal = [o for o in outcomes if o["state"] == "fatal"]
    for outcome in refused:
        report.refused.append(
            reject([outcome["row"]], "template_message", f"line_{kind}_refused", outcome["reason"])
        )
    for outcome in outcomes:
        if outcome["state"] == "unknown":
            reason = outcome["reason"]
            report.unknown.append(
                reject([outcome["row"]], "template_message", DELIVERY_UNKNOWN, reason)
            )
    report.accepted_rows = len(accepted)
    report.resumed_rows += sum(1 for o in accepted if o.get("resumed"))
    report.job_ids.extend(o["request_id"] for o in outcomes if o.get("request_id"))
    progress = [o["progress"] for o in outcomes if "progress" in o]
    report.metadata.update(
        {
            f"{kind}_requests_accepted": len(accepted),
            f"{kind}_requests_refused": len(refused),
            f"{kind}_already_accepted_409": sum(1 for o in outcomes if o.get("status") == 409),
            f"{kind}_request_ids": [o.get("request_id", "") for o in outcomes],
        }
    )
    if kind == "narrowcast":
        report.metadata.update(
            {
                "narrowcast_target_count": sum(int(p.get("targetCount") or 0) for p in progress),
                "narrowcast_success_count": sum(int(p.get("successCount") or 0) for p in progress),
                "narrowcast_failure_count": sum(int(p.get("failureCount") or 0) for p in progress),
                "narrowcast_progress": [
                    {
                        k: p[k]
                        for k in (
                            "phase",
                            "targetCount",
                            "successCount",
                            "failureCount",
                            "errorCode",
                            "failedDescription",
                            "acceptedTime",
                            "completedTime",
                            "phases_seen",
                        )
                        if k in p
                    }
                    for p in progress
                ],
                "recipient_audiences": {str(k): v for k, v in sizes.items()},
                "recipient_audience_names": named,
            }
        )
    else:
        report.metadata["broadcast_delivery"] = (
            "LINE gives no progress for a broadcast: accepted means LINE took the request"
        )
    if fatal:
        reason = fatal[0]["reason"]
        if fatal[0].get("quota"):
            report.refused.append(
                reject([fatal[0]["row"]], "template_message", "line_monthly_quota", reason)
            )
            raise DeliveryFailed(f"LINE {kind} stopped: {reason} (not retried)", report)
        if "error" in fatal[0]:  # the one rule (fate_of): 4xx refused, 5xx unknown, ...
            count_failed_request(
                report,
                [fatal[0]["row"]],
                "template_message",
                fatal[0]["error"],
                "LINE",
                earlier=fatal[0].get("earlier"),
            )
        raise DeliveryFailed(
            f"LINE {kind} failed: {reason}", report, retryable=bool(fatal[0].get("retryable", True))
        )
    if refused and (not settings.skip_invalid_message or not accepted):
        first = refused[0]
        raise DeliveryFailed(
            f"LINE refused the {kind} of row {first['row']}: {first['reason']}"
            + ("" if accepted else f" ({len(refused)} of {len(outcomes)} refused, none accepted)"),
            report,
        )
    return report
