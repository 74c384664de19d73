"""Push target: one templated message per row (``POST /v2/bot/message/push``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from line_exports.destination import DeliveryFailed, DeliveryReport, ExportRun, ValidRows
from line_exports.destinations.line_messaging.aio_push import PATH, Push, send_pushes
from line_exports.destinations.line_messaging.client import LineMessagingClient, push_key_maker
from line_exports.destinations.line_messaging.messages import MessageTemplate
from line_exports.destinations.line_messaging.quota import allowance
from line_exports.destinations.line_messaging.sending import (
    Tally,
    count_not_resent,
    counted_stop,
    finish,
    left_by_earlier,
    nothing_sent,
    pending,
    post,
    put_back_unstarted,
    settled,
    workers,
)
from line_exports.destinations.line_messaging.settings import (
    PUSH_BATCH_ROWS,
    LineMessagingSettings,
)
from line_exports.destinations.line_messaging.settled_before import count_request_before
from line_exports.http import RetrySettings
from line_exports.ledger import GroupRecorder
from line_exports.outcomes import unanswered_before
from line_exports.rules import ROW_NUMBER, reject


def deliver_push(
    client: LineMessagingClient,
    settings: LineMessagingSettings,
    rows: ValidRows,
    run: ExportRun,
) -> DeliveryReport:
    report = run.new_report()
    template = settings.push_template()
    skip_refused = settings.skip_invalid_message
    columns = [ROW_NUMBER, "id", *[c for c in template.columns if c != "id"]]
    bad = bad_rendered_rows(template, rows, columns, report)
    if bad and not skip_refused:
        first = report.rejected[0].iloc[0]
        raise DeliveryFailed(
            f"{len(bad):,} rows render an invalid message and skip_invalid_message is false, so "
            f"{nothing_sent(run)}. First: row {first[ROW_NUMBER]}: {first['message']}",
            report,
        )
    options = settings.options()
    push_key = push_key_maker(run, options)
    tail = json.dumps(options, separators=(",", ":"))[1:-1] if options else ""
    tally = Tally()
    validated = not settings.validate_with_api
    recorder = GroupRecorder(run.ledger)
    left: int | None = None

    def keep(pushes: list[Push]) -> None:
        """Record ``pushes`` pending (one transaction) just before they go out, and in sync diff
        keep their bodies so a later run can settle them: the senders call it per window of
        ``push_concurrency`` pushes, so a run killed mid-send leaves recorded only what was in
        flight or about to be, not a whole batch (a re-run renders the others anew, VERIFY-18d
        F1). An earlier attempt's first send time is kept: the key's 24 hours run from it."""
        if run.keep_requests is not None:  # sync diff: a later scope can settle them
            run.keep_requests([(k, "push", b.decode(), [to]) for _, to, b, k in pushes])
        records = [(key, pending(tally, key)) for *_, key in pushes]
        run.ledger.record_many([(key, record) for key, record in records if record is not None])

    def prepared(only: set[str] | None, skip: set[str]) -> Iterator[list[Push]]:
        """Each batch's pushes not yet accepted (only those keyed in ``only`` when given; none
        keyed in ``skip``), not yet recorded (the sender calls ``keep`` before sending); the
        code after ``yield`` runs once the batch is answered."""
        nonlocal validated, left
        for batch in rows.batches(PUSH_BATCH_ROWS, columns=columns):
            if bad:
                batch = batch[~batch[ROW_NUMBER].isin(bad)]
            if not len(batch):
                continue
            rendered = template.render(batch)
            if not validated:
                client.validate("push", str(rendered.iloc[0]))
                validated = True
            head = '{"to":'
            middle = ',"messages":'
            end = ("," + tail if tail else "") + "}"
            pushes = [
                (
                    row_number,
                    to,
                    (head + json.dumps(to) + middle + messages + end).encode(),
                    push_key(to, messages),
                )
                for row_number, to, messages in zip(
                    batch[ROW_NUMBER].tolist(),
                    batch["id"].astype(str).tolist(),
                    rendered.tolist(),
                    strict=True,
                )
            ]
            if only is not None or skip:
                pushes = [p for p in pushes if (only is None or p[3] in only) and p[3] not in skip]
            chosen = len(pushes)  # this pass's rows of the batch (each pass counts its own)
            pushes = not_yet_sent(pushes, run, tally, client.http.retry)
            over: list[Push] = []
            if left is not None:
                over, pushes = pushes[left:], pushes[:left]
                left -= len(pushes)
                tally.quota_cut.extend(n for n, *_ in over)
            yield pushes  # recorded pending by the sender, a window at a time (keep)
            report.sent_rows += chosen - len(over)
            run.progress(report.sent_rows)
            if tally.fatal or (tally.refused and not skip_refused):
                return

    def send(batches: Iterator[list[Push]]) -> None:
        with counted_stop(report, tally, "push", run):  # a signal: stop with LINE's answers
            try:
                if client.http.debug:  # bodies logged by the threaded client
                    send_threaded(
                        client, batches, settings.push_concurrency, run, tally, recorder, keep
                    )
                else:
                    send_pushes(
                        client,
                        batches,
                        settings.push_concurrency,
                        run,
                        tally,
                        recorder.record,
                        keep,
                    )
            finally:
                recorder.flush()
                put_back_unstarted(tally, run.ledger)  # recorded, never started: unsent

    # One message per push (LINE counts recipients, not message objects), before any is sent.
    # On a resumed run the pushes the ledger shows accepted are not needed again, and those an
    # earlier attempt left pending (recorded before sending, answer not recorded: a SIGKILL
    # loses the answers of up to a batch) are settled first, re-sent under the same retry key:
    # LINE answers 409 for those it took (no quota used) and takes the others, which the earlier
    # attempt's quota check had already allowed (a push over it was never recorded pending).
    # What the quota check then counts is exact.
    done, resend = accepted_before(template, rows, columns, bad, run, push_key, client.http.retry)
    if resend:
        states = run.ledger.done_many(list(resend))
        tally.earlier.update(
            {k: before for k in resend if (before := unanswered_before(states.get(k)))}
        )
        tally.before.update((k, states[k]) for k in resend if k in states)
        send(prepared(set(resend), set()))
        if tally.fatal or (tally.refused and not skip_refused):
            count_not_resent(tally, {k: [row] for k, row in resend.items()}, run.ledger)
            # The rows the earlier attempt settled, counted as the main pass would (VERIFY-13m F4)
            for batch in keyed_pushes(template, rows, columns, bad, push_key):
                others = [p for p in batch if p[2] not in resend]
                known = run.ledger.done_many([key for *_, key in others])
                for row, to, key in others:
                    count_request_before(known.get(key), key, [row], [to], tally, client.http.retry)
            return finish(report, tally, skip_refused, "skip_invalid_message", "push")
    report.metadata["messages_already_accepted"] = done + tally.already_accepted
    report.metadata["messages_settled_pending"] = len(resend)
    needed = rows.count - len(bad) - done - len(resend)
    left = allowance(client, settings, needed, report, run, "push")
    send(prepared(None, set(resend)))
    return finish(report, tally, skip_refused, "skip_invalid_message", "push")


def bad_rendered_rows(
    template: MessageTemplate, rows: ValidRows, columns: list[str], report: DeliveryReport
) -> set[int]:
    """Rows whose filled-in message breaks LINE's limits (checked over whole columns, before sending)."""
    bad: set[int] = set()
    if not template.slots:
        return bad
    for batch in rows.batches(50_000, columns=columns):
        for path, message, mask in template.check_rows(batch):
            numbers = batch[ROW_NUMBER].to_numpy()[mask]
            bad.update(int(n) for n in numbers)
            # Rejected before sending (LINE would refuse it), not refused by LINE.
            report.rejected.append(reject(numbers.tolist(), path, "message", f"{path}: {message}"))
    return bad


def accepted_before(
    template: MessageTemplate,
    rows: ValidRows,
    columns: list[str],
    bad: set[int],
    run: ExportRun,
    push_key: Callable[[str, str], str],
    retry: RetrySettings,
) -> tuple[int, dict[str, int]]:
    """(pushes of these rows an earlier attempt of this run scope got accepted, {retry key: row}
    of those it left ``pending``): a resumed run does not need the first again, and settles the
    second before it counts what it needs (see :func:`deliver_push`).

    A first run (nothing in the ledger's scope) costs one count query; a resume renders each
    row's key once more. A push first sent longer ago than the window for a safe resend under
    ``retry`` is neither (:func:`.sending.retries_left`): LINE may forget its key before a
    resend ends, so it is reported as delivery unknown (:func:`.sending.settled`)."""
    if run.ledger.count() == 0:
        return 0, {}
    found = 0
    pending: dict[str, int] = {}
    for batch in keyed_pushes(template, rows, columns, bad, push_key):
        known = run.ledger.done_many([key for *_, key in batch])
        for row, _, key in batch:
            left = left_by_earlier(known.get(key), retry)
            if left == "accepted":
                found += 1
            elif left == "resend":
                pending[key] = row
    return found, pending


def keyed_pushes(
    template: MessageTemplate,
    rows: ValidRows,
    columns: list[str],
    bad: set[int],
    push_key: Callable[[str, str], str],
) -> Iterator[list[tuple[int, str, str]]]:
    """(row, recipient, retry key) of each push, a batch of ``PUSH_BATCH_ROWS`` at a time
    (rows in ``bad`` left out): each row's message rendered once more."""
    for batch in rows.batches(PUSH_BATCH_ROWS, columns=columns):
        if bad:
            batch = batch[~batch[ROW_NUMBER].isin(bad)]
        if not len(batch):
            continue
        recipients = batch["id"].astype(str).tolist()
        yield [
            (int(row), to, push_key(to, messages))
            for row, to, messages in zip(
                batch[ROW_NUMBER].tolist(), recipients, template.render(batch).tolist(), strict=True
            )
        ]


def not_yet_sent(
    pushes: list[tuple[int, str, bytes, str]], run: ExportRun, tally: Tally, retry: RetrySettings
) -> list[tuple[int, str, bytes, str]]:
    """The pushes of one batch the ledger does not show accepted (one query for the batch);
    those an earlier attempt left pending past the window for a safe resend under ``retry``
    are held (:func:`.sending.settled`)."""
    known = run.ledger.done_many([key for *_, key in pushes])
    if not known:
        return pushes
    todo = []
    for push in pushes:
        outcome = settled(known.get(push[3]), push[3], [push[0]], tally, retry)
        if outcome is None:
            todo.append(push)
            if push[3] in known:  # put back should it not start (.sending.put_back_unstarted)
                with tally.lock:
                    tally.before[push[3]] = known[push[3]]
    return todo


def send_threaded(
    client: LineMessagingClient,
    batches: Iterator[list[Push]],
    width: int,
    run: ExportRun,
    tally: Tally,
    recorder: GroupRecorder,
    keep: Callable[[list[Push]], None],
) -> None:
    """The same pushes from a pool of ``width`` threads, ``width`` at a time, each window
    recorded pending (``keep``) just before it is sent. Stopped at once (a second signal), the
    pushes in flight are counted of unknown delivery and not waited for (:func:`.workers`)."""

    def send(push: Push) -> None:
        row_number, to, body, key = push
        if not tally.stopped and not run.interrupted:  # a signal: queued pushes stay unsent
            post(client, "push", body, key, [row_number], [to], run, tally, recorder.record)

    with workers(width, "line-push", tally, PATH) as pool:
        for pushes in batches:
            for start in range(0, len(pushes), width):
                if tally.stopped or run.interrupted:
                    return
                window = pushes[start : start + width]
                keep(window)
                for future in [pool.submit(send, push) for push in window]:
                    future.result()
