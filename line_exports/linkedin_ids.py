"""LinkedIn DMP Segment Users' ``userIds``: the ID types and the form of each ``idValue``.

One definition for the exporter's column rules (:mod:`line_exports.destinations.linkedin`) and
the sandbox that refuses what LinkedIn refuses (:mod:`line_exports.sandbox.linkedin`). Source:
LinkedIn Marketing API, Matched Audiences, "DMP Segment Users"
(learn.microsoft.com/linkedin/marketing/matched-audiences/create-and-manage-segment-users): a
user element carries ``userIds``, a list of ``{idType, idValue}`` that identify one member
(SHA256_EMAIL and SHA512_EMAIL: hex digests of 64 and 128 characters; GOOGLE_AID lower case;
APPLE_IDFA upper case), with optional matching info (firstName, lastName, ...).
"""

from __future__ import annotations

import re

GAID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
IDFA_PATTERN = r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"
ID_PATTERNS: dict[str, re.Pattern[str]] = {
    "SHA256_EMAIL": re.compile(r"[0-9a-f]{64}"),
    "SHA512_EMAIL": re.compile(r"[0-9a-f]{128}"),
    "GOOGLE_AID": re.compile(GAID_PATTERN),
    "APPLE_IDFA": re.compile(IDFA_PATTERN),
}
"""idType -> the full form of its idValue (``fullmatch``)."""

ID_COLUMNS = ("email", "google_aid", "apple_idfa")
"""The query columns that become ``userIds`` (email -> SHA256_EMAIL or SHA512_EMAIL): each
identifies a member on its own, so each is sent once per export and a member who left is
removed by the IDs no current row carries."""
