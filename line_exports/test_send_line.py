"""Test sends of LINE message exports: the sampled rows' real messages, pushed to testers.

The rows go through what a run does to them before sending: consent, opt-out and suppression
(:func:`~line_exports.destinations.line_messaging.consent.screen`, on the rows' real
recipients), then the template is rendered by the export's own code
(:meth:`~line_exports.destinations.line_messaging.messages.MessageTemplate.render`) and each
rendered message is checked against LINE's limits (:func:`.push.bad_rendered_rows`). Each
request goes through :func:`.sending.send_once` (the ledger, an ``X-Line-Retry-Key``), under the
test send's own ledger scope. See :mod:`line_exports.test_send` for what is sent to whom.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from line_exports.destination import DeliveryReport, ExportRun
from line_exports.destinations.line_messaging.consent import load_suppressed, screen
from line_exports.destinations.line_messaging.push import bad_rendered_rows
from line_exports.destinations.line_messaging.quota import Quota
from line_exports.destinations.line_messaging.sending import Tally, retry_key, send_once
from line_exports.destinations.line_messaging.settings import LineMessagingSettings
from line_exports.rules import ROW_NUMBER
from line_exports.test_send import Outcome, Sample, TestSendError, reject_lines, spool

SUMMARY_CHARS = 80


def summary(messages_json: str) -> str:
    """One line per request: each message object's type and what a tester will see first."""
    parts = []
    for message in json.loads(messages_json):
        kind = message.get("type", "?")
        shown = (
            message.get("text")
            or message.get("altText")
            or message.get("originalContentUrl")
            or (
                f"{message.get('packageId')}/{message.get('stickerId')}"
                if kind == "sticker"
                else ""
            )
            or message.get("title")
            or ""
        )
        shown = str(shown).replace("\n", " ")
        if len(shown) > SUMMARY_CHARS:
            shown = shown[: SUMMARY_CHARS - 1] + "…"
        parts.append(f"{kind} {json.dumps(shown, ensure_ascii=False)}" if shown else kind)
    return " | ".join(parts)


def send_messages(
    mode: str,
    resource: Any,
    settings: LineMessagingSettings,
    found: Sample,
    testers: tuple[str, ...],
    run: ExportRun,
    workdir: Path,
    outcome: Outcome,
) -> None:
    """Push each kept row's message to each tester (``push``), or one multicast of the
    export's message to the testers (``multicast``)."""
    if not testers:
        raise TestSendError("--to is required: the LINE user IDs of the testers to send to")
    report = DeliveryReport()
    rows = spool(found.valid, workdir / "test-send" / "valid.parquet")
    if settings.target in ("push_message", "multicast_message") and rows.count:
        rows, screened, _ = screen(rows, settings.skip_suppressed)
        report.rejected.extend(screened)
    if mode == "multicast":
        template = settings.multicast_template()
        frame = next(rows.batches(max(rows.count, 1), columns=[ROW_NUMBER]), None)
        kept = [] if frame is None else [int(n) for n in frame[ROW_NUMBER]]
        messages = {n: template.json() for n in kept}
    else:
        template = (
            settings.push_template()
            if settings.target == "push_message"
            else settings.campaign_template()
        )
        columns = [
            ROW_NUMBER,
            *dict.fromkeys(c for c in ["id", *template.columns] if c in _names(rows)),
        ]
        bad = bad_rendered_rows(template, rows, columns, report) if rows.count else set()
        messages = {}
        for batch in rows.batches(max(rows.count, 1), columns=columns) if rows.count else []:
            batch = batch[~batch[ROW_NUMBER].isin(bad)]
            rendered = template.render(batch)
            messages.update(
                zip(batch[ROW_NUMBER].astype(int).tolist(), rendered.tolist(), strict=True)
            )
    reject_lines(report.rejected, outcome)
    recipients = _recipients(found)
    blocked = _suppressed_testers(testers, settings)
    for tester, reason in blocked.items():
        outcome.say(f"    tester {tester} not sent to: {reason}")
    testers = tuple(t for t in testers if t not in blocked)
    if not messages or not testers:
        outcome.say(
            "    nothing to send: "
            + ("no sampled row would get a message" if not messages else "no tester left")
        )
        return
    needed = len(testers) * (1 if mode == "multicast" else len(messages))
    client = resource.process_config_and_initialize().get_client(settings.retry_settings())
    client.begin_run()
    quota = Quota.read(client, needed)
    outcome.say(f"    {quota.summary('test ' + ('multicast' if mode == 'multicast' else 'push'))}")
    if not quota.fits:
        raise TestSendError(f"{quota.over('test send')}; nothing was sent")
    options = {k: v for k, v in settings.options().items() if k != "customAggregationUnits"}
    tally = Tally()
    results: dict[tuple[str, int], str] = {}
    if mode == "multicast":
        messages_json = template.json()
        body = json.dumps({"to": list(testers), **options}, separators=(",", ":"))
        body = body[:-1] + ',"messages":' + messages_json + "}"
        key = retry_key(run, "test-multicast", list(testers), messages_json, options)
        refusals: list[tuple[int, str, str]] = []
        state = send_once(
            client,
            "multicast",
            body.encode(),
            key,
            list(range(len(testers))),
            list(testers),
            run,
            tally,
            refusals,
        )
        refused = {r: reason for _, r, reason in refusals}
        for tester in testers:
            results[(tester, -1)] = refused.get(tester, "") or state
        outcome.messages += sum(
            1 for t in testers if t not in refused and state in ("accepted", "resumed")
        )
        for tester in testers:
            outcome.say(
                f"    to {tester}: rows {', '.join(map(str, sorted(messages)))} (one multicast, the same message for every row): {summary(messages_json)} -> {_said(results[(tester, -1)], tally)}"
            )
    else:
        options_json = json.dumps(options, separators=(",", ":"))[1:-1] if options else ""
        index = 0
        for tester in testers:
            outcome.say(f"    to {tester}:")
            for number, messages_json in sorted(messages.items()):
                body = (
                    '{"to":'
                    + json.dumps(tester)
                    + ',"messages":'
                    + messages_json
                    + ("," + options_json if options_json else "")
                    + "}"
                )
                key = retry_key(run, "test-push", number, tester, messages_json, options)
                before = len(tally.refused)
                state = send_once(client, "push", body.encode(), key, [index], [tester], run, tally)
                index += 1
                said = tally.refused[-1][2] if len(tally.refused) > before else state
                if state in ("accepted", "resumed"):
                    outcome.messages += 1
                who = recipients.get(number)
                outcome.say(
                    f"      row {number}{f' (recipient {who})' if who else ''}: {summary(messages_json)} -> {_said(said, tally)}"
                )
                if tally.stopped:
                    break
            if tally.stopped:
                break
    if tally.fatal:
        outcome.failed = True
        outcome.say(f"    stopped: {tally.fatal[0]}")
    elif tally.refused:
        outcome.failed = True


def _said(state: str, tally: Tally) -> str:
    if state in ("accepted", "resumed"):
        return "accepted"
    if state == "fatal":
        return "not sent (stopped)"
    if state in ("refused", "unknown"):
        return state
    return f"refused by LINE: {state}"


def _names(rows: Any) -> set[str]:
    return set(pq.read_schema(rows.path).names) if rows.count else set()


def _recipients(found: Sample) -> dict[int, str]:
    """Row number -> the row's real recipient (shown, never sent to)."""
    if not len(found.valid) or "id" not in found.valid.columns:
        return {}
    return dict(
        zip(
            found.valid[ROW_NUMBER].astype(int).tolist(),
            found.valid["id"].astype(str).tolist(),
            strict=True,
        )
    )


def _suppressed_testers(
    testers: tuple[str, ...], settings: LineMessagingSettings
) -> dict[str, str]:
    """Testers in the suppression table (they blocked the account: LINE answers 200 and drops
    the message), when the export screens suppressed users."""
    if not settings.skip_suppressed:
        return {}
    try:
        suppressed = set(load_suppressed() or [])
    except Exception:  # noqa: BLE001 - an unreadable list screens nobody, as a run says
        return {}
    return {
        t: "in the suppression table (unfollowed the account): LINE would drop the message"
        for t in testers
        if t in suppressed
    }
