"""Webhook relay: every verified request of a source forwarded to its ``relay_to`` URLs.

LINE calls one webhook URL per channel; a team that also runs a bot (or another tool) puts a
relay in front (Treasure Data's advice). Here the receiver is that relay: each request is
forwarded from the durable spool, never from memory, with its body and ``x-line-signature``
exactly as LINE sent them, so the downstream bot verifies it with the same channel secret.

- At least once, in order per source: one worker per (source, target) walks the spool behind
  a cursor and forwards request k+1 only once request k was accepted (2xx) or dead-lettered.
  A crash between a 2xx and the cursor commit forwards that one request again (LINE's
  redeliveries look the same: a bot dedups on ``webhookEventId``).
- Backoff: 408, 425, 429, 5xx, timeouts and connection errors are retried after
  ``base * 2**(attempt-1)`` seconds (capped; ``Retry-After`` is honoured up to the cap).
  After ``max_attempts`` the request goes to the dead-letter table and the cursor moves on.
- Any other 4xx will not change on a retry (a bot answers 400/401/403 to a signature it does
  not accept, 404 to a wrong path): dead-lettered at once. 3xx is not followed (a retry).
- Claimed: the worker holds the spool's claim for (``relay-<target>``, source) while it runs,
  so with several receivers (or ``--workers N``) exactly one forwards; when it dies the claim
  passes to another within ``poll`` seconds.

Who drives it: the receiver itself (a background thread per target in every ``webhook serve``
process, or ``line-exports webhook relay`` on its own). Not a Dagster sensor or job: a bot must
answer within seconds (a reply token is meant to be used at once), and a sensor ticks every
30 s and starts a run process per tick. Dagster shows the relay's state instead: each landing
run reports every target's cursor, backlog and dead letters in its metadata.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import requests
import urllib3

from line_exports.webhook.config import WebhookSource
from line_exports.webhook.signature import sign
from line_exports.webhook.spool import open_reader

log = logging.getLogger("line_exports.webhook.relay")

USER_AGENT = "line-exports-webhook-relay"
_RETRYABLE_4XX = {408, 425, 429}
_ENV = {
    "max_attempts": "LINE_EXPORTS_WEBHOOK_RELAY_MAX_ATTEMPTS",
    "backoff_base": "LINE_EXPORTS_WEBHOOK_RELAY_BACKOFF_BASE",
    "backoff_max": "LINE_EXPORTS_WEBHOOK_RELAY_BACKOFF_MAX",
    "timeout": "LINE_EXPORTS_WEBHOOK_RELAY_TIMEOUT",
}


@dataclass(frozen=True)
class RelayPolicy:
    """Retry rules (seconds). Defaults: 12 attempts over about an hour (1, 2, 4 ... 600 s)."""

    max_attempts: int = 12
    backoff_base: float = 1.0
    backoff_max: float = 600.0
    timeout: float = 10.0
    poll: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            raise ValueError("relay: max_attempts must be >= 1 and 0 < backoff_base <= backoff_max")

    @classmethod
    def from_env(cls) -> RelayPolicy:
        """The policy ``webhook serve`` hands its workers (``LINE_EXPORTS_WEBHOOK_RELAY_*``)."""
        values: dict[str, float] = {}
        for name, env in _ENV.items():
            if os.environ.get(env):
                values[name] = float(os.environ[env])
        if "max_attempts" in values:
            values["max_attempts"] = int(values["max_attempts"])
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        return {env: str(getattr(self, name)) for name, env in _ENV.items()}

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        wait = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 1))
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.backoff_max))
        return wait


@dataclass(frozen=True)
class Outcome:
    """One delivery attempt: ``kind`` is ``ok``, ``retry`` or ``dead``."""

    kind: str
    status: int | None
    detail: str
    retry_after: float | None = None
    maybe_delivered: bool = False
    """No answer, but the request may have reached the target (the connection was made: a
    read timeout or a cut answer), unlike a refused or unresolvable connection."""


def classify(status: int) -> str:
    if 200 <= status < 300:
        return "ok"
    if status in _RETRYABLE_4XX or status >= 500 or status < 400:
        return "retry"
    return "dead"


def claim_name(target: str, kind: str = "relay") -> str:
    """The claim purpose of ``kind`` (``relay``, ``resend``) for one target (safe in a lock
    file name)."""
    return f"{kind}-" + hashlib.sha256(target.encode()).hexdigest()[:16]


def checked_targets(source: WebhookSource, targets: list[str] | None) -> list[str]:
    """``targets``, or every one of the source's ``relay_to`` when None or empty. Raises
    ``ValueError`` for a target not in ``relay_to``: only a URL that passed the deployment's
    host rules is ever sent to."""
    chosen = targets or list(source.relay_to)
    unknown = [t for t in chosen if t not in source.relay_to]
    if unknown:
        raise ValueError(
            f"source {source.name}: {unknown[0]!r} is not in its relay_to "
            f"({', '.join(source.relay_to) or 'none'})"
        )
    return chosen


class Forwardable(Protocol):
    """What is forwarded: a spooled request, or a dead letter (:mod:`.resend`)."""

    body: bytes
    signature: str | None


def signature_of(request: Forwardable, source: WebhookSource) -> str | None:
    """The header LINE sent (kept in the spool); for requests spooled before it was kept, the
    same HMAC recomputed with the channel secret."""
    if request.signature:
        return request.signature
    secret = source.channel_secret()
    return sign(secret, request.body) if secret else None


def _maybe_sent(exc: requests.RequestException) -> bool:
    """False when no connection was made (refused, unresolvable, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return False
    return True


def deliver(
    session: requests.Session, target: str, request: Forwardable, signature: str, timeout: float
) -> Outcome:
    """POST the body, unchanged, with LINE's signature header; no redirect is followed."""
    try:
        resp = session.post(
            target,
            data=request.body,
            headers={
                "content-type": "application/json; charset=utf-8",
                "x-line-signature": signature,
                "user-agent": USER_AGENT,
            },
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        return Outcome(
            "retry", None, f"{type(exc).__name__}: {exc}"[:500], maybe_delivered=_maybe_sent(exc)
        )
    retry_after = None
    header = resp.headers.get("retry-after", "")
    if header.isdigit():
        retry_after = float(header)
    kind = classify(resp.status_code)
    detail = f"HTTP {resp.status_code}" + (f": {resp.text[:200]}" if kind != "ok" else "")
    return Outcome(kind, resp.status_code, detail, retry_after)


def deliver_with_retries(
    session: requests.Session,
    target: str,
    request: Forwardable,
    signature: str,
    policy: RelayPolicy,
    attempts: int,
    *,
    retry_in_doubt: bool,
) -> Outcome:
    """:func:`deliver`, tried again after the policy's backoff while the outcome is ``retry``,
    ``attempts`` tries at most (at least one); the last outcome. ``retry_in_doubt=False`` stops
    at a failure after which the target may have the request (``maybe_delivered``), so that it
    is never sent twice blindly (``webhook resend``); ``webhook replay`` retries it (a bot
    dedups on ``webhookEventId``)."""
    outcome = deliver(session, target, request, signature, policy.timeout)
    for attempt in range(1, attempts):
        if outcome.kind != "retry" or (outcome.maybe_delivered and not retry_in_doubt):
            break
        time.sleep(policy.backoff(attempt, outcome.retry_after))
        outcome = deliver(session, target, request, signature, policy.timeout)
    return outcome


@dataclass
class StepResult:
    forwarded: int = 0
    dead_lettered: int = 0
    waiting_until: float | None = None  # the head is in backoff until then


def relay_step(
    reader: object,
    source: WebhookSource,
    target: str,
    policy: RelayPolicy,
    session: requests.Session,
    limit: int = 100,
) -> StepResult:
    """Forward what is due for one target, in order, stopping at the first request to retry.

    ``reader`` is an open spool reader (``spool.open_reader``) whose claim the caller holds.
    """
    result = StepResult()
    state = reader.relay_state(source.source_id, target)  # type: ignore[attr-defined]
    if state.next_at > time.time():
        result.waiting_until = state.next_at
        return result
    attempts = state.attempts
    batch = reader.pending(source.source_id, state.position, limit)  # type: ignore[attr-defined]
    for request in batch:
        signature = signature_of(request, source)
        if signature is None:  # no secret here to recompute one: nothing can be forwarded
            reader.relay_retry_later(  # type: ignore[attr-defined]
                source.source_id, target, attempts, time.time() + policy.poll * 10,
                f"${source.channel_secret_env} is not set",
            )  # fmt: skip
            result.waiting_until = time.time() + policy.poll * 10
            return result
        outcome = deliver(session, target, request, signature, policy.timeout)
        if outcome.kind == "ok":
            reader.relay_forwarded(source.source_id, target, request)  # type: ignore[attr-defined]
            result.forwarded += 1
            attempts = 0
            continue
        attempts += 1
        if outcome.kind == "dead" or attempts >= policy.max_attempts:
            reason = outcome.detail if outcome.kind == "dead" else (
                f"gave up after {attempts} attempts; last: {outcome.detail}"
            )  # fmt: skip
            reader.relay_dead_letter(  # type: ignore[attr-defined]
                source.source_id, target, request, attempts, outcome.status, reason
            )
            log.warning("relay %s -> %s: dead letter %s: %s", source.name, target,
                        request.request_id, reason)  # fmt: skip
            result.dead_lettered += 1
            attempts = 0
            continue
        wait = policy.backoff(attempts, outcome.retry_after)
        reader.relay_retry_later(  # type: ignore[attr-defined]
            source.source_id, target, attempts, time.time() + wait, outcome.detail
        )
        result.waiting_until = time.time() + wait
        return result
    return result


class RelayWorker(threading.Thread):
    """Forwards one source's requests to one target for as long as the process lives.

    Standby until it holds the claim; then forwards, waking on ``wake`` (set after each local
    spool commit) or every ``policy.poll`` seconds (commits of other receivers).
    """

    def __init__(
        self,
        source: WebhookSource,
        target: str,
        spool: str | Path | None,
        policy: RelayPolicy,
        stop: threading.Event,
        wake: threading.Event | None = None,
    ) -> None:
        super().__init__(name=f"line-oa-relay-{source.name}", daemon=True)
        self.source, self.target, self.spool, self.policy = source, target, spool, policy
        self.stop_event, self.wake = stop, wake or threading.Event()

    def run(self) -> None:
        name = claim_name(self.target)
        while not self.stop_event.is_set():
            try:
                with open_reader(self.spool) as reader:
                    while not self.stop_event.is_set():
                        with reader.claim(name, self.source.source_id, wait=False) as held:
                            if held is None:  # another worker forwards; stand by
                                self.stop_event.wait(self.policy.poll * 4)
                                continue
                            self._forward(reader, held)
            except Exception as exc:  # the spool's database is away: try again later
                log.error("relay %s -> %s: %s", self.source.name, self.target, exc)
                self.stop_event.wait(self.policy.poll * 10)

    def _forward(self, reader: object, held: object) -> None:
        with requests.Session() as session:
            while not self.stop_event.is_set():
                held.check()  # type: ignore[attr-defined]
                step = relay_step(reader, self.source, self.target, self.policy, session)
                if step.forwarded or step.dead_lettered:
                    continue
                if step.waiting_until is not None:  # backoff: new requests do not cut it short
                    wait = step.waiting_until - time.time()
                    self.stop_event.wait(min(max(0.0, wait), self.policy.poll * 4))
                    continue
                self.wake.wait(self.policy.poll)
                self.wake.clear()


def start_relays(
    sources: list[WebhookSource],
    spool: str | Path | None,
    policy: RelayPolicy | None = None,
) -> tuple[threading.Event, list[RelayWorker]]:
    """A worker per (source, target); returns the stop event and the workers (started)."""
    stop = threading.Event()
    workers = [
        RelayWorker(source, target, spool, policy or RelayPolicy(), stop)
        for source in sources
        for target in source.relay_to
    ]
    for worker in workers:
        worker.start()
    return stop, workers


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: ISO 8601 with an offset (``2026-11-30T09:00:00+09:00``, ``...Z``), a
    duration back from now (``90s``, ``30m``, ``2h``, ``7d``) or epoch seconds. A date-time
    without an offset is refused (it would be ambiguous). Raises ``ValueError``."""
    value = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value)
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return (now if now is not None else time.time()) - float(match.group(1)) * unit
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"--since {text!r}: use ISO 8601 with an offset, a duration (30m, 2h, 7d) or epoch "
            "seconds"
        ) from exc
    if parsed.tzinfo is None:
        raise ValueError(f"--since {text!r} has no UTC offset (add Z or +09:00)")
    return parsed.astimezone(timezone.utc).timestamp()


@dataclass
class ReplayResult:
    """What a replay sent to one target."""

    source: str
    target: str
    since: float
    requests: int = 0
    forwarded: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def replay(
    source: WebhookSource,
    since: float,
    *,
    targets: list[str] | None = None,
    spool: str | Path | None = None,
    policy: RelayPolicy | None = None,
    attempts: int = 3,
) -> list[ReplayResult]:
    """Forward again every spooled request of ``source`` received at or after ``since`` (epoch
    seconds) to ``targets`` (default: all of its ``relay_to``), in spool order, body and
    signature unchanged. Transient failures are retried ``attempts`` times with the policy's
    backoff; what still fails is counted and listed. Cursors and dead letters are untouched:
    a replay is on top of the live relay (a bot dedups on ``webhookEventId``). Only requests
    still in the spool can be replayed (landing prunes after ``retention_days``).
    """
    rules = policy or RelayPolicy()
    results = [ReplayResult(source.name, t, since) for t in checked_targets(source, targets)]
    with open_reader(spool) as reader, requests.Session() as session:
        after = (0, 0)
        while True:
            batch = reader.pending(source.source_id, after, 500, since=since)
            if not batch:
                break
            after = batch[-1].position
            for request in batch:
                signature = signature_of(request, source)
                for result in results:
                    result.requests += 1
                    if signature is None:
                        outcome = Outcome("retry", None, f"${source.channel_secret_env} is not set")
                    else:
                        outcome = deliver_with_retries(
                            session, result.target, request, signature, rules, attempts,
                            retry_in_doubt=True,
                        )  # fmt: skip
                    if outcome.kind == "ok":
                        result.forwarded += 1
                    else:
                        result.failed += 1
                        result.failures.append(f"{request.request_id}: {outcome.detail}")
    return results
