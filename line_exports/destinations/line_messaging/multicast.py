"""Multicast target: one message to groups of up to 500 distinct recipients
(``POST /v2/bot/message/multicast``); a refused recipient is isolated so the others still get it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future

from line_exports.destination import DeliveryReport, ExportRun, ValidRows, not_isolated
from line_exports.destinations.line_messaging.client import LineMessagingClient, retry_key
from line_exports.destinations.line_messaging.quota import allowance
from line_exports.destinations.line_messaging.sending import (
    Tally,
    count_not_resent,
    counted_stop,
    finish,
    left_by_earlier,
    named_recipient,
    put_back_unstarted,
    send_once,
    workers,
)
from line_exports.destinations.line_messaging.settings import (
    MULTICAST_READ_ROWS,
    LineMessagingSettings,
)
from line_exports.destinations.line_messaging.settled_before import count_group_before
from line_exports.http import RetrySettings
from line_exports.rules import ROW_NUMBER


def groups(rows: ValidRows, size: int) -> Iterator[tuple[list[int], list[str]]]:
    """(row numbers, recipients): groups of ``size`` recipients in spool order, read in large
    batches (per-group pandas work cost more than the request). The spool holds each recipient
    once (validation rejects a repeat as a ``duplicate``)."""
    whole_groups = size * max(1, MULTICAST_READ_ROWS // size)  # no group spans two batches
    for batch in rows.batches(whole_groups, columns=[ROW_NUMBER, "id"]):
        numbers = batch[ROW_NUMBER].tolist()
        recipients = batch["id"].astype(str).tolist()
        for start in range(0, len(recipients), size):
            yield numbers[start : start + size], recipients[start : start + size]


MULTICAST_PATH = "/v2/bot/message/multicast"
PREFIX = "quota-prefix:"
"""Ledger key prefix (+ a whole group's retry key): how many of the group's first recipients
were accepted in a group the quota cut short. A later attempt sends the rest as its own group
instead of the whole group again (whose new retry key would deliver twice)."""


def accepted_groups(
    rows: ValidRows,
    size: int,
    run: ExportRun,
    key_of: Callable[[list[str]], str],
    retry: RetrySettings,
) -> tuple[dict[str, int], dict[str, tuple[list[int], list[str]]]]:
    """({whole group's retry key: its leading recipients already accepted} for the groups an
    earlier attempt of this run scope got accepted whole or, cut short by the quota, in part
    (a resume); {whole group's retry key: (rows, recipients)} of the groups it left pending,
    to send again before the quota is read (:func:`.sending.left_by_earlier`)); both empty on
    a first run (one count query).

    Recipients split off to isolate a refusal have other keys: they count as needed (an
    over-count, never an under-count)."""
    found: dict[str, int] = {}
    pending: dict[str, tuple[list[int], list[str]]] = {}
    if run.ledger.count() == 0:
        return found, pending
    for numbers, recipients in groups(rows, size):
        key = key_of(recipients)
        known = run.ledger.done_many([key, PREFIX + key])
        left = left_by_earlier(known.get(key), retry)
        if left == "accepted":
            found[key] = len(recipients)
        elif (first := int(known.get(PREFIX + key, {}).get("first", 0))) > 0:
            # The rest, sent as its own group by a later attempt, may be accepted too.
            rest = run.ledger.done(key_of(recipients[first:])) or {}
            found[key] = len(recipients) if rest.get("state") == "accepted" else first
        elif left == "resend":
            pending[key] = (numbers, recipients)
    return found, pending


def deliver_multicast(
    client: LineMessagingClient,
    settings: LineMessagingSettings,
    rows: ValidRows,
    run: ExportRun,
) -> DeliveryReport:
    report = run.new_report()
    template = settings.multicast_template()
    messages = template.json()
    if settings.validate_with_api:
        client.validate("multicast", messages)
    options = settings.options()
    message_objects = json.loads(messages)
    skip = settings.skip_multicast_invalid_message
    tally = Tally()
    splits = 0
    distinct = rows.count  # validation rejected the repeats
    report.metadata["distinct_recipients"] = distinct
    size = settings.batch_size_multicast

    def key_of(recipients: list[str]) -> str:
        return retry_key(run, "multicast", recipients, messages, options)

    # A resumed run does not need again the groups the ledger shows accepted; those an earlier
    # attempt left pending are sent again first (below), as a push resume does.
    accepted, pending = accepted_groups(rows, size, run, key_of, client.http.retry)
    done = sum(accepted.values())
    report.metadata["messages_already_accepted"] = done
    left: int | None = None

    def deliver_batch(
        numbers: list[int], recipients: list[str], mark: tuple[str, int] | None, resumed: int
    ) -> tuple[int, int]:
        """Send one batch; isolate refused recipients so the others still get the message.
        ``mark``: (whole group's key, leading recipients accepted once this batch is) for a
        group the quota cuts short. Returns (rows handled, splits made)."""
        handled, made, reason = len(numbers) + resumed, 0, ""
        groups = [(numbers, recipients)]
        while groups and not tally.stopped:
            numbers, recipients = groups.pop()
            if not recipients:
                continue
            if made and run.interrupted:  # a signal while isolating a refusal: no new request
                tally.refuse(numbers, recipients, f"{reason} ({not_isolated(run)})")
                continue
            body = json.dumps(
                {"to": recipients, "messages": message_objects, **options},
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
            key = key_of(recipients)
            refusals: list[tuple[int, str, str]] = []
            outcome = send_once(
                client, "multicast", body, key, numbers, recipients, run, tally, refusals
            )
            if outcome == "accepted" and mark is not None and not made:
                run.ledger.record(PREFIX + mark[0], {"state": "prefix", "first": mark[1]})
            if outcome != "refused":
                continue
            try:  # counted before a stop at once counts what is left (Tally.cut_in_flight)
                reason = refusals[-1][2]
                if len(recipients) == 1 or not skip or "messages[" in reason:
                    tally.refuse(numbers, recipients, reason)
                    if len(recipients) > 1 and "messages[" in reason:
                        # The message itself is refused: every batch would be, so stop here.
                        with tally.lock:
                            tally.fatal.append(f"LINE refused the multicast message: {reason}")
                    continue  # without skip, the run stops with this refusal
                made += 1
                i = named_recipient(reason, len(recipients))
                if i is not None:
                    tally.refuse([numbers[i]], [recipients[i]], reason)
                    groups.append(
                        (numbers[:i] + numbers[i + 1 :], recipients[:i] + recipients[i + 1 :])
                    )
                else:
                    half = len(recipients) // 2
                    groups.append((numbers[half:], recipients[half:]))
                    groups.append((numbers[:half], recipients[:half]))
            finally:
                tally.counted()
        return handled, made

    def deliver_unless_stopped(
        numbers: list[int], recipients: list[str], mark: tuple[str, int] | None, resumed: int
    ) -> tuple[int, int]:
        """A batch the pool starts: not once the run is asked to stop (its rows never sent;
        the batches in flight finish, VERIFY-13i F1)."""
        if run.interrupted:
            return 0, 0
        return deliver_batch(numbers, recipients, mark, resumed)

    # Without skip, the first refusal stops the run: one request at a time, so nothing after
    # it is sent. With skip, batches go out side by side (each isolates its own refusals).
    width = settings.multicast_concurrency if skip else 1
    most_in_flight = 2 * width if skip else 1

    def recipient_groups() -> Iterator[tuple[list[int], list[str], tuple[str, int] | None, int]]:
        """(rows, recipients, mark, leading rows resumed) of each group to send. Of a group an
        earlier attempt got accepted (whole or in part), only the rest is sent. What passes the quota's allowance is cut, and a group cut
        short is marked (see :data:`PREFIX`)."""
        nonlocal left
        for numbers, recipients in groups(rows, size):
            whole = key_of(recipients)
            if whole in pending:  # sent again before the quota was read
                continue
            first = accepted.get(whole, 0)
            if first:
                with tally.lock:
                    tally.resumed += first
                numbers, recipients = numbers[first:], recipients[first:]
                if not recipients:  # accepted whole by an earlier attempt: resumed
                    report.sent_rows += first
                    continue
            mark = None
            if left is not None:
                if left < len(recipients):
                    tally.quota_cut.extend(numbers[left:])
                    numbers, recipients = numbers[:left], recipients[:left]
                    mark = (whole, first + left)
                left -= len(recipients)
                if not recipients:
                    report.sent_rows += first
                    continue
            yield numbers, recipients, mark, first

    # The groups an earlier attempt left pending go first, under their retry keys (LINE
    # answers 409 for those it took), before the quota is read: a step retry that cannot reach
    # LINE counts them by what LINE answered the earlier attempt (a 5xx: unknown), not unsent.
    try:
        for numbers, recipients in pending.values():
            if tally.stopped or run.interrupted:
                break
            handled, made = deliver_batch(numbers, recipients, None, 0)
            report.sent_rows += handled
            splits += made
    finally:
        put_back_unstarted(tally, run.ledger)  # recorded, never started: unsent
    if tally.fatal or (tally.refused and not skip):
        left_pending = {k: rows for k, (rows, _) in pending.items()}
        # The groups the earlier attempt settled, by the ledger (VERIFY-13m F4)
        retry = client.http.retry
        for numbers, recipients in groups(rows, size):
            whole = key_of(recipients)
            if whole in pending:
                continue
            first = accepted.get(whole, 0)  # accepted whole, or the first cut by the quota
            with tally.lock:
                tally.resumed += first
            numbers, recipients = numbers[first:], recipients[first:]
            count_group_before(
                numbers, recipients, key_of, run.ledger, skip, tally, retry, left_pending
            )
        count_not_resent(tally, left_pending, run.ledger)
        return finish(report, tally, skip, "skip_multicast_invalid_message", "multicast")
    needed = distinct - done - sum(len(r) for _, r in pending.values())
    left = allowance(client, settings, needed, report, run, "multicast")

    def collect(finished: list[Future[tuple[int, int]]]) -> None:
        """Add the groups ``finished`` (in order, each waited for) to the counts."""
        nonlocal splits
        for future in finished:
            handled, made = future.result()
            report.sent_rows += handled
            splits += made

    # A signal (run.progress raises between groups): the pool is waited for, so every request
    # sent is answered and in the tally when it is counted below. A second signal (stopped at
    # once) does not wait: the requests in flight are counted of unknown delivery.
    try:
        with counted_stop(report, tally, "multicast", run):  # counted with LINE's answers
            with workers(width, "line-multicast", tally, MULTICAST_PATH) as pool:
                in_flight: list[Future[tuple[int, int]]] = []
                for numbers, recipients, mark, resumed in recipient_groups():
                    in_flight.append(
                        pool.submit(deliver_unless_stopped, numbers, recipients, mark, resumed)
                    )
                    if len(in_flight) >= most_in_flight:
                        collect(in_flight[:width])
                        in_flight = in_flight[width:]
                        run.progress(report.sent_rows)
                    if tally.fatal or (tally.refused and not skip):
                        break
                collect(in_flight)
            run.progress(report.sent_rows)
    finally:
        put_back_unstarted(tally, run.ledger)
    report.metadata["multicast_batch_splits"] = splits
    report.metadata["batch_size_multicast"] = settings.batch_size_multicast
    return finish(report, tally, skip, "skip_multicast_invalid_message", "multicast")
