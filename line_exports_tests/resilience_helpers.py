"""One table of export cases (one per destination target) for the resilience and secrets tests.

Each case knows its query (valid rows plus a few invalid ones at known row numbers), the request
that carries its rows (where faults are injected), a resource pointed at a sandbox URL, and how
to read back from the sandbox what each row became at the API, so a test can say "delivered
exactly once" without trusting the export's own report.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from line_exports import (
    LineConversionResource,
    LineMessagingResource,
    LinkedInResource,
    MaacResource,
    SqlSource,
    build_export,
    get_destination,
    paths,
)
from line_exports.destination import Destination
from line_exports.http import RetrySettings
from line_exports.sandbox import Sandbox, SandboxServer
from line_exports.sandbox import line_conversion as capi_box
from line_exports.sandbox import line_messaging as line_box
from line_exports.sandbox import linkedin as linkedin_box
from line_exports.sandbox import maac as maac_box

TICK = {"dagster/scheduled_execution_time": "2026-06-01T09:00:00+00:00"}
TAG = "resilience-tag"
ACCOUNT = "512345678"
AUDIENCE = "resilience audience"
SEGMENT = "resilience segment"
# Waits far below the reference minimums (initial_retry_wait >= 1 s, connection_timeout >= 10 s)
# so a storm of faults costs milliseconds; only the tests' own Destination copies use them.
FAST_RETRY = RetrySettings(
    max_retry=10, initial_retry_wait=0.01, max_retry_wait=0.05, connection_timeout=30
)
TIMEOUT_RETRY = RetrySettings(
    max_retry=6, initial_retry_wait=0.01, max_retry_wait=0.05, connection_timeout=0.4
)


def uid(n: int) -> str:
    return "U" + f"{n:032x}"


UID_SQL = "'U' || lpad(printf('%x', range), 32, '0')"


@dataclass(frozen=True)
class Case:
    """One export target, its data and its oracle."""

    name: str
    destination: str
    settings: dict[str, Any]
    query: str
    rows: int
    invalid: tuple[int, ...]  # 1-based row numbers the rules must reject
    data_path: str  # requests carrying rows start with this path
    data_method: str
    resource_key: str
    make_resource: Callable[[str], dg.ConfigurableResource]
    delivered: Callable[[Sandbox], Counter[str]]  # key -> times the API holds/received it
    expected: Callable[[], set[str]]  # keys of the valid rows
    kill_after: int = 2  # data requests seen before a SIGKILL lands mid-export

    @property
    def valid(self) -> int:
        return self.rows - len(self.invalid)


def _invalid_every(rows: int, step: int, offset: int) -> tuple[int, ...]:
    """Row numbers (1-based) of ``range`` values with ``range % step == offset``."""
    return tuple(r + 1 for r in range(rows) if r % step == offset)


# -- oracles -------------------------------------------------------------------------------------
def _maac_members(sandbox: Sandbox) -> Counter[str]:
    store = maac_box.store_of(sandbox)
    with sandbox.lock:
        return Counter(str(m.get("line_uid")) for m in store.members.values())


def _inboxes(sandbox: Sandbox) -> Counter[str]:
    store = line_box.store_of(sandbox)
    with sandbox.lock:
        return Counter({r: len(v) for r, v in store.inbox.items()})


def _audience_ids(sandbox: Sandbox) -> Counter[str]:
    """Every ID in every audience named AUDIENCE (a second audience of that name counts twice)."""
    store = line_box.store_of(sandbox)
    out: Counter[str] = Counter()
    with sandbox.lock:
        for audience in store.audiences.values():
            if audience.description == AUDIENCE:
                audience.settle(float("inf"))  # apply every upload job, finished or not
                out.update(audience.ids)
    return out


def _capi_events(sandbox: Sandbox) -> Counter[str]:
    return Counter(capi_box.events_of(sandbox, TAG).keys())


def _linkedin_members(sandbox: Sandbox) -> Counter[str]:
    """Hashed emails in every USER segment named SEGMENT (two segments of that name count twice)."""
    store = linkedin_box.store_of(sandbox)
    out: Counter[str] = Counter()
    with sandbox.lock:
        for segment in store.segments.values():
            if segment.name == SEGMENT:
                out.update(key[1][1] for key in segment.members if key[0] == "ids")
    return out


def _email_hash(n: int) -> str:
    return hashlib.sha256(f"user{n}@example.jp".encode()).hexdigest()


# -- cases ---------------------------------------------------------------------------------------
def _cases() -> dict[str, Case]:
    maac_rows, line_rows, capi_rows, li_rows = 40, 40, 2_500, 40
    maac_bad = _invalid_every(maac_rows, 10, 3)
    line_bad = _invalid_every(line_rows, 10, 7)
    capi_bad = _invalid_every(capi_rows, 500, 11)
    li_bad = _invalid_every(li_rows, 10, 5)
    line_ids = f"case when range % 10 = 7 then 'U-not-a-user-' || range else {UID_SQL} end AS id"
    cases = [
        Case(
            "maac_members",
            "maac",
            {
                "data_object": "members",
                "import_key": "line_uid",
                "tags": "resilience",
                "batch_size": 10,
            },
            f"SELECT case when range % 10 = 3 then 'Ubad' || range else {UID_SQL} end AS line_uid, "
            f"'member ' || range AS display_name FROM range({maac_rows}) ORDER BY range",
            maac_rows,
            maac_bad,
            "/openapi/v1/member/import/",
            "POST",
            "maac",
            lambda url: MaacResource(base_url=url, poll_seconds=0.05),
            _maac_members,
            lambda: {uid(r - 1) for r in range(1, maac_rows + 1) if r not in maac_bad},
        ),
        Case(
            "line_push",
            "line_messaging",
            {
                "target": "push_message",
                "push_concurrency": 4,
                "template_message": json.dumps({"type": "text", "text": "Hello {{name}}"}),
            },
            f"SELECT {line_ids}, 'n' || range AS name FROM range({line_rows}) ORDER BY range",
            line_rows,
            line_bad,
            "/v2/bot/message/push",
            "POST",
            "line_messaging",
            lambda url: LineMessagingResource(base_url=url, poll_seconds=0.05),
            _inboxes,
            lambda: {uid(r - 1) for r in range(1, line_rows + 1) if r not in line_bad},
        ),
        Case(
            "line_multicast",
            "line_messaging",
            {
                "target": "multicast_message",
                "batch_size_multicast": 5,
                "template_message_multicast": json.dumps({"type": "text", "text": "Sale today"}),
            },
            f"SELECT {line_ids} FROM range({line_rows}) ORDER BY range",
            line_rows,
            line_bad,
            "/v2/bot/message/multicast",
            "POST",
            "line_messaging",
            lambda url: LineMessagingResource(base_url=url, poll_seconds=0.05),
            _inboxes,
            lambda: {uid(r - 1) for r in range(1, line_rows + 1) if r not in line_bad},
            kill_after=3,
        ),
        Case(
            "line_audience",
            "line_messaging",
            {"target": "audience", "audience_name": AUDIENCE},
            f"SELECT {line_ids} FROM range({line_rows}) ORDER BY range",
            line_rows,
            line_bad,
            "/v2/bot/audienceGroup/upload",
            "POST",
            "line_messaging",
            lambda url: LineMessagingResource(base_url=url, poll_seconds=0.05),
            _audience_ids,
            lambda: {uid(r - 1) for r in range(1, line_rows + 1) if r not in line_bad},
            kill_after=1,  # the one upload (it creates the audience) is in flight at the kill
        ),
        Case(
            "capi_events",
            "line_conversion",
            {"max_records": 1_000},
            "SELECT case when range % 500 = 11 then 'undefined' else 'dedup-' || range end AS deduplication_key, "
            "'conversion' AS event_type, 'web' AS source_type, "
            "cast(epoch(current_date) AS BIGINT) - range AS event_timestamp, "  # same body on a re-run
            "'ext-' || range AS external_id "
            f"FROM range({capi_rows}) ORDER BY range",
            capi_rows,
            capi_bad,
            f"/v1/{TAG}/events",
            "POST",
            "line_conversion",
            lambda url: LineConversionResource(line_tag_id=TAG, base_url=url),
            _capi_events,
            lambda: {f"dedup-{r - 1}" for r in range(1, capi_rows + 1) if r not in capi_bad},
        ),
        Case(
            "linkedin_users",
            "linkedin",
            {
                "ad_account_id": ACCOUNT,
                "segment_name": SEGMENT,
                "ignore_invalid_records": True,
                "batch_size": 10,
            },
            "SELECT case when range % 10 = 5 then 'not-an-email-' || range else 'User' || range || '@Example.jp' end "
            f"AS email FROM range({li_rows}) ORDER BY range",
            li_rows,
            li_bad,
            "/rest/dmpSegments/",
            "POST",
            "linkedin",
            lambda url: LinkedInResource(api_url=url, new_segment_wait=0),
            _linkedin_members,
            lambda: {_email_hash(r - 1) for r in range(1, li_rows + 1) if r not in li_bad},
        ),
    ]
    return {c.name: c for c in cases}


CASES = _cases()


# -- building and running ------------------------------------------------------------------------
def with_retry(type_name: str, retry: RetrySettings) -> Destination:
    """The real destination, with its settings' retry knobs replaced by ``retry``.

    The reference's minimums (1 s first wait, 10 s timeout) would make a storm of faults take
    minutes; this copy changes only what ``settings.retry_settings()`` returns.
    """
    base = get_destination(type_name)
    settings_class = base.settings_class

    class Fast(settings_class):  # type: ignore[valid-type,misc]
        def retry_settings(self) -> RetrySettings:
            return retry

    Fast.__name__ = settings_class.__name__
    dest = copy.copy(base)
    dest.settings_class = Fast  # type: ignore[misc]
    return dest


def build(
    case: Case, retry: RetrySettings | None = FAST_RETRY, name: str | None = None, **kwargs: Any
) -> dg.AssetsDefinition:
    dest: str | Destination = with_retry(case.destination, retry) if retry else case.destination
    kwargs.setdefault("resource_key", case.resource_key)
    return build_export(
        name or case.name,
        destination=dest,
        query=case.query,
        settings=case.settings,
        retry_policy=None,
        **kwargs,
    )


def materialize(
    case: Case, url: str, asset: dg.AssetsDefinition | None = None, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [asset or build(case)],
        resources={"sql_source": source_for(case), case.resource_key: case.make_resource(url)},
        raise_on_error=False,
        **kwargs,
    )


def source_for(case: Case) -> SqlSource:
    """A DuckDB file per case (the queries only use ``range``), so exports in parallel
    processes never contend for one file's lock."""
    home = paths.data_dir()
    home.mkdir(parents=True, exist_ok=True)
    return SqlSource(url=f"duckdb:///{home / (case.name + '.duckdb')}")


def metadata(result: dg.ExecuteInProcessResult, name: str) -> dict[str, Any]:
    (event,) = result.asset_materializations_for_node(name)
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure's message and the messages of its causes."""
    texts = []
    for event in result.all_events:
        error = event.step_failure_data.error if event.is_step_failure else None
        while error is not None:
            texts.append(str(error.message))
            error = error.cause
    return "\n".join(texts)


def rejected_rows(meta: dict[str, Any]) -> list[int]:
    path = meta.get("rejects_file")
    if not path or not Path(path).exists():
        return []
    return sorted(set(pd.read_csv(path)["_row_number"].astype(int)))


def settle(sandbox: Sandbox, quiet: float = 0.3, timeout: float = 10.0) -> int:
    """Wait until the sandbox log stops growing (late, delayed requests land); its length."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        with sandbox.lock:
            now = len(sandbox.requests)
        if now == seen:
            return now
        seen = now
        time.sleep(quiet)
    return seen


def check_exactly_once(case: Case, sandbox: Sandbox) -> list[str]:
    """Problems with what the API holds: every valid key once, nothing else."""
    got = case.delivered(sandbox)
    want = case.expected()
    problems = []
    missing = sorted(want - set(got))
    twice = sorted(k for k in want if got.get(k, 0) > 1)
    extra = sorted(set(got) - want)
    if missing:
        problems.append(
            f"{case.name}: {len(missing)} valid rows never delivered, e.g. {missing[:3]}"
        )
    if twice:
        problems.append(
            f"{case.name}: {len(twice)} rows delivered more than once, e.g. "
            f"{[(k, got[k]) for k in twice[:3]]}"
        )
    if extra:
        problems.append(f"{case.name}: {len(extra)} unexpected keys at the API, e.g. {extra[:3]}")
    return problems


# -- a fault the sandbox lacks: the API acts, then its answer arrives too late ---------------------
@dataclass
class LateRule:
    path: str
    method: str
    delay: float
    times: int = 1
    hits: int = 0
    """Requests taken by this rule (counted on arrival, before the body is read)."""
    acted: int = 0
    """Requests the API has acted on (handled, answer held back): what a kill test triggers
    on. ``hits`` alone races: a client killed before its body was read is never acted on."""
    until: threading.Event | None = None
    """Hold each answer until this is set (then ``delay`` more seconds): a test releases the
    answers once it has done what it must do while the requests are in flight."""


class LateAnswers:
    """ASGI middleware: for matching requests the API reads the whole body and acts on it, then
    holds the answer back ``delay`` seconds, so a client with a shorter timeout gives up on a
    request that did happen (the ambiguous case retry keys and dedup keys exist for).

    The sandbox's own ``Fault(delay=...)`` sleeps *before* the app reads the body, so a client
    that times out disconnects and the request is never processed (nor logged).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.rules: list[LateRule] = []

    def add(
        self,
        path: str,
        method: str,
        delay: float,
        times: int = 1,
        until: threading.Event | None = None,
    ) -> LateRule:
        rule = LateRule(path, method, delay, times, until=until)
        self.rules.append(rule)
        return rule

    def _take(self, scope: dict[str, Any]) -> LateRule | None:
        for rule in self.rules:
            if (
                scope["path"].startswith(rule.path)
                and scope["method"] == rule.method
                and (rule.times < 0 or rule.hits < rule.times)
            ):
                rule.hits += 1
                return rule
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        rule = self._take(scope) if scope["type"] == "http" else None
        if rule is None:
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        answer: list[dict[str, Any]] = []

        async def hold(message: dict[str, Any]) -> None:
            answer.append(message)

        await self.app(scope, replay, hold)
        rule.acted += 1
        while rule.until is not None and not rule.until.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(rule.delay)
        try:
            for message in answer:
                await send(message)
        except Exception:  # noqa: BLE001 - the client is gone, as intended
            pass


class LateAnswerServer(SandboxServer):
    """The sandbox server with :class:`LateAnswers` in front of its app (``server.late``)."""

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        self.late = LateAnswers(self._server.config.app)
        self._server.config.app = self.late
