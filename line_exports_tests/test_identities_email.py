"""Emails are judged as written, then normalized identically for MAAC, CAPI and LinkedIn (issue 13,
"Identities normalized"; verifier 13c F10).

Lower-casing ran before the email check with Unicode rules, so ``\u212aim@example.com`` (a KELVIN
SIGN, not ASCII, so not an address under the reference's ASCII pattern) became
``kim@example.com`` and ``\u0130nfo@...`` became ``info@...``: another person's valid address,
matched or hashed in the three destinations. Only A-Z are lower-cased now
(:func:`line_exports.identities.normalize_email`), the column path and the Python definition
alike, so lower-casing can neither make nor unmake a valid address.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from line_exports.destinations import get_destination
from line_exports.identities import normalize_email
from line_exports.rules import validate

NOW = 1_796_000_000
# value as written -> what every destination matches (None: rejected, never sent)
EMAILS = {
    "\u212aim@example.com": None,  # KELVIN SIGN: was kim@example.com
    "\u0130nfo@example.com": None,  # LATIN CAPITAL I WITH DOT ABOVE: was info@example.com
    "\u0130@example.com": None,
    "caf\u00c9@example.com": None,  # was café@... (still invalid, but not by luck)
    "  Foo@Example.COM ": "foo@example.com",
    "\u3000FOO@example.com\u3000": "foo@example.com",
    "\tfoo+TAG@EXAMPLE.com\r\n": "foo+tag@example.com",
    "kim@example.com": "kim@example.com",
}

DESTINATIONS = {  # name: (settings, other columns of row i)
    "maac": ({"data_object": "members", "import_key": "line_uid", "tags": "t"},
             lambda i: {"line_uid": f"U{i:032x}"}),
    "line_conversion": ({}, lambda i: {"deduplication_key": f"k{i}", "event_type": "conversion",
                                       "source_type": "web", "event_timestamp": NOW}),
    "linkedin": ({"ad_account_id": "1", "segment_name": "s", "ignore_invalid_records": True},
                 lambda i: {}),
}  # fmt: skip


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("destination", list(DESTINATIONS))
def test_an_email_is_checked_as_written_then_normalized(destination: str) -> None:
    settings, extra = DESTINATIONS[destination]
    raw = list(EMAILS)
    frame = pd.DataFrame([{**extra(i), "email": value} for i, value in enumerate(raw)])
    dest = get_destination(destination)
    config = dest.settings_class(**settings)
    checked = validate(frame, dest.ruleset(config), config.model_dump(), timezone="UTC")
    sent = dict(zip(checked.valid["_row_number"] - 1, checked.valid["email"], strict=True))
    rejected = set(checked.rejects.loc[checked.rejects["column"] == "email", "_row_number"] - 1)
    hashed = destination != "maac"  # CAPI and LinkedIn send the SHA-256 of the same text
    for i, value in enumerate(raw):
        expected = EMAILS[value]
        if expected is None:
            assert i in rejected and i not in sent, (destination, value, sent.get(i))
        else:
            assert sent[i] == (_sha256(expected) if hashed else expected), (destination, value)


def test_normalize_email_is_the_column_paths_rule() -> None:
    for value, expected in EMAILS.items():
        normalized = normalize_email(value)
        assert normalized == expected if expected else normalized.strip() == value.strip()
