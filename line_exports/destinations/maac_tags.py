"""MAAC ``sync_mode: mirror``: remove the tags this export attached from members who left.

MAAC's member import only ever adds tags ("the system only attaches new tags; it does not
overwrite or remove tags a member already has", ``maac-openapi.md``, member import), so a member
who leaves the query keeps them. Removal goes through MAAC's tag API (``maac-openapi.md``,
Group 標籤): ``GET /openapi/v1/tag/{?name,start}`` finds each tag's id by its exact name, and
``DELETE /openapi/v1/taglinemember/`` with ``{"tag_id": id, "line_uid": uid}`` removes one tag
from one member (204). That endpoint takes a LINE UID, so a departed member is removed only when
the export sent its ``line_uid``.

Only tags this export attached are removed, not one the member already carried (another
export's, a campaign's, an agent's). A tag is one per member in MAAC, so what tells them apart
is when it was attached: the member list (``GET /openapi/v1/member/?line_uid=..&all_tag=1``,
:mod:`line_exports.maac_spec`) gives each tag's ``tagged_at``, "the time the tag was first
attached to this member", and an import task's result its ``start_time``, both on MAAC's clock.
In ``diff`` and ``mirror`` each import records, per member and tag, when this export first sent
it (:class:`Tagged`): before the request, its send time on this machine's clock; once MAAC
answers the task id on the first attempt, that task, whose ``start_time`` (MAAC's clock) is the
tighter bound. A run killed while the request or the task is in flight, or a request whose
answer was lost and that was sent again (the lost attempt may have started a task MAAC's API
cannot list), keeps the send time. Mirror untags a departed member only where ``tagged_at`` is
at or after that bound. The send time trusts this machine's clock against MAAC's: if ours runs
ahead, this export's own tags look older and are kept (reported); if it runs behind by ``d``, a
tag someone attached in the ``d`` before our request counts as ours. A tag attached before is kept and reported (``tags_kept``), as is one
with no record (sent in ``append``, or before this record existed). The reads cost one request
per departed member (the list filters one LINE UID at a time), none on a baseline.

MAAC publishes no rate limit for the member list or the tag calls: both are paced at 10 a
second, one at a time, and each removal is recorded in the ledger so a re-run of the same scope
does not call again.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from line_exports.destination import ExportRun, content_key
from line_exports.http import ApiError, RateLimit
from line_exports.ledger import SYNC_MEMBERS, SYNC_TAGGED, SYNC_TAGGED_TASKS, Ledger
from line_exports.maac_spec import MEMBER_LIST_PATH, parse_time, tag_times
from line_exports.sync import SAMPLE_ROWS, RemovalReport
from line_exports.sync_store import SyncStore, store_name

if TYPE_CHECKING:
    from line_exports.destinations.maac import MaacClient, MaacSettings

TAG_REMOVALS_PER_SECOND = 10
"""Our own pace for ``DELETE /openapi/v1/taglinemember/`` (MAAC publishes no limit for it)."""
MEMBER_READS_PER_SECOND = 10
"""Our own pace for ``GET /openapi/v1/member/`` (MAAC publishes no limit for it)."""
LIMITS = {
    "tag_member": RateLimit(requests=TAG_REMOVALS_PER_SECOND, per_seconds=1),
    "member_list": RateLimit(requests=MEMBER_READS_PER_SECOND, per_seconds=1),
}


ACCOUNT_MARK = "@maac="
"""How a record's name names its account (:meth:`MaacDestination.sync_account` begins
``maac=``); a name without it is an earlier version's (account unknown)."""
SENT_AT = "sent@"
"""Prefix of a record's task when it names the import request's send time, not a task id."""


class Tagged:
    """Per member (LINE UID) and tag: the import task of this export that first sent it, and
    each task's ``start_time`` (``sync_tagged`` / ``sync_tagged_tasks`` in the ledger's
    database, per export, partition and MAAC account, whatever its ``tags`` target).

    The account (:meth:`MaacDestination.sync_account`: the API host and a keyed fingerprint of
    the token) is part of the record's ``export`` column, ``EXPORT[#partition]@ACCOUNT``, as in
    the sync store's name, so two exports on two accounts never take each other's records for
    their own. Records written before (``EXPORT[#partition]``, no account) are taken over by the
    export's first run on an account, as its sync store is (:func:`line_exports.sync.open_store`).
    """

    def __init__(self, store: SyncStore, account: str = "") -> None:
        self.store = store
        self.account = account

    @classmethod
    def of(cls, run: ExportRun, settings: MaacSettings) -> Tagged | None:
        """The record of a members export in ``diff`` / ``mirror`` on the run's account
        (:attr:`ExportRun.sync_account`); None otherwise."""
        if settings.sync_mode == "append" or settings.data_object != "members":
            return None
        scope = run.ledger
        legacy = store_name(scope.export, scope.scope)
        account = run.sync_account
        if not account:
            return cls(SyncStore(scope.ledger, legacy))
        tagged = cls(
            SyncStore(scope.ledger, store_name(scope.export, scope.scope, account)), account
        )
        tagged._adopt(legacy)
        return tagged

    def _adopt(self, legacy: str) -> None:
        """Take over the records of ``legacy`` (this export's name without an account, written
        by an earlier version): copied first (a record already here wins), then deleted, so a
        process killed mid-way adopts again, the same rows."""
        old = SyncStore(self.store.ledger, legacy)
        for table, names in (
            (SYNC_TAGGED, ("key", "tag", "task", "recorded_at")),
            (SYNC_TAGGED_TASKS, ("key", "started", "recorded_at")),
        ):
            rows = old.all(table, names)
            if rows:
                self.store.put_absent(table, [tuple(r) for r in rows])
                old.forget(table, sorted({r[0] for r in rows}))

    def intend(self, members: list[dict[str, Any]], tags: list[str]) -> str:
        """Before the import request: the (member, tag) pairs no earlier request of this export
        sent are recorded under this request's time (:data:`SENT_AT` + ISO time, this machine's
        clock); returns that marker. A run killed, or whose answer is lost, while the request is
        in flight keeps it, so MAAC applying the request anyway still counts as this export's."""
        marker = SENT_AT + datetime.now(UTC).isoformat()
        now = time.time()
        rows = [
            (member["line_uid"], name, marker, now)
            for member in members
            if member.get("line_uid")
            for name in dict.fromkeys([*tags, *member.get("tags", [])])
        ]
        self.store.put_absent(SYNC_TAGGED, rows)
        return marker

    def sent(self, marker: str, task_id: int, members: list[dict[str, Any]]) -> None:
        """MAAC answered the request ``marker`` on its first attempt with task ``task_id``: its
        records name the task, whose ``start_time`` (MAAC's clock) then bounds them. After a
        retried request the marker stays: an earlier attempt may have started a task too."""
        self._move(members, marker, str(task_id))

    def drop(self, marker: str, members: list[dict[str, Any]]) -> None:
        """The request ``marker`` attached nothing (MAAC refused it, or it never left)."""
        self._move(members, marker, None)

    def done(
        self, task_id: int, result: dict[str, Any], members: list[dict[str, Any]], marker: str
    ) -> None:
        """Task ``task_id`` finished: its ``start_time`` is kept; a failed task attached
        nothing, so its records (and its request's) are dropped (the rows come back later)."""
        if result.get("success") and result.get("start_time"):
            self.store.put_absent(
                SYNC_TAGGED_TASKS, [(str(task_id), str(result["start_time"]), time.time())]
            )
            return
        self._move(members, str(task_id), None)
        self._move(members, marker, None)

    def _move(self, members: list[dict[str, Any]], old: str, new: str | None) -> None:
        """These members' records under ``old`` renamed ``new`` (dropped when None)."""
        uids = [m["line_uid"] for m in members if m.get("line_uid")]
        rows = self.store.select(SYNC_TAGGED, ("key", "tag", "task", "recorded_at"), uids)
        if not any(r[2] == old for r in rows):
            return
        self.store.forget(SYNC_TAGGED, uids)
        kept = [r if r[2] != old else (r[0], r[1], new, r[3]) for r in rows]
        self.store.put_absent(SYNC_TAGGED, [tuple(r) for r in kept if r[2] is not None])

    def since(self, client: MaacClient, uids: list[str]) -> dict[tuple[str, str], datetime]:
        """(LINE UID, tag) -> the ``start_time`` of the task that first sent it, for the pairs
        recorded. A task killed before its end is asked for its result once (then recorded);
        a task MAAC no longer reports, or that failed, gives no time."""
        rows = self.store.select(SYNC_TAGGED, ("key", "tag", "task"), uids)
        tasks = sorted({task for _, _, task in rows})
        started = dict(self.store.select(SYNC_TAGGED_TASKS, ("key", "started"), tasks))
        for task in tasks:
            if task.startswith(SENT_AT):  # a request whose task is unknown: its send time
                started[task] = task.removeprefix(SENT_AT)
            elif task not in started:
                result = task_result(client, task)
                if result is not None and result.get("success") and result.get("start_time"):
                    started[task] = str(result["start_time"])
                    self.store.put_absent(SYNC_TAGGED_TASKS, [(task, started[task], time.time())])
        return {(uid, tag): parse_time(started[task]) for uid, tag, task in rows if task in started}

    def recorded(self, uids: list[str]) -> dict[str, list[str]]:
        """LINE UID -> every tag this export recorded sending it (any row, any ``tags`` set)."""
        found: dict[str, list[str]] = {}
        for uid, tag in self.store.select(SYNC_TAGGED, ("key", "tag"), uids):
            found.setdefault(uid, []).append(tag)
        return found

    def release(self, pairs: list[tuple[str, str]]) -> int:
        """This export removed these (LINE UID, tag) pairs from its MAAC account. Every other
        export of this ledger that recorded sending one of them on the same account believes
        the tag is still on the member: its record is dropped and its member's row set
        ``pending``, so its next ``diff`` / ``mirror`` run sends it again (``rows_retried``). A
        record on another account is left alone (that account's member keeps the tag, and its
        export still owns it). A record of unknown account (written before records named the
        account) is kept, its member set ``pending`` too: sent again, MAAC attaches the tag
        anew where it was removed (a later first time than the record's) and leaves it as it
        is elsewhere, so that export can still remove it. Returns the rows set pending."""
        if not pairs:
            return 0
        wanted = set(pairs)
        ledger, me = self.store.ledger, self.store.export
        uids = sorted({uid for uid, _ in pairs})
        table = SYNC_TAGGED
        with ledger._lock, ledger.engine.connect() as con:
            found = [
                (export, uid, tag)
                for start in range(0, len(uids), 500)
                for export, uid, tag in con.execute(
                    sa.select(table.c.export, table.c.key, table.c.tag).where(
                        table.c.export != me, table.c.key.in_(uids[start : start + 500])
                    )
                ).all()
                if (uid, tag) in wanted
            ]
        found = [(e, uid, tag) for e, uid, tag in found if self._same_account(e) is not False]
        others: dict[str, set[str]] = {}
        for export, uid, _ in found:
            others.setdefault(export, set()).add(uid)
        resent = 0
        for export, members in others.items():
            legacy = self._same_account(export) is None
            for store, keys in _member_keys(ledger, export, members, legacy).items():
                SyncStore(ledger, store).set_status(keys, "pending")
                resent += len(keys)
        dropped = [(e, uid, tag) for e, uid, tag in found if self._same_account(e)]
        with ledger._lock, ledger.engine.begin() as con:
            for export, uid, tag in dropped:
                con.execute(
                    sa.delete(table).where(
                        table.c.export == export, table.c.key == uid, table.c.tag == tag
                    )
                )
        return resent

    def _same_account(self, record: str) -> bool | None:
        """Whether the record named ``record`` (``EXPORT[#partition][@ACCOUNT]``) is on this
        export's account: None when it names none (an earlier version's), or this export runs
        without one (every record may then be on its account)."""
        if ACCOUNT_MARK not in record or not self.account:
            return None
        return record.endswith(f"@{self.account}")

    def forget(self, uids: list[str]) -> None:
        """Members untagged: a later import of them is a new first time."""
        self.store.forget(SYNC_TAGGED, uids)


def _member_keys(ledger: Ledger, record: str, uids: set[str], legacy: bool) -> dict[str, list[str]]:
    """Sync store name -> keys of its ``accepted`` members with one of these LINE UIDs, in
    the stores of the export whose tag record is named ``record``: one per ``tags`` target,
    ``record|target`` for a record on an account (``EXPORT@ACCOUNT``, the stores on that
    account), every store of the export (``EXPORT@...``) for a ``legacy`` one."""
    table = SYNC_MEMBERS
    prefix = f"{record}@" if legacy else f"{record}|"
    found: dict[str, list[str]] = {}
    with ledger._lock, ledger.engine.connect() as con:
        rows = con.execute(
            sa.select(table.c.export, table.c.key, table.c.ident).where(
                sa.or_(
                    table.c.export == record, table.c.export.startswith(prefix, autoescape=True)
                ),
                table.c.status == "accepted",
            )
        )
        for store, key, ident in rows:
            if store != record and not store.startswith(prefix):
                continue  # (checked again: never another export's store)
            if json.loads(ident).get("line_uid") in uids:
                found.setdefault(store, []).append(key)
    return found


def task_result(client: MaacClient, task: str) -> dict[str, Any] | None:
    """The ``result`` of a done import task; None while it runs or when MAAC has no such task."""
    try:
        body = client.http.request(
            "GET", f"/openapi/v1/member/import/{task}/", endpoint="import_status"
        ).json()
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    result = body.get("result")
    return result if body.get("status") == "done" and isinstance(result, dict) else None


def tag_ids(client: MaacClient, names: list[str]) -> dict[str, int]:
    """Tag name -> id, for the names MAAC knows (exact match; the list filter is partial)."""
    found: dict[str, int] = {}
    for name in names:
        start: str | None = None
        while True:
            params = {"name": name, **({"start": start} if start else {})}
            page = client.http.request(
                "GET", "/openapi/v1/tag/", endpoint="tag_list", params=params
            ).json()
            for tag in page.get("results", []):
                if tag.get("name") == name:
                    found[name] = int(tag["id"])
            start = page.get("next")
            if not start or name in found:
                break
    return found


def find_member(client: MaacClient, line_uid: str) -> dict[str, Any] | None:
    """The member with this LINE UID and every tag (``all_tag=1``), or None when MAAC has none."""
    page = client.http.request(
        "GET",
        MEMBER_LIST_PATH,
        endpoint="member_list",
        params={"line_uid": line_uid, "all_tag": 1},
    ).json()
    return next((m for m in page.get("results", []) if m.get("line_uid") == line_uid), None)


def remove_tag(client: MaacClient, tag_id: int, line_uid: str) -> str | None:
    """Remove one tag from one member; None when done, else MAAC's answer. A 404 (no such
    member any more) means the tag is not on the member: done."""
    try:
        client.http.request(
            "DELETE",
            "/openapi/v1/taglinemember/",
            endpoint="tag_member",
            json={"tag_id": tag_id, "line_uid": line_uid},
        )
    except ApiError as exc:
        if exc.status == 404:
            return None
        if exc.retryable:
            raise
        return f"MAAC answered {exc.status}: {str(exc)[:200]}"
    return None


class _Kept:
    """Tags left on departed members, with why (run metadata)."""

    def __init__(self) -> None:
        self.before = 0
        self.unrecorded = 0
        self.sample: dict[str, str] = {}

    def add(self, uid: str, name: str, why: str, before: bool) -> None:
        if before:
            self.before += 1
        else:
            self.unrecorded += 1
        if len(self.sample) < SAMPLE_ROWS:
            self.sample[f"{uid} {name}"] = why


def remove_departed(
    client: MaacClient, settings: MaacSettings, departed: pd.DataFrame, run: ExportRun
) -> RemovalReport:
    """For each departed member: remove the tags this export attached (the ``tags`` setting,
    the member's own ``tags`` column as last sent, and every tag recorded for it in
    :class:`Tagged`: a row tag it had earlier, a tag of an earlier ``tags`` setting) and that
    MAAC shows it attached (see the module). Members without a ``line_uid`` cannot be untagged
    through MAAC's API and are reported as not removed."""
    from line_exports.destinations.maac import split_tags

    report = RemovalReport()
    before = client.http.stats.requests
    common = settings.tag_list()
    own = departed["tags"].tolist() if "tags" in departed.columns else [None] * len(departed)
    tagged = Tagged.of(run, settings)
    uids = _uids(departed)
    known = [u for u in uids if u]
    recorded = tagged.recorded(known) if tagged is not None else {}
    wanted = sorted(
        {
            *common,
            *(t for text in own if text for t in split_tags(text)),
            *(t for names in recorded.values() for t in names),
        }
    )
    ids = tag_ids(client, wanted)
    since = tagged.since(client, known) if tagged is not None else {}
    kept = _Kept()
    removed = 0
    done_uids: list[str] = []
    untagged: list[tuple[str, str]] = []
    for key, uid, text in zip(departed["key"], uids, own, strict=True):
        if not uid:
            report.failed[key] = "no line_uid was sent for this member: MAAC untags by LINE UID"
            continue
        calls = {
            name: content_key("maac-untag", ids[name], uid)
            for name in dict.fromkeys([*common, *split_tags(text or ""), *recorded.get(uid, [])])
            if name in ids  # else MAAC has no such tag: it is on nobody
        }
        todo = [name for name, call in calls.items() if run.ledger.done(call) is None]
        problems = []
        try:
            member = find_member(client, uid) if todo else None
            times = tag_times(member) if member is not None else {}
        except ValueError as exc:
            report.failed[key] = f"MAAC's member list answered no tag times ({exc})"
            continue
        for name in todo:
            if name not in times:
                continue  # not on the member (any more): nothing to remove
            first = since.get((uid, name))
            if first is None:
                why = (
                    "no record of when this export first sent it (sent in append, or its "
                    "import task is unknown to MAAC)"
                )
                kept.add(uid, name, why, before=False)
                continue
            if times[name] < first:
                why = (
                    f"on the member since {times[name].isoformat()}, before this export first "
                    f"sent it (its import started {first.isoformat()})"
                )
                kept.add(uid, name, why, before=True)
                continue
            problem = remove_tag(client, ids[name], uid)
            if problem:
                problems.append(f"tag {name!r}: {problem}")
                continue
            run.ledger.record(calls[name], {"tag": name})
            removed += 1
            untagged.append((uid, name))
        if problems:
            report.failed[key] = "; ".join(problems)
        else:
            report.removed_keys.append(key)
            done_uids.append(uid)
    if tagged is not None:
        tagged.forget(done_uids)
        resent = tagged.release(untagged)
        report.metadata["members_resent_by_other_exports"] = resent
        if resent:
            run.log.info(
                f"{run.name}: {resent:,} members of other exports that also sent a removed tag "
                "will be sent again by their next run"
            )
    report.requests = client.http.stats.requests - before
    report.metadata["tags_removed"] = removed
    report.metadata["tags_kept_carried_before"] = kept.before
    report.metadata["tags_kept_unrecorded"] = kept.unrecorded
    if kept.sample:
        report.metadata["tags_kept"] = dg.MetadataValue.json(kept.sample)
    return report


def _uids(departed: pd.DataFrame) -> list[Any]:
    return (
        departed["line_uid"].tolist() if "line_uid" in departed.columns else [None] * len(departed)
    )
