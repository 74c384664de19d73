"""Audience endpoints of the sandbox (``manage-audience.yml``): upload jobs finish asynchronously."""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.identities import audience_name_key, normalize_ifa
from line_exports.sandbox.line_messaging.common import Api, _error, _invalid
from line_exports.sandbox.line_messaging.store import (
    AUDIENCE_CONCURRENT_JOBS,
    AUDIENCE_FILE_MAX,
    AUDIENCE_JSON_MAX,
    AUDIENCE_MAX,
    AUDIENCE_RETENTION_SECONDS,
    IFA,
    MAX_FILE_BYTES,
    USER_ID,
    Audience,
    Job,
)

JOB_FAILED_TYPES = frozenset({"INTERNAL_ERROR", "AUDIENCE_GROUP_AUDIENCE_INSUFFICIENT"})
"""``AudienceGroupJobFailedType`` (``manage-audience.yml``)."""


def routes(api: Api) -> list[BaseRoute]:
    sandbox, store = api.sandbox, api.store
    guard, json_body = api.guard, api.json_body

    def audience_error(message: str, detail: str, status: int = 400) -> JSONResponse:
        return _error(status, message, [{"message": detail}])

    def name_problem(name: Any) -> JSONResponse | None:
        if not isinstance(name, str) or not name.strip():
            return audience_error("audience group name is empty", "AUDIENCE_GROUP_NAME_EMPTY")
        if len(name) > 120:
            return audience_error("size over audienceGroupName", "AUDIENCE_GROUP_NAME_SIZE_OVER")
        if re.search(r"[\x00-\x1f\x7f]", name):
            return audience_error("invalid audienceGroupName", "AUDIENCE_GROUP_NAME_WRONG")
        return None

    def ids_problem(ids: list[str], is_ifa: bool, limit: int) -> JSONResponse | None:
        if len(ids) > limit:
            return audience_error(
                "too many audience ids", "UPLOAD_AUDIENCE_GROUP_TOO_MANY_AUDIENCE_IDS"
            )
        pattern = IFA if is_ifa else USER_ID
        for value in ids:
            if not pattern.fullmatch(value):  # one bad ID fails the whole request
                return audience_error(
                    "invalid audience id format", "UPLOAD_AUDIENCE_GROUP_INVALID_AUDIENCE_ID_FORMAT"
                )
        return None

    def add_job(audience: Audience, ids: list[str], description: str) -> Response | None:
        if audience.is_ifa:  # one device whatever the case of its hex digits (one definition)
            ids = [normalize_ifa(value) for value in ids]
        now = time.monotonic()
        running = sum(1 for j in audience.jobs if j.status(now) not in ("FINISHED", "FAILED"))
        if running >= AUDIENCE_CONCURRENT_JOBS:
            return _error(429, "The number of concurrent operations has exceeded the limit.")
        finish = now + sandbox.job_seconds * (1 + len(ids) / 1_000_000)
        failed_type = store.failing_upload_jobs.pop(0) if store.failing_upload_jobs else None
        audience.jobs.append(
            Job(store.new_id(), audience.id, description, now, finish, len(ids), ids, failed_type)
        )
        return None

    def create(name: Any, is_ifa: bool, ids: list[str], upload_description: str) -> Response:
        with sandbox.lock:
            if len(store.audiences) >= AUDIENCE_MAX:
                return audience_error(
                    "audience group count max over", "AUDIENCE_GROUP_COUNT_MAX_OVER"
                )
            audience = Audience(store.new_id(), name, is_ifa, int(time.time()))
            audience.permission = store.audience_permission
            store.audiences[audience.id] = audience
            if ids:
                add_job(audience, ids, upload_description)
            view = audience.view(time.monotonic())
        keep = (
            "audienceGroupId",
            "createRoute",
            "type",
            "description",
            "created",
            "permission",
            "expireTimestamp",
            "isIfaAudience",
        )
        return JSONResponse({k: view[k] for k in keep if k in view}, status_code=202)

    def add(audience_id: Any, ids: list[str], upload_description: str) -> Response:
        with sandbox.lock:
            audience = store.audiences.get(audience_id) if isinstance(audience_id, int) else None
            if audience is None:
                return audience_error("audience group not found", "AUDIENCE_GROUP_NOT_FOUND")
            if time.time() > audience.created + AUDIENCE_RETENTION_SECONDS:
                return audience_error(
                    "audience group expired", "AUDIENCE_GROUP_CAN_NOT_UPLOAD_STATUS_EXPIRED"
                )
            if (problem := ids_problem(ids, audience.is_ifa, AUDIENCE_FILE_MAX)) is not None:
                return problem
            if (busy := add_job(audience, ids, upload_description)) is not None:
                return busy
        return JSONResponse({}, status_code=202)

    async def upload_json(request: Request) -> Response:
        if (denied := guard(request, "audience")) is not None:
            return denied
        body, problem = await json_body(request)
        if problem is not None:
            return problem
        if not isinstance(body, dict):
            return _invalid("body")
        upload_description = body.get("uploadDescription") or ""
        if not isinstance(upload_description, str) or len(upload_description) > 300:
            return audience_error(
                "size over uploadDescription", "AUDIENCE_GROUP_UPLOAD_DESCRIPTION_SIZE_OVER"
            )
        audiences = body.get("audiences", [])
        if not isinstance(audiences, list) or not all(
            isinstance(a, dict) and isinstance(a.get("id"), str) for a in audiences
        ):
            return _invalid("audiences")
        if len(audiences) > AUDIENCE_JSON_MAX:
            return audience_error(
                "too many audience ids", "UPLOAD_AUDIENCE_GROUP_TOO_MANY_AUDIENCE_IDS"
            )
        ids = [a["id"] for a in audiences]
        if request.method == "POST":
            if set(body) - {"description", "isIfaAudience", "uploadDescription", "audiences"}:
                return _invalid(
                    sorted(
                        set(body)
                        - {"description", "isIfaAudience", "uploadDescription", "audiences"}
                    )[0]
                )
            if (bad := name_problem(body.get("description"))) is not None:
                return bad
            is_ifa = body.get("isIfaAudience", False)
            if not isinstance(is_ifa, bool):
                return _invalid("isIfaAudience")
            if (bad := ids_problem(ids, is_ifa, AUDIENCE_JSON_MAX)) is not None:
                return bad
            return create(body["description"], is_ifa, ids, upload_description)
        if set(body) - {"audienceGroupId", "uploadDescription", "audiences"}:
            return _invalid(
                sorted(set(body) - {"audienceGroupId", "uploadDescription", "audiences"})[0]
            )
        if not ids:
            return audience_error(
                "no valid audience ids", "UPLOAD_AUDIENCE_GROUP_NO_VALID_AUDIENCE_IDS"
            )
        return add(body.get("audienceGroupId"), ids, upload_description)

    async def upload_file(request: Request) -> Response:
        if (denied := guard(request, "audience")) is not None:
            return denied
        if request.headers.get("content-type", "").split(";")[0].strip() != "multipart/form-data":
            return _error(415, "The content type is not supported")
        form = await request.form(max_files=1, max_part_size=MAX_FILE_BYTES)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _invalid("file")
        if (upload.content_type or "").split(";")[0].strip() != "text/plain":
            return _error(415, "Unsupported media type: the file must be text/plain")
        upload_description = str(form.get("uploadDescription") or "")
        if len(upload_description) > 300:
            return audience_error(
                "size over uploadDescription", "AUDIENCE_GROUP_UPLOAD_DESCRIPTION_SIZE_OVER"
            )
        text = (await upload.read()).decode("utf-8", errors="replace")
        ids = [line.strip() for line in text.splitlines() if line.strip()]
        if not ids:
            return audience_error(
                "no valid audience ids", "UPLOAD_AUDIENCE_GROUP_NO_VALID_AUDIENCE_IDS"
            )
        if len(ids) > AUDIENCE_FILE_MAX:
            return audience_error(
                "too many audience ids", "UPLOAD_AUDIENCE_GROUP_TOO_MANY_AUDIENCE_IDS"
            )
        if request.method == "POST":
            if (bad := name_problem(form.get("description"))) is not None:
                return bad
            flag = str(form.get("isIfaAudience") or "false").lower()
            if flag not in ("true", "false"):
                return _invalid("isIfaAudience")
            if (bad := ids_problem(ids, flag == "true", AUDIENCE_FILE_MAX)) is not None:
                return bad
            return create(str(form["description"]), flag == "true", ids, upload_description)
        try:
            audience_id = int(str(form.get("audienceGroupId")))
        except ValueError:
            return _invalid("audienceGroupId")
        return add(audience_id, ids, upload_description)

    async def one_audience(request: Request) -> Response:
        if (denied := guard(request, "audience")) is not None:
            return denied
        audience_id = int(request.path_params["audience_id"])
        with sandbox.lock:
            audience = store.audiences.get(audience_id)
            if audience is None:
                return audience_error("audience group not found", "AUDIENCE_GROUP_NOT_FOUND")
            if request.method == "DELETE":
                del store.audiences[audience_id]
                return JSONResponse({})
            now = time.monotonic()
            view = audience.view(now)
            jobs = [
                {
                    "audienceGroupJobId": j.id,
                    "audienceGroupId": audience.id,
                    "description": j.description,
                    "type": "DIFF_ADD",
                    "jobStatus": j.status(now),
                    **({"failedType": j.failed_type} if j.status(now) == "FAILED" else {}),
                    "audienceCount": j.count,
                    "created": int(time.time()),
                }
                for j in reversed(audience.jobs[-50:])
            ]
        return JSONResponse({"audienceGroup": view, "jobs": jobs})

    async def list_audiences(request: Request) -> Response:
        if (denied := guard(request, "audience")) is not None:
            return denied
        try:
            page = int(request.query_params["page"])
            size = int(request.query_params.get("size", 20))
        except (KeyError, ValueError):
            return _invalid("page")
        if page < 1 or not 1 <= size <= 40:
            return _invalid("page" if page < 1 else "size")
        # "You can search for partial matches. This is case-insensitive" (manage-audience.yml)
        name = audience_name_key(request.query_params.get("description") or "")
        now = time.monotonic()
        with sandbox.lock:
            found = [
                a.view(now)
                for a in store.audiences.values()
                if name in audience_name_key(a.description)
            ]
        start = (page - 1) * size
        return JSONResponse(
            {
                "audienceGroups": found[start : start + size],
                "hasNextPage": start + size < len(found),
                "totalCount": len(found),
                "readWriteAudienceGroupTotalCount": len(found),
                "page": page,
                "size": size,
            }
        )

    async def fail_upload_jobs(request: Request) -> Response:
        """Admin: ``{"failedType": AudienceGroupJobFailedType, "jobs": n}``: the next ``n``
        upload jobs end FAILED with that type (``manage-audience.yml``: INTERNAL_ERROR,
        AUDIENCE_GROUP_AUDIENCE_INSUFFICIENT), their IDs never added."""
        body = await request.json()
        failed_type, jobs = body.get("failedType"), body.get("jobs", 1)
        if failed_type not in JOB_FAILED_TYPES or not isinstance(jobs, int) or jobs < 0:
            return _error(400, f"failedType must be one of {sorted(JOB_FAILED_TYPES)}")
        with sandbox.lock:
            store.failing_upload_jobs = [failed_type] * jobs
        return JSONResponse({"failing_upload_jobs": jobs})

    return [
        Route("/_sandbox/line_messaging/audience_job_failures", fail_upload_jobs, methods=["PUT"]),
        Route("/v2/bot/audienceGroup/upload", upload_json, methods=["POST", "PUT"]),
        Route("/v2/bot/audienceGroup/upload/byFile", upload_file, methods=["POST", "PUT"]),
        Route("/v2/bot/audienceGroup/list", list_audiences, methods=["GET"]),
        Route("/v2/bot/audienceGroup/{audience_id:int}", one_audience, methods=["GET", "DELETE"]),
    ]
