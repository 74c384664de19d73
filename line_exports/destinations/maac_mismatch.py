"""MAAC's mismatch file: the members an import task did not match (not a member, or blocked).

A done import task's ``result`` (``GET /openapi/v1/member/import/{task_id}/``,
``maac-general/maac-openapi.md``) counts them in ``mismatch_num`` ("不存在(已封鎖)之用戶數量":
members that do not exist, or blocked the account) and, for imports by ``line_uid`` only, links
their list in ``mismatch_export_link`` ("使用 line_uid 為比對欄位匯入才會有值"), a public storage
CSV. The delivery reads it to name the refused rows; results back reads it to count them.
"""

from __future__ import annotations

import csv
import io

import requests

from line_exports.http import is_loopback

MISMATCH_FILE_MAX_BYTES = 64 * 1024 * 1024
MISMATCH_FILE_TIMEOUT_SECONDS = 60


def mismatch_uids(link: str) -> list[str]:
    """The ``line_uid`` of each data row of a mismatch CSV (in file order, "" when a row has
    none). Fetched over HTTPS (plain HTTP only from this machine: the sandbox), without MAAC's
    token (a storage link, not the API), at most 64 MB. Raises ``ValueError`` for another
    scheme, a larger file or a file without a ``line_uid`` column, and ``requests``' errors
    when the fetch fails."""
    parts = requests.utils.urlparse(link)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname)):
        raise ValueError("not an https link; not fetched")
    body = bytearray()
    with requests.get(link, timeout=MISMATCH_FILE_TIMEOUT_SECONDS, stream=True) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=65_536):
            body += chunk
            if len(body) > MISMATCH_FILE_MAX_BYTES:
                raise ValueError(f"larger than {MISMATCH_FILE_MAX_BYTES:,} bytes; not read whole")
    rows = csv.reader(io.StringIO(body.decode("utf-8-sig", errors="replace")))
    header = [name.strip() for name in next(rows, [])]
    if "line_uid" not in header:
        raise ValueError(f"no line_uid column (columns: {', '.join(header) or 'none'})")
    column = header.index("line_uid")
    return [row[column].strip() if len(row) > column else "" for row in rows if row]
