"""Crescendo Lab MAAC's OpenAPI, faked faithfully: member import tasks, custom segments,
tags (``GET /openapi/v1/tag/``), a tag's removal from a member (``DELETE
/openapi/v1/taglinemember/``) and the member list with each tag's first ``tagged_at``
(``GET /openapi/v1/member/``, :mod:`line_exports.maac_spec`).

Follows ``maac-openapi.md`` (help-cresclab/ProductSpecLibrary): ``Authorization: Bearer``,
member import of at most 10,000 members and 10 MB per request, 15 imports a minute and one
running at a time, tasks that go pending -> processing -> done, custom segments from a CSV of
at most 300,000 LINE UIDs and 25 MB, segment status pending (1) -> ready (2).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.identities import maac_keys
from line_exports.maac_spec import (
    ALL_TAG_CHOICES,
    DATE_FILTER,
    IMPORT_KEYS,
    IMPORT_MAX_BYTES,
    IMPORT_MAX_MEMBERS,
    IMPORT_PER_MINUTE,
    LINE_UID,
    MEMBER_FIELDS,
    MEMBER_FILTERS,
    MEMBER_LIST_PATH,
    MEMBER_PAGE_SIZE,
    MEMBER_STATUSES,
    SEGMENT_MAX_BYTES,
    SEGMENT_MAX_UIDS,
    is_birthday,
)
from line_exports.phones import to_e164
from line_exports.sandbox.core import Sandbox

SEGMENT_QUOTA = 30
PAGE_SIZE = 300
ITEM_FIELDS = {*MEMBER_FIELDS, "tags"}  # what an import item may carry
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
LOCAL_MOBILE = re.compile(r"09[0-9]{8}")
CHANNEL_REGION = "TW"  # the sandbox channel's region: how MAAC reads a local 09XX mobile


def _now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat()


@dataclass
class ImportTask:
    id: int
    created: float
    finish_at: float
    created_at: str
    result: dict[str, Any]
    mismatched: list[str] = field(default_factory=list)
    """The LINE UIDs of ``mismatch_num``: the file ``mismatch_export_link`` points at."""


@dataclass
class Segment:
    id: int
    name: str
    description: str
    uids: list[str]
    ready_at: float
    updated: str | None = None

    def view(self) -> dict[str, Any]:
        ready = time.monotonic() >= self.ready_at
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "segment_type": 2,
            "member_count": len(self.uids) if ready else -1,
            "status": 2 if ready else 1,
            "last_updated_time": self.updated,
        }


@dataclass
class MaacStore:
    """What the fake MAAC account holds."""

    members: dict[int, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, dict[str, int]] = field(default_factory=lambda: {k: {} for k in IMPORT_KEYS})
    tasks: dict[int, ImportTask] = field(default_factory=dict)
    segments: dict[int, Segment] = field(default_factory=dict)
    blocked_uids: set[str] = field(default_factory=set)
    tag_ids: dict[str, int] = field(default_factory=dict)  # tag name -> id
    tag_removals: int = 0
    imported_rows: int = 0
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


def _error(status: int, detail: Any) -> JSONResponse:
    body = detail if isinstance(detail, dict) else {"detail": detail}
    return JSONResponse(body, status_code=status)


def match_key(import_key: str, value: Any, region: str = CHANNEL_REGION) -> str:
    """An import key as MAAC matches it: a mobile number in E.164 (MAAC converts a local 09XX
    number by the channel's region, so 0912345678 and +886912345678 are one member); an email
    or a customer_id as the exporter's rules say MAAC matches it (:func:`maac_key`, one
    definition: ``Ann@Example.com`` and `` ann@example.com`` are one member, `` 123`` and
    ``123`` too; MAAC's reference is silent on both, see :mod:`line_exports.identities`);
    "" for a key of only white space (MAAC's ``blank_error``)."""
    return match_keys(import_key, [value], region)[0]


def match_keys(import_key: str, values: list[Any], region: str = CHANNEL_REGION) -> list[str]:
    """:func:`match_key` of many values at once (one Arrow call: an import of 10,000 members)."""
    texts = [str(value) for value in values]
    if import_key == "mobile":
        return [to_e164(text, region) or text for text in texts]
    return maac_keys(import_key, texts)


def _keys_of(data: list[Any], name: str) -> list[str | None]:
    """Each item's ``name`` as matched (:func:`match_keys`), None where it has none."""
    present = [
        i for i, item in enumerate(data) if isinstance(item, dict) and item.get(name) is not None
    ]
    keys: list[str | None] = [None] * len(data)
    for i, key in zip(present, match_keys(name, [data[i][name] for i in present]), strict=True):
        keys[i] = key
    return keys


def new_member(member_id: int) -> dict[str, Any]:
    """A member as MAAC keeps it: ``tags`` (names) and when each was first attached."""
    now = _now_iso()
    return {
        "member_id": member_id,
        "tags": set(),
        "tagged_at": {},
        "status": "follow",
        "created_at": now,
        "updated_at": now,
    }


def attach(member: dict[str, Any], name: str) -> None:
    """Attach a tag (an import or ``POST /taglinemember/``); ``tagged_at`` keeps the first time
    (maac-openapi.md: "the time the tag was first attached to this member")."""
    if name not in member["tags"]:
        member["tags"].add(name)
        member.setdefault("tagged_at", {})[name] = _now_iso()


def detach(member: dict[str, Any], name: str) -> None:
    """Remove a tag (``DELETE /taglinemember/``): no longer one of the member's valid tags."""
    member["tags"].discard(name)
    member.setdefault("tagged_at", {}).pop(name, None)


def member_view(
    member: dict[str, Any], tag_since: str | None, tag_until: str | None
) -> dict[str, Any]:
    """A member list item (maac-openapi.md, 取得聯絡人列表): ``tags`` and ``tags_detail``;
    ``tag_since`` / ``tag_until`` (dates) keep only tags attached between them (``all_tag=0``)."""
    times = member.get("tagged_at", {})
    names = [
        n
        for n in sorted(member["tags"])
        if (tag_since is None or times.get(n, "")[:10] >= tag_since)
        and (tag_until is None or times.get(n, "")[:10] <= tag_until)
    ]
    view = {
        name: member.get(name) for name in (*IMPORT_KEYS, "line_display_name", "gender", "birthday")
    }
    view.update(
        display_name=member.get("line_display_name"),
        tags=names,
        tags_detail=[{"name": n, "tagged_at": times.get(n)} for n in names],
        status=member.get("status", "follow"),
        updated_at=member.get("updated_at"),
        created_at=member.get("created_at"),
        blocked_at=None,
    )
    return view


def _member_errors(data: list[Any], import_key: str) -> dict[str, Any]:
    """The counts MAAC reports for a failed import (``success: false``)."""
    counts = {
        "blank_error": 0,
        "gender_error": 0,
        "mobile_error": 0,
        "birthday_error": 0,
        "duplicate_error": 0,
    }
    useless: set[str] = set()
    seen: set[str] = set()
    for item, key in zip(data, _keys_of(data, import_key), strict=True):
        if not isinstance(item, dict):
            counts["blank_error"] += 1
            continue
        useless |= set(item) - ITEM_FIELDS
        if not key:
            counts["blank_error"] += 1
        elif key in seen:
            counts["duplicate_error"] += 1
        else:
            seen.add(key)
        gender = item.get("gender")
        if gender not in (None, "", "male", "female"):
            counts["gender_error"] += 1
        mobile = item.get("mobile")
        if mobile not in (None, "") and not (
            E164.fullmatch(str(mobile)) or LOCAL_MOBILE.fullmatch(str(mobile))
        ):
            counts["mobile_error"] += 1
        birthday = item.get("birthday")
        if birthday not in (None, "") and not is_birthday(str(birthday)):
            counts["birthday_error"] += 1
        tags = item.get("tags")
        if tags is not None and not (
            isinstance(tags, list) and all(isinstance(t, str) for t in tags)
        ):
            useless.add("tags")
    failed = any(counts.values()) or bool(useless)
    return (
        {"success": not failed, **counts, "miss_fields": [], "useless_fields": sorted(useless)}
        if failed
        else {}
    )


def _apply_import(
    store: MaacStore,
    import_key: str,
    data: list[dict[str, Any]],
    tags: list[str],
    mismatched_uids: list[str] | None = None,
) -> dict[str, int]:
    """Apply an import; ``mismatched_uids`` collects the line_uid of each mismatched member."""
    created = updated = mismatched = 0
    mismatched_uids = mismatched_uids if mismatched_uids is not None else []
    keyed = {name: _keys_of(data, name) for name in IMPORT_KEYS}
    for n, item in enumerate(data):
        key_value = keyed[import_key][n]
        member_id = store.by_key[import_key].get(key_value or "")
        uid = item.get("line_uid")
        if member_id is None and import_key != "line_uid" and uid:
            member_id = store.by_key["line_uid"].get(str(uid))
        if member_id is None:
            if not uid or not LINE_UID.fullmatch(str(uid)) or uid in store.blocked_uids:
                mismatched += 1  # MAAC members are LINE friends: no valid, unblocked UID, no member
                mismatched_uids.append(str(uid or ""))
                continue
            member_id = store.new_id()
            store.members[member_id] = new_member(member_id)
            created += 1
        else:
            if store.members[member_id].get("line_uid") in store.blocked_uids:
                mismatched += 1
                mismatched_uids.append(str(store.members[member_id]["line_uid"]))
                continue
            updated += 1
        member = store.members[member_id]
        for name in MEMBER_FIELDS:
            value = item.get(name)
            if value not in (None, ""):
                old = member.get(name)
                if name in IMPORT_KEYS and old is not None and old != value:
                    store.by_key[name].pop(match_key(name, old), None)
                member[name] = value
                if name in IMPORT_KEYS:
                    store.by_key[name][keyed[name][n] or ""] = member_id
        for name in (*tags, *(item.get("tags") or [])):
            if name not in store.tag_ids:  # an import creates the tags it names
                store.tag_ids[name] = store.new_id()
            attach(member, name)
        member["updated_at"] = _now_iso()
    store.imported_rows += len(data)
    return {"created_num": created, "updated_num": updated, "mismatch_num": mismatched}


def _segment_uids(raw: bytes) -> tuple[list[str] | None, str | None]:
    """LINE UIDs from an uploaded CSV (a ``line_uid`` header is optional), or an error."""
    if len(raw) > SEGMENT_MAX_BYTES:
        return None, "The file is larger than 25MB."
    text = raw.decode("utf-8-sig", errors="replace")
    uids: list[str] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not row[0].strip():
            continue
        value = row[0].strip()
        if number == 1 and value == "line_uid":
            continue
        if not LINE_UID.fullmatch(value):
            return None, f"Invalid line uid at line {number}."
        uids.append(value)
    if len(uids) > SEGMENT_MAX_UIDS:
        return (
            None,
            f"The file has {len(uids)} line uids; at most {SEGMENT_MAX_UIDS} are supported.",
        )
    if not uids:
        return None, "The file has no line uid."
    return list(dict.fromkeys(uids)), None


def _page_start(token: str | None) -> int:
    """The offset a list's ``start`` token stands for (0 without one); ``ValueError`` for a
    token that is not one."""
    return int(base64.urlsafe_b64decode(token).decode()) if token else 0


def _page(found: list[Any], start: int, size: int) -> tuple[list[Any], str | None]:
    """One page of a MAAC list: ``found`` from offset ``start``, at most ``size`` items, and its
    ``next`` token (the next page's offset, base64; None on the last page), which the client
    passes back as ``start``."""
    after = start + size
    token = base64.urlsafe_b64encode(str(after).encode()).decode() if after < len(found) else None
    return found[start:after], token


def store_of(sandbox: Sandbox) -> MaacStore:
    return sandbox.store("maac", MaacStore)


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    store = store_of(sandbox)

    def authorized(request: Request) -> Response | None:
        if not sandbox.bearer_ok(request, "maac"):
            return _error(401, "Invalid token.")
        return None

    async def member_import(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        raw = await request.body()
        if len(raw) > IMPORT_MAX_BYTES:
            return _error(413, "Request body exceeds 10MB.")
        now = time.monotonic()
        with sandbox.lock:
            running = [t for t in store.tasks.values() if t.finish_at > now]
        if running:
            return _error(429, "Only one member import can run at a time.")
        if (
            limited := sandbox.too_many(
                "maac:import", IMPORT_PER_MINUTE, 60, {"detail": "Request was throttled."}
            )
        ) is not None:
            return limited
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "JSON parse error.")
        if not isinstance(body, dict):
            return _error(400, {"non_field_errors": ["Invalid data."]})
        import_key = body.get("import_key")
        if import_key not in IMPORT_KEYS:
            return _error(400, {"import_key": [f'"{import_key}" is not a valid choice.']})
        data = body.get("data")
        if not isinstance(data, list) or not data:
            return _error(400, {"data": ["This field is required."]})
        if len(data) > IMPORT_MAX_MEMBERS:
            return _error(
                400,
                {"data": [f"Ensure this field has no more than {IMPORT_MAX_MEMBERS} elements."]},
            )
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return _error(400, {"tags": ["Expected a list of items."]})
        uids: list[str] = []
        with sandbox.lock:
            task_id = store.new_id()
            result = _member_errors(data, import_key)
            if not result:
                started = _now_iso()  # before any tag it attaches: tagged_at >= start_time
                counts = _apply_import(store, import_key, data, tags, uids)
                result = {
                    "tags": tags,
                    "success": True,
                    "total_num": len(data),
                    **counts,
                    "mismatch_export_link": None,
                    "start_time": started,
                    "end_time": _now_iso(),
                }
                if import_key == "line_uid" and counts["mismatch_num"]:
                    # A public file, as MAAC's storage.googleapis.com links are: no token.
                    base = str(request.base_url).rstrip("/")
                    result["mismatch_export_link"] = (
                        f"{base}/_sandbox/maac/export_member/{task_id}.csv"
                    )
            duration = sandbox.job_seconds * (1 + len(data) / IMPORT_MAX_MEMBERS)
            store.tasks[task_id] = ImportTask(
                task_id, now, now + duration, _now_iso(), result, uids
            )
        return JSONResponse({"id": task_id, "result": "start importing"})

    async def import_status(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        task = store.tasks.get(int(request.path_params["task_id"]))
        if task is None:
            return _error(404, "Not found.")
        elapsed = time.monotonic() - task.created
        body: dict[str, Any] = {
            "category": "import_member",
            "created_at": task.created_at,
            "updated_at": _now_iso(),
        }
        if time.monotonic() >= task.finish_at:
            body.update(status="done", result=task.result)
        else:
            body["status"] = (
                "pending" if elapsed < (task.finish_at - task.created) / 3 else "processing"
            )
        return JSONResponse(body)

    async def mismatch_file(request: Request) -> Response:
        """The mismatched members of a done import task (a ``line_uid`` column), as the file
        ``mismatch_export_link`` names (maac-openapi.md: only for imports by line_uid)."""
        task = store.tasks.get(int(request.path_params["task_id"]))
        if task is None or not task.mismatched or time.monotonic() < task.finish_at:
            return PlainTextResponse("Not found.", status_code=404)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["line_uid"])
        writer.writerows([uid] for uid in task.mismatched)
        return PlainTextResponse(out.getvalue(), media_type="text/csv")

    async def list_members(request: Request) -> Response:
        """``GET /openapi/v1/member/`` with the spec's filters (one value each), 300 a page;
        items carry ``tags`` and ``tags_detail`` (name, tagged_at). A bad filter value is a 400
        naming it; unknown parameters are ignored."""
        if (denied := authorized(request)) is not None:
            return denied
        query = {k: request.query_params[k] for k in MEMBER_FILTERS if k in request.query_params}
        problems: dict[str, list[str]] = {}
        if "member_id" in query and not query["member_id"].isdigit():
            problems["member_id"] = ["Enter a whole number."]
        if query.get("all_tag", "0") not in ALL_TAG_CHOICES:
            problems["all_tag"] = ["Select a valid choice. It is not one of 0, 1."]
        if "status" in query and query["status"] not in MEMBER_STATUSES:
            problems["status"] = ["Select a valid choice."]
        for name in ("updated_at_min", "updated_at_max"):
            if name in query:
                try:
                    ok = bool(DATE_FILTER.fullmatch(query[name])) and bool(
                        datetime.strptime(query[name], "%Y-%m-%d")
                    )
                except ValueError:
                    ok = False
                if not ok:
                    problems[name] = ["Enter a valid date."]
        if problems:
            return _error(400, problems)
        try:
            start = _page_start(query.get("start"))
        except ValueError:
            return _error(404, "Invalid cursor.")
        low, high = query.get("updated_at_min"), query.get("updated_at_max")
        with sandbox.lock:
            found = []
            members = list(store.members.items())
            keyed = {  # each filtered key: its members' keys (one Arrow call) and the query's
                name: (_keys_of([m for _, m in members], name), match_key(name, query[name]))
                for name in IMPORT_KEYS
                if name in query
            }
            for n, (member_id, member) in enumerate(members):
                if "member_id" in query and member_id != int(query["member_id"]):
                    continue
                if any(keys[n] is None or keys[n] != wanted for keys, wanted in keyed.values()):
                    continue
                if "status" in query and member.get("status", "follow") != query["status"]:
                    continue
                updated = str(member.get("updated_at", ""))[:10]
                if (low and updated < low) or (high and updated > high):
                    continue
                every = query.get("all_tag") == "1"
                found.append(member_view(member, None if every else low, None if every else high))
        page, token = _page(found, start, MEMBER_PAGE_SIZE)
        return JSONResponse({"results": page, "next": token})

    async def list_tags(request: Request) -> Response:
        """``GET /openapi/v1/tag/{?name,start}``: tags (id, name, available_days), 300 a page."""
        if (denied := authorized(request)) is not None:
            return denied
        name = request.query_params.get("name")
        start = _page_start(request.query_params.get("start"))
        with sandbox.lock:
            found = [
                {"id": i, "name": n, "available_days": None}
                for n, i in store.tag_ids.items()
                if not name or name.lower() in n.lower()
            ]
        page, token = _page(found, start, PAGE_SIZE)
        return JSONResponse({"results": page, "next": token})

    async def tag_member(request: Request) -> Response:
        """``POST`` / ``DELETE /openapi/v1/taglinemember/`` with ``{"tag_id", "line_uid"}``:
        tag a member, or remove a tag from a member (204)."""
        if (denied := authorized(request)) is not None:
            return denied
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "JSON parse error.")
        if not isinstance(body, dict) or not isinstance(body.get("tag_id"), int):
            return _error(400, {"tag_id": ["This field is required (a number)."]})
        uid = body.get("line_uid")
        if not isinstance(uid, str) or not LINE_UID.fullmatch(uid):
            return _error(400, {"line_uid": ["A LINE UID of 33 characters is required."]})
        with sandbox.lock:
            names = [n for n, i in store.tag_ids.items() if i == body["tag_id"]]
            member_id = store.by_key["line_uid"].get(uid)
            if not names or member_id is None:
                return _error(404, "Not found.")
            member = store.members[member_id]
            if request.method == "DELETE":
                detach(member, names[0])
                store.tag_removals += 1
                return Response(status_code=204)
            attach(member, names[0])
        return JSONResponse(
            {
                "tag_id": body["tag_id"],
                "line_uid": uid,
                "created_at": _now_iso(),
                "expired_at": "9999-12-31T23:59:59+08:00",
            },
            status_code=201,
        )

    async def list_segments(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        name = request.query_params.get("name")
        start = _page_start(request.query_params.get("start"))
        with sandbox.lock:
            found = [
                s for s in store.segments.values() if not name or name.lower() in s.name.lower()
            ]
        page, token = _page(found, start, PAGE_SIZE)
        return JSONResponse({"results": [s.view() for s in page], "next": token})

    async def one_segment(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        segment = store.segments.get(int(request.path_params["segment_id"]))
        if segment is None:
            return _error(404, "Not found.")
        if request.method == "DELETE":
            with sandbox.lock:
                store.segments.pop(segment.id, None)
            return Response(status_code=204)
        return JSONResponse(segment.view())

    async def segment_members(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        segment = store.segments.get(int(request.path_params["segment_id"]))
        if segment is None:
            return _error(404, "Not found.")
        text = "line_uid\n" + "".join(f"{u}\n" for u in segment.uids)
        return PlainTextResponse(text, media_type="text/csv")

    async def create_custom_segment(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        form = await request.form(max_part_size=SEGMENT_MAX_BYTES + 1)
        name = str(form.get("name") or "").strip()
        upload = form.get("file")
        if not name:
            return _error(400, {"name": ["This field is required."]})
        if upload is None or isinstance(upload, str):
            return _error(400, {"file": ["No file was submitted."]})
        uids, problem = _segment_uids(await upload.read())
        if problem:
            return _error(400, {"file": [problem]})
        with sandbox.lock:
            if len(store.segments) >= SEGMENT_QUOTA:
                return _error(400, "Segment quota exceeded (30 per account).")
            segment = Segment(
                store.new_id(),
                name,
                str(form.get("description") or ""),
                uids or [],
                time.monotonic() + sandbox.job_seconds,
                None,
            )
            store.segments[segment.id] = segment
        return JSONResponse(segment.view(), status_code=201)

    async def update_custom_segment(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        segment = store.segments.get(int(request.path_params["segment_id"]))
        if segment is None:
            return _error(404, "Not found.")
        form = await request.form(max_part_size=SEGMENT_MAX_BYTES + 1)
        if not any(k in form for k in ("name", "description", "file")):
            return _error(
                400, {"non_field_errors": ["One of name, description or file is required."]}
            )
        upload = form.get("file")
        uids = None
        if upload is not None and not isinstance(upload, str):
            uids, problem = _segment_uids(await upload.read())
            if problem:
                return _error(400, {"file": [problem]})
        with sandbox.lock:
            if form.get("name"):
                segment.name = str(form["name"])
            if "description" in form:
                segment.description = str(form["description"])
            if uids is not None:
                segment.uids = uids
                segment.ready_at = time.monotonic() + sandbox.job_seconds
            segment.updated = _now_iso()
        return JSONResponse(segment.view())

    return [
        Route("/openapi/v1/member/import/", member_import, methods=["POST"]),
        Route("/openapi/v1/member/import/{task_id:int}/", import_status, methods=["GET"]),
        Route("/_sandbox/maac/export_member/{task_id:int}.csv", mismatch_file, methods=["GET"]),
        Route(MEMBER_LIST_PATH, list_members, methods=["GET"]),
        Route("/openapi/v1/segment/", list_segments, methods=["GET"]),
        Route("/openapi/v1/tag/", list_tags, methods=["GET"]),
        Route("/openapi/v1/taglinemember/", tag_member, methods=["POST", "DELETE"]),
        Route("/openapi/v1/segment/{segment_id:int}/", one_segment, methods=["GET", "DELETE"]),
        Route("/openapi/v1/segment/{segment_id:int}/members/", segment_members, methods=["GET"]),
        Route("/openapi/v1/custom_segment/", create_custom_segment, methods=["POST"]),
        Route(
            "/openapi/v1/custom_segment/{segment_id:int}/", update_custom_segment, methods=["PATCH"]
        ),
    ]


def summary(sandbox: Sandbox) -> dict[str, Any]:
    store = store_of(sandbox)
    with sandbox.lock:
        tagged: dict[str, int] = {}
        for member in store.members.values():
            for tag in member["tags"]:
                tagged[tag] = tagged.get(tag, 0) + 1
        return {
            "members": len(store.members),
            "imports": len(store.tasks),
            "rows_imported": store.imported_rows,
            "members_by_tag": dict(sorted(tagged.items())),
            "segments": {s.name: len(s.uids) for s in store.segments.values()},
        }
