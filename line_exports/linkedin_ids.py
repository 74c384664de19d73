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
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow, numpy: imported on first use (the sandbox's light paths load neither)
    import numpy as np
    import pyarrow as pa

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

COMPANY_NAME = "company_name"
COMPANY_DOMAINS = ("company_website_domain", "company_email_domain")
"""The query columns that name a company (``companyName``, ``companyWebsiteDomain``,
``companyEmailDomain``): LinkedIn's DMP Segment Companies page matches a company by its name
or a domain ("A string representing the company's name", "The company website domain", "The
company email domain (sometimes different from the website domain)") and says no more."""
DOMAIN_MATCH = ("trim", "lowercase")
"""How a company domain is written and compared (a domain name is case-insensitive)."""


def company_match_keys(column: str, values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """What each value of a company column names a company by (Arrow text): ``name:`` and the
    name as names are compared (:func:`~line_exports.identities.name_keys`), ``domain:`` and the
    domain (:data:`DOMAIN_MATCH`) whichever domain column holds it, null for a missing or blank
    value (it names no company). Two companies that share a key are one company to LinkedIn as
    far as its reference lets anyone tell: the exporter never REMOVEs a company a current row
    shares a key with, and the sandbox's REMOVE takes out every member sharing one
    (:func:`companies_alike`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from line_exports.arrow_text import normalize
    from line_exports.identities import blank, name_keys

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    if column == COMPANY_NAME:
        keys, prefix = name_keys(values), "name:"
    elif column in COMPANY_DOMAINS:
        keys, prefix = normalize(values, DOMAIN_MATCH), "domain:"
    else:
        raise ValueError(f"{column!r} does not name a company")
    empty = pa.array(blank(values), pa.bool_())
    return pc.if_else(
        empty, pa.scalar(None, pa.string()), pc.binary_join_element_wise(prefix, keys, "")
    )


def companies_alike(held: Mapping[str, pa.Array | pa.ChunkedArray], keys: pa.Array) -> np.ndarray:
    """Which companies of ``held`` (column -> values, any of :data:`COMPANY_NAME` and
    :data:`COMPANY_DOMAINS`) share a match key (:func:`company_match_keys`) with ``keys``."""
    import numpy as np
    import pyarrow.compute as pc

    found: np.ndarray | None = None
    for column, values in held.items():
        hit = pc.is_in(company_match_keys(column, values), value_set=keys).fill_null(False)
        hit = hit.to_numpy(zero_copy_only=False)
        found = hit if found is None else found | hit
    return found if found is not None else np.zeros(0, dtype=bool)
