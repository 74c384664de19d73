"""Test sends of LINE message exports: the sampled rows' real messages, pushed to testers.

The rows go through what a run does to them before sending: consent, opt-out and suppression
(:func:`~line_exports.destinations.line_messaging.consent.screen`, on the rows' real
recipients), then the template is rendered by the export's own code
(:meth:`~line_exports.destinations.line_messaging.messages.MessageTemplate.render`) and each
rendered message is checked against LINE's limits (:func:`.push.bad_rendered_rows`). Each
request goes through :func:`.sending.send_once` (the ledger, an ``X-Line-Retry-Key``), under the
test send's own ledger scope. See :mod:`line_exports.test_sends` for what is sent to whom.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from line_exports.destination import DeliveryReport, ExportRun
from line_exports.destinations.line_messaging.client import LineMessagingClient, retry_key
from line_exports.destinations.line_messaging.consent import load_suppressed, screen
from line_exports.destinations.line_messaging.push import bad_rendered_rows
from line_exports.destinations.line_messaging.quota import Quota
from line_exports.destinations.line_messaging.sending import Tally, send_once
from line_exports.destinations.line_messaging.settings import LineMessagingSettings
from line_exports.rules import ROW_NUMBER
from line_exports.test_sends import (
    MAX_SAMPLE,
    Outcome,
    Sample,
    TestSendError,
    reject_lines,
    spool,
)

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
    messages = rendered(mode, settings, found, workdir, outcome)
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
    client = resource.process_config_and_initialize().get_client(settings.retry_settings())
    client.begin_run()
    quota = Quota.read(client, len(testers) * (1 if mode == "multicast" else len(messages)))
    outcome.say(f"    {quota.summary(f'test {mode}')}")
    if not quota.fits:
        raise TestSendError(f"{quota.over('test send')}; nothing was sent")
    # Not in a test message: LINE's per-unit statistics would count it as the campaign's.
    options = {k: v for k, v in settings.options().items() if k != "customAggregationUnits"}
    tally = Tally()
    sender = _TestRequests(client, options, run, tally, outcome)
    if mode == "multicast":
        sender.multicast(messages, testers)
    else:
        sender.pushes(messages, _recipients(found), testers)
    if tally.fatal:
        outcome.say(f"    stopped: {tally.fatal[0]}")
    outcome.failed = bool(tally.fatal or tally.refused)


def rendered(
    mode: str, settings: LineMessagingSettings, found: Sample, workdir: Path, outcome: Outcome
) -> dict[int, str]:
    """Row number -> the ``messages`` JSON a run would send for that sampled row, for the rows
    a run would send to; the others are listed as rejects with the reason."""
    report = DeliveryReport()
    rows = spool(found.valid, workdir / "test-send" / "valid.parquet")
    if settings.target in ("push_message", "multicast_message") and rows.count:
        rows, screened, _ = screen(rows, settings.skip_suppressed)  # the real recipients
        report.rejected.extend(screened)
    messages: dict[int, str] = {}
    if mode == "multicast":
        message = settings.multicast_template().json()
        for batch in rows.batches(MAX_SAMPLE, columns=[ROW_NUMBER]):
            messages.update((int(n), message) for n in batch[ROW_NUMBER])
    else:
        template = (
            settings.push_template()
            if settings.target == "push_message"
            else settings.campaign_template()
        )
        names = set(pq.read_schema(rows.path).names) if rows.count else set()
        columns = [ROW_NUMBER, *dict.fromkeys(c for c in ["id", *template.columns] if c in names)]
        bad = bad_rendered_rows(template, rows, columns, report) if rows.count else set()
        for batch in rows.batches(MAX_SAMPLE, columns=columns):
            batch = batch[~batch[ROW_NUMBER].isin(bad)]
            numbers = batch[ROW_NUMBER].astype(int).tolist()
            messages.update(zip(numbers, template.render(batch).tolist(), strict=True))
    reject_lines(report.rejected, outcome)
    return messages


@dataclass
class _TestRequests:
    """What every request of one test send shares: the client, the request options (without
    ``customAggregationUnits``), the run (retry keys, the test send's ledger scope), the tally
    of LINE's answers and the outcome the lines are printed to."""

    client: LineMessagingClient
    options: dict[str, Any]
    run: ExportRun
    tally: Tally
    outcome: Outcome

    def multicast(self, messages: dict[int, str], testers: tuple[str, ...]) -> None:
        """One multicast of the export's message (the same for every row) to the testers."""
        message = next(iter(messages.values()))
        body = json.dumps({"to": list(testers), **self.options}, separators=(",", ":"))
        body = body[:-1] + ',"messages":' + message + "}"
        key = retry_key(self.run, "test-multicast", list(testers), message, self.options)
        said = self._send("multicast", body, key, list(range(len(testers))), list(testers))
        rows = ", ".join(map(str, sorted(messages)))
        for tester in testers:
            self.outcome.say(
                f"    to {tester}: rows {rows} (one multicast, the same message for every row): "
                f"{summary(message)} -> {said[tester]}"
            )

    def pushes(
        self, messages: dict[int, str], recipients: dict[int, str], testers: tuple[str, ...]
    ) -> None:
        """One push per (sampled row, tester): the row's own rendered message."""
        tail = ("," + json.dumps(self.options, separators=(",", ":"))[1:-1]) if self.options else ""
        index = 0
        for tester in testers:
            self.outcome.say(f"    to {tester}:")
            for number, message in sorted(messages.items()):
                body = '{"to":' + json.dumps(tester) + ',"messages":' + message + tail + "}"
                key = retry_key(self.run, "test-push", number, tester, message, self.options)
                said = self._send("push", body, key, [index], [tester])[tester]
                index += 1
                who = f" (recipient {recipients[number]})" if number in recipients else ""
                self.outcome.say(f"      row {number}{who}: {summary(message)} -> {said}")
                if self.tally.stopped:
                    return

    def _send(
        self,
        kind: Literal["push", "multicast"],
        body: str,
        key: str,
        numbers: list[int],
        testers: list[str],
    ) -> dict[str, str]:
        """One request through :func:`.sending.send_once` (``numbers``: its index per tester);
        tester -> what their line says of it (:func:`_said`), the accepted ones counted in
        ``outcome.messages`` and LINE's refusals in the tally."""
        refusals: list[tuple[int, str, str]] = []
        state = send_once(
            self.client, kind, body.encode(), key, numbers, testers, self.run, self.tally, refusals
        )
        self.tally.refused.extend(refusals)
        refused = {recipient: reason for _, recipient, reason in refusals}
        said = {tester: _said(refused.get(tester) or state) for tester in testers}
        self.outcome.messages += sum(s == "accepted" for s in said.values())
        return said


def _said(state: str) -> str:
    """What a tester's line says of a request's outcome (a refusal's reason as LINE gave it)."""
    if state in ("accepted", "resumed"):
        return "accepted"
    if state == "fatal":
        return "not sent (stopped)"
    if state in ("refused", "unknown"):
        return state
    return f"refused by LINE: {state}"


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
