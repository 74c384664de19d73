"""Resend dead letters: requests the relay gave up on, sent again to their target once.

The relay (:mod:`.relay`) dead-letters a request after its retry budget or on a 4xx that no
retry changes, keeping its body and ``x-line-signature`` in ``relay_dead_letters``. Once the
bot is fixed, :func:`resend_dead_letters` (``line-exports webhook resend``) POSTs each one again,
unchanged, in the order they died, and records the outcome in ``relay_resends``:

- a 2xx is recorded ``sent``: that dead letter is never resent again (a second resend skips it);
- any other answer (after ``attempts`` tries of a transient failure; a refused connection is
  one) is reported and leaves it to resend later;
- the record is written *before* the POST, so a resend killed between its POST and the record
  of the answer, or a POST whose answer was lost (a read timeout, a cut connection: the bot may
  have it), leaves the dead letter ``sending``: in doubt, reported and skipped until the
  operator passes ``include_in_doubt`` (``--include-in-doubt``), never resent silently.

One resender per (source, target) at a time: it holds the spool's claim for
``resend-<target>``; the live relay keeps running meanwhile (it never reads dead letters).
Only a URL still in the source's ``relay_to`` (which passed the deployment's host rules) is
sent to. Unlike ``webhook replay``, this reads the dead-letter table, so it works after the
spool pruned the original request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

from line_exports.webhook.config import WebhookSource
from line_exports.webhook.relay import (
    RelayPolicy,
    checked_targets,
    claim_name,
    deliver_with_retries,
    signature_of,
)
from line_exports.webhook.spool import open_reader


@dataclass
class ResendResult:
    """What a resend did for one target (dead letter ids in each list)."""

    source: str
    target: str
    resent: list[int] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """``id: why`` of each dead letter that was not accepted (left to resend later)."""
    already_sent: list[int] = field(default_factory=list)
    in_doubt: list[int] = field(default_factory=list)


def resend_dead_letters(
    source: WebhookSource,
    *,
    targets: list[str] | None = None,
    ids: list[int] | None = None,
    spool: str | Path | None = None,
    policy: RelayPolicy | None = None,
    attempts: int = 3,
    include_in_doubt: bool = False,
) -> list[ResendResult]:
    """Resend ``source``'s dead letters (only ``ids`` if given) to ``targets`` (default: every
    ``relay_to``), oldest first. Raises ``ValueError`` for a target not in ``relay_to``."""
    chosen = checked_targets(source, targets)
    rules = policy or RelayPolicy()
    results = []
    with open_reader(spool) as reader, requests.Session() as session:
        for target in chosen:
            result = ResendResult(source.name, target)
            results.append(result)
            with reader.claim(claim_name(target, "resend"), source.source_id) as held:
                for letter in reader.dead_letters(source.source_id, target):
                    if ids is not None and letter.id not in ids:
                        continue
                    if letter.resend == "sent":
                        result.already_sent.append(letter.id)
                        continue
                    if letter.resend == "sending":
                        if not include_in_doubt:
                            result.in_doubt.append(letter.id)
                            continue
                        reader.resend_cancel(letter.id)
                    held.check()
                    signature = signature_of(letter, source)
                    if signature is None:
                        result.failed.append(
                            f"{letter.id}: ${source.channel_secret_env} is not set"
                        )
                        continue
                    if not reader.resend_begin(letter.id, uuid.uuid4().hex):
                        result.already_sent.append(letter.id)
                        continue
                    outcome = deliver_with_retries(
                        session, target, letter, signature, rules, attempts, retry_in_doubt=False
                    )
                    if outcome.kind == "ok":
                        reader.resend_sent(letter.id, outcome.status)
                        result.resent.append(letter.id)
                    elif outcome.maybe_delivered:  # the bot may have it: never sent twice blindly
                        result.in_doubt.append(letter.id)
                    else:
                        reader.resend_cancel(letter.id)
                        result.failed.append(f"{letter.id}: {outcome.detail}")
    return results
