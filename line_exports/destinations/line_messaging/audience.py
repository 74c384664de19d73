"""Audience target: upload IDs to a LINE audience (``manage-audience.yml``).

IDs go up as JSON (at most 10,000 a request) or as a text file on ``api-data.line.me`` (at most
1,500,000 a file), whichever needs fewer requests; an upload whose create answer is lost is never
repeated blindly (see :func:`create_audience`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from line_exports.destination import (
    DeliveryFailed,
    DeliveryReport,
    ExportRun,
    NothingSent,
    ValidRows,
    content_key,
    release_arrow_memory,
)
from line_exports.destinations.line_messaging.client import (
    LineMessagingClient,
    UploadJobsFailed,
    retry_pause,
)
from line_exports.destinations.line_messaging.settings import (
    AUDIENCE_FILE_MAX_IDS,
    AUDIENCE_JSON_MAX_IDS,
    LineMessagingSettings,
)
from line_exports.http import ApiError, may_have_acted
from line_exports.ledger_request import LedgerRequest, pending_record
from line_exports.outcomes import DELIVERY_UNKNOWN, EARLIER_ANSWER, REQUEST_REFUSED, Earlier
from line_exports.rules import ROW_NUMBER, reject


@dataclass(frozen=True)
class IdFile:
    """One upload's IDs on disk: one ID per line, ``count`` lines, ``digest`` their SHA-256."""

    path: Path
    count: int
    digest: str


def id_files(rows: ValidRows, per_file: int, folder: Path) -> Iterator[IdFile]:
    """The valid IDs as upload files of at most ``per_file`` lines, written one at a time.

    Arrow writes each small spool batch straight to the file, hashing what it writes, so memory
    holds one batch (65,536 IDs), never a whole upload (1,500,000 IDs, ~51 MB, once held
    several times over while keyed, written and sent). The caller deletes each file before
    asking for the next.
    """
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    for part, pieces in itertools.groupby(_id_pieces(rows, per_file), key=lambda p: p[0]):
        path = folder / f"audience-{part}.txt"
        digest = hashlib.sha256()
        count = 0
        with path.open("wb") as out:
            for _, ids in pieces:
                sink = pa.BufferOutputStream()
                pa_csv.write_csv(pa.table({"id": ids}), sink, write_options=options)
                lines = sink.getvalue()
                digest.update(lines)
                out.write(lines)
                count += len(ids)
        release_arrow_memory()
        yield IdFile(path, count, digest.hexdigest())


def row_numbers(rows: ValidRows, start: int, count: int) -> list[int]:
    """Row numbers of the valid rows ``start`` .. ``start + count`` (spool order): the rows of
    the upload files that hold them (read again only when an upload fails)."""
    found: list[int] = []
    seen = 0
    for batch in rows.record_batches([ROW_NUMBER]):
        numbers = batch.column(0).to_pylist()
        low, high = max(start - seen, 0), min(start + count - seen, len(numbers))
        if low < high:
            found.extend(int(n) for n in numbers[low:high])
        seen += len(numbers)
        if seen >= start + count:
            break
    return found


def _id_pieces(rows: ValidRows, per_file: int) -> Iterator[tuple[int, pa.Array]]:
    """(file number, IDs) in order, cut so that no piece spans two files."""
    done = 0
    for batch in rows.record_batches(["id"]):
        ids = batch.column(0)
        start = 0
        while start < len(ids):
            take = min(per_file - done % per_file, len(ids) - start)
            yield done // per_file, ids.slice(start, take)
            start += take
            done += take


def deliver_audience(
    client: LineMessagingClient,
    settings: LineMessagingSettings,
    rows: ValidRows,
    run: ExportRun,
    exclude: frozenset[int] | None = None,
) -> DeliveryReport:
    """Upload the rows' IDs to the audience; with ``exclude`` (a mirror rebuild) to a new
    audience of the same name, never to one of the ``exclude`` audiences it replaces."""
    report = run.new_report()
    total = rows.count
    name = settings.audience_name
    if total == 0:
        run.log.info(
            "no valid IDs: no audience created or changed (an empty audience never becomes READY)"
        )
        report.metadata.update(audience_ids_uploaded=0, upload_requests=0)
        return report
    by_file = (
        total > AUDIENCE_JSON_MAX_IDS
    )  # JSON needs ceil(n/10,000) requests, a file ceil(n/1,500,000)
    chunk = AUDIENCE_FILE_MAX_IDS if by_file else AUDIENCE_JSON_MAX_IDS
    audience_id, action = find_audience(client, settings, run, exclude)
    created_key = _created_key(settings, exclude)
    jobs: dict[str, tuple[int, int]] = {}  # upload job's description: (first row, rows)
    job_keys: dict[str, tuple[str, int]] = {}  # its description: (ledger key, earlier FAILED)
    uploads = 0
    # One upload's IDs at a time go to a file in the run's work dir (next to the spool),
    # deleted once sent: memory stays flat however many IDs there are.
    for part, ids in enumerate(id_files(rows, chunk, rows.path.parent)):
        try:
            key = content_key(
                "audience-upload",
                settings.use_audience_id and settings.audience_id,
                name,
                settings.is_ifa_audience,
                part,
                ids.digest,
                *(["rebuild"] if exclude is not None else []),
            )
            request = LedgerRequest.look_up(run.ledger, key)
            # An upload whose job LINE ended FAILED is sent again under a new description:
            # the failed job keeps the old one in the audience's job list.
            failures = int((request.pending or {}).get(JOB_FAILED, 0))
            again = f" (upload {failures + 1})" if failures else ""
            # The run's scope (tick, partition or run) is in it: LINE lists an audience's
            # earlier jobs too, and a job another tick made of the same IDs is not this one's
            # (VERIFY-13o G1: an earlier tick's FAILED job was read as every later tick's).
            ours = content_key(run.ledger.scope, key)[:16]
            job = f"line_exports {run.name} {ours}"[: 300 - len(again)] + again
            if (done := request.result) is not None:
                report.resumed_rows += ids.count
                audience_id = audience_id or int(done["audience_id"])
                job = str(done["job"])
                jobs[job] = (part * chunk, ids.count)
                job_keys[job] = (key, int(done.get(JOB_FAILED, 0)))
            else:

                def upload(target: int | None, ids: IdFile = ids, job: str = job) -> dict[str, Any]:
                    if by_file:
                        return client.upload_file(
                            ids.path,
                            audience_id=target,
                            name=name,
                            is_ifa=settings.is_ifa_audience,
                            job=job,
                        )
                    return client.upload_json(
                        ids.path.read_text().splitlines(),
                        audience_id=target,
                        name=name,
                        is_ifa=settings.is_ifa_audience,
                        job=job,
                    )

                # No audience of that name (looked up by name) rules out no earlier create that
                # got a 5xx or no answer: LINE may still act on it (a 504's backend may finish
                # after the lookup; README "One rule").
                # a step retry knows what this attempt got (a 5xx...)
                request.sending(**({JOB_FAILED: failures} if failures else {}))
                # A second signal cutting it off: its IDs unknown once a request went out
                # (run.sending), the uploads LINE took before it too (_uploaded_on_stop).
                cut = row_numbers(rows, part * chunk, ids.count)
                try:
                    with (
                        run.sending(
                            cut,
                            "id",
                            "LINE",
                            client.http.stats,
                            request.earlier_unanswered,
                            request.not_started,
                        ),
                        _uploaded_on_stop(run, report, rows),
                    ):
                        if audience_id is None:
                            audience_id, uploaded = create_audience(
                                client, settings, run, upload, exclude, request
                            )
                            uploads += uploaded
                            action = "created"
                            run.ledger.record(created_key, {"audience_id": audience_id})
                        else:
                            upload(audience_id)
                            uploads += 1
                except ApiError as exc:
                    # The one rule (outcomes.fate_of): a 4xx -> refused with its answer; a 5xx
                    # or no answer (in this or an earlier step attempt) -> unknown; never
                    # reached -> unsent. The run stops here.
                    fate = request.count_failed(report, cut, "id", exc, "LINE")
                    raise DeliveryFailed(
                        f"LINE audience upload stopped the run: {fate.reason}",
                        report,
                        retryable=exc.retryable,
                    ) from None
                request.succeeded({"audience_id": audience_id, "job": job, JOB_FAILED: failures})
                jobs[job] = (part * chunk, ids.count)
                job_keys[job] = (key, failures)
        finally:
            ids.path.unlink(missing_ok=True)
        report.sent_rows += ids.count
        with _uploaded_on_stop(run, report, rows):
            run.progress(report.sent_rows)
    assert audience_id is not None
    try:
        with _uploaded_on_stop(run, report, rows):  # each poll: a first signal stops the wait
            final = client.wait_audience(
                audience_id, set(jobs), between=lambda: run.progress(report.sent_rows)
            )
    except UploadJobsFailed as exc:
        # Only the rows of the jobs LINE failed are refused; the others joined the audience.
        # A failed job's upload is no longer done in the ledger: a re-run of the same scope
        # sends its IDs again (as sync_mode diff / mirror send refused rows again).
        for job in exc.failed:
            numbers = row_numbers(rows, *jobs[job])
            report.refused.append(reject(numbers, "id", REQUEST_REFUSED, exc.reason(job)))
            key, failures = job_keys[job]
            answer = f"upload job FAILED: {exc.failed[job]}"
            run.ledger.record(
                key, pending_record(None, **{EARLIER_ANSWER: answer}, **{JOB_FAILED: failures + 1})
            )
        if report.refused_rows >= report.sent_rows:
            raise DeliveryFailed(str(exc), report) from None
        final = exc.audience
    except ApiError as exc:
        # Sent and taken as upload jobs: a job LINE reports FAILED refused them; otherwise
        # (no READY in time, an unreadable state) what LINE did with them is unknown.
        numbers = row_numbers(rows, 0, report.sent_rows)
        if "upload failed" in str(exc):
            report.refused.append(reject(numbers, "id", REQUEST_REFUSED, f"LINE: {exc}"))
        else:
            reason = f"LINE took the upload; its state could not be read ({exc})"
            report.unknown.append(reject(numbers, "id", DELIVERY_UNKNOWN, reason))
        raise DeliveryFailed(str(exc), report, retryable=exc.retryable) from None
    group = final.get("audienceGroup", {})
    report.accepted_rows = report.sent_rows - report.refused_rows
    report.job_ids.append(str(audience_id))
    report.metadata.update(
        {
            "audience_id": audience_id,
            "audience_name": str(group.get("description", name or "")),
            "audience_action": action,
            "audience_count": int(group.get("audienceCount") or 0),
            "audience_ids_uploaded": report.sent_rows,
            "upload_method": "file (api-data)" if by_file else "json",
            "upload_requests": uploads,
            "is_ifa_audience": settings.is_ifa_audience,
        }
    )
    return report


JOB_FAILED = "jobs_failed"
"""Ledger record field of an upload: how many of its upload jobs LINE ended FAILED before (a
pending record after a FAILED job: its IDs are sent again, under a new job description)."""


def _uploaded_on_stop(
    run: ExportRun, report: DeliveryReport, rows: ValidRows
) -> AbstractContextManager[None]:
    """A signal (the first: :class:`DeliveryInterrupted`; a second, at once) after LINE took
    uploads but before it said the audience READY: the rows uploaded are of unknown delivery
    (VERIFY-13i F4, VERIFY-13k F4/F5: they were counted nowhere), then the stop goes on
    (:meth:`ExportRun.taken`)."""
    reason = "LINE took the upload; the run stopped before LINE said the audience READY"
    return run.taken(lambda: row_numbers(rows, 0, report.sent_rows), "id", reason)


def create_audience(
    client: LineMessagingClient,
    settings: LineMessagingSettings,
    run: ExportRun,
    upload: Callable[[int | None], dict[str, Any]],
    exclude: frozenset[int] | None = None,
    request: LedgerRequest | None = None,
) -> tuple[int, int]:
    """Create the audience with its first IDs: (audience id, upload requests made).

    A create whose answer is lost (timeout, dropped connection, 5xx) may still have created
    the audience, so it is never repeated blindly: after each such failure the audience is
    looked up by name, and if it exists the same IDs are added to it (adding an ID twice
    changes nothing); only if it does not exist is the create sent again.

    Raises the last create's :class:`ApiError`, its ``unanswered`` and ``server_errors``
    counting the earlier creates (after each, the lookup found nothing; that rules none out:
    :func:`~line_exports.outcomes.fate_of`). When
    the lookup finds the audience, an earlier create made it: ``request``'s earlier attempts
    then count as having acted, for the add that follows.
    """
    requests, retry = 0, client.http.retry
    unanswered = server_errors = 0
    for attempt in range(retry.max_retry + 1):
        try:
            requests += 1
            return int(upload(None)["audienceGroupId"]), requests
        except ApiError as exc:
            exc.unanswered, exc.server_errors = unanswered, server_errors
            if not exc.retryable or attempt == retry.max_retry:
                raise
            unanswered += exc.status is None and exc.reached
            server_errors += exc.status is not None and may_have_acted(exc.status)
            client.http.stats.retries += 1
            run.log.warning(
                f"creating audience {settings.audience_name!r} failed ({exc}); checking whether it exists"
            )
            client.http.backoff(retry_pause(retry, attempt, exc.retry_after), exc)
            found, _ = find_audience(client, settings, run, exclude)
            if found is not None:
                if request is not None:  # a create made it: those attempts acted
                    made = Earlier(unanswered, server_errors)
                    request.earlier_unanswered = made.plus(request.earlier_unanswered)
                requests += 1
                upload(found)
                return found, requests
    raise AssertionError("unreachable")


def _created_key(settings: LineMessagingSettings, exclude: frozenset[int] | None) -> str:
    parts = ["audience-created", settings.audience_name, settings.is_ifa_audience]
    return content_key(*parts, *(["rebuild"] if exclude is not None else []))


def find_audience(
    client: LineMessagingClient,
    settings: LineMessagingSettings,
    run: ExportRun,
    exclude: frozenset[int] | None = None,
) -> tuple[int | None, str]:
    """The audience to add to (id, 'added'), or (None, 'created') when one must be created.
    Audiences in ``exclude`` (those a mirror rebuild replaces) are never chosen."""
    if settings.use_audience_id:
        assert settings.audience_id is not None
        try:
            group = client.audience(settings.audience_id).get("audienceGroup", {})
        except ApiError as exc:
            if exc.status in (400, 404):
                raise NothingSent(
                    f"LINE audience {settings.audience_id} was not found: {exc}"
                ) from None
            raise
        check_writable(group, settings)
        return settings.audience_id, "added"
    created = run.ledger.done(_created_key(settings, exclude))
    if created is not None:
        return int(created["audience_id"]), "created"
    usable = []
    for group in client.audiences_named(settings.audience_name or ""):
        if not writable(group) or group.get("status") == "EXPIRED":
            continue
        if exclude is not None and int(group["audienceGroupId"]) in exclude:
            continue
        usable.append(group)
    if not usable:
        return None, "created"
    group = max(usable, key=lambda g: int(g.get("created") or 0))
    check_writable(group, settings)
    if len(usable) > 1:
        run.log.warning(
            f"{len(usable)} audiences are named {settings.audience_name!r}; adding to the newest, #{group['audienceGroupId']}"
        )
    return int(group["audienceGroupId"]), "added"


def writable(group: dict[str, Any]) -> bool:
    """An upload audience this channel may add to. ``permission`` is optional in
    ``manage-audience.yml`` (``AudienceGroup``): only ``READ`` forbids writing."""
    return group.get("type") == "UPLOAD" and group.get("permission", "READ_WRITE") != "READ"


def check_writable(group: dict[str, Any], settings: LineMessagingSettings) -> None:
    ident = group.get("audienceGroupId")
    if not writable(group):
        raise NothingSent(
            f"LINE audience {ident} is not an upload audience this channel can write to"
        )
    if group.get("status") == "EXPIRED":
        raise NothingSent(f"LINE audience {ident} has expired (180 days); use a new audience")
    if bool(group.get("isIfaAudience")) != settings.is_ifa_audience:
        holds = "IFAs" if group.get("isIfaAudience") else "LINE user IDs"
        raise NothingSent(
            f"LINE audience {ident} holds {holds} but is_ifa_audience is "
            f"{str(settings.is_ifa_audience).lower()}; one audience cannot mix both"
        )
