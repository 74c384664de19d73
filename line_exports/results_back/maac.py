"""MAAC: what the member import tasks (or the custom segment) of a send came to.

Sources (``maac-general/maac-openapi.md``, help-cresclab/ProductSpecLibrary):

* ``GET /openapi/v1/member/import/{id}/``: a done task's ``result`` has ``total_num``,
  ``created_num``, ``updated_num``, ``mismatch_num`` (members that do not exist or blocked the
  account) and ``mismatch_export_link``, a public CSV of those members (imports by line_uid
  only). The file is fetched without MAAC's token (it is a storage link, not the API) and its
  rows are counted.
* ``GET /openapi/v1/segment/{id}/``: a segment's ``status`` and ``member_count``.

Match rate: members MAAC created or updated over members sent (``created_num + updated_num``
over ``total_num``); for a segment, ``member_count`` over the UIDs sent.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import requests

from line_exports.destinations.maac import MaacClient, MaacResource
from line_exports.destinations.maac_mismatch import mismatch_uids
from line_exports.http import ApiError
from line_exports.results_back.observed import RETRY, Observed, SentExport


def observe(resource: MaacResource, sent: SentExport) -> Observed:
    observed = Observed()
    client = resource.get_client(RETRY)
    if sent.get("segment_id") is not None:
        segment_id = int(sent.get("segment_id"))
        path = f"/openapi/v1/segment/{segment_id}/"
        segment = _get(client, path, "segment_get", f"segment {segment_id}", observed)
        if segment is None:
            return observed
        members = int(segment.get("member_count") or 0)
        observed.metadata.update(
            {
                "segment_status": str(segment.get("status")),
                "segment_member_count": dg.MetadataValue.int(members),
            }
        )
        # UIDs the segment was written with, by this run or an earlier one it resumed
        uids = int(sent.get("rows_sent") or 0) + int(sent.get("rows_resumed") or 0)
        if uids:
            observed.match_rate = members / uids
            observed.match_basis = f"{members:,} segment members of {uids:,} LINE UIDs sent"
        return observed
    totals = {"total_num": 0, "created_num": 0, "updated_num": 0, "mismatch_num": 0}
    links: list[str] = []
    tasks = [str(t) for t in (sent.get("api_job_ids") or [])]
    for task in tasks:
        path = f"/openapi/v1/member/import/{task}/"
        body = _get(client, path, "import_status", f"import task {task}", observed)
        if body is None:
            continue
        if body.get("status") != "done":
            observed.problems.append(f"import task {task} is {body.get('status')}, not done")
            continue
        result = body.get("result") or {}
        for name in totals:
            totals[name] += int(result.get(name) or 0)
        if result.get("mismatch_export_link"):
            links.append(str(result["mismatch_export_link"]))
    observed.metadata.update(
        {
            "import_tasks": dg.MetadataValue.int(len(tasks)),
            "import_total": dg.MetadataValue.int(totals["total_num"]),
            "import_created": dg.MetadataValue.int(totals["created_num"]),
            "import_updated": dg.MetadataValue.int(totals["updated_num"]),
            "import_mismatched": dg.MetadataValue.int(totals["mismatch_num"]),
        }
    )
    if links:
        rows = 0
        for link in links:
            try:
                rows += mismatch_rows(link)
            except (OSError, ValueError, requests.RequestException) as exc:
                observed.problems.append(f"mismatch file {link}: {exc}")
        observed.metadata["mismatch_rows"] = dg.MetadataValue.int(rows)
        observed.metadata["mismatch_file"] = dg.MetadataValue.url(links[0])
        if len(links) > 1:
            observed.metadata["mismatch_files"] = dg.MetadataValue.json(links)
    if totals["total_num"]:
        matched = totals["created_num"] + totals["updated_num"]
        observed.match_rate = matched / totals["total_num"]
        observed.match_basis = (
            f"{matched:,} members created or updated of {totals['total_num']:,} imported"
        )
    return observed


def _get(
    client: MaacClient, path: str, endpoint: str, what: str, observed: Observed
) -> dict[str, Any] | None:
    """The JSON object MAAC answers to ``GET path`` (``endpoint``: its rate-limit bucket); None
    when the call failed, with ``what: <the API error>`` in ``observed.problems``."""
    try:
        return client.http.request("GET", path, endpoint=endpoint).json()
    except ApiError as exc:
        observed.problems.append(f"{what}: {exc}")
        return None


def mismatch_rows(link: str) -> int:
    """Data rows of a mismatch CSV (:func:`~line_exports.destinations.maac_mismatch.mismatch_uids`)."""
    return len(mismatch_uids(link))
