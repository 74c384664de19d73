"""Identity rules the exporter and the sandboxes share (one definition each).

* LINE Conversion API: an event's ``user`` object must carry at least one identifier, one of
  :data:`CAPI_USER_IDENTIFIERS`. LINE's own words (LINE Conversion API v1, Development
  Guidelines, "User match", https://conversion-api-docs.linebiz.com/en/#section/Development-Guidelines,
  the page LINE Developers links from developers.line.biz/en/docs/line-conversion-api/): the
  conversion measurement uses the ``user`` object to match LINE users, "therefore the user
  object must contain at least one field usable for user matching", and events whose user
  match fails are not measured; the fields usable for matching are exactly these seven
  (``browser_id`` and ``external_id`` only once LINE holds mapping data for them). The
  ``UserObj`` schema of "Send conversion event" (``postback``) declares no required field, and
  LINE does not say it answers 400: it says such an event is discarded without being measured.
  So the exporter rejects it before sending (sending it is pointless), and the sandbox refuses
  it with 400 so that a bug sending one cannot pass unseen (stricter than the answer LINE
  documents, which is silence).
* Emails, before matching or hashing: surrounding white space removed and the ASCII letters
  A-Z lower-cased (:func:`normalize_email`), identically for every destination: LINE's
  Conversion API takes the SHA-256 of the normalized address, LinkedIn's ``SHA256_EMAIL``
  likewise, and MAAC matches an ``email`` import key as one address whatever its case (its
  OpenAPI states no rule; two spellings of one address would otherwise be two keys in one
  import). Only ASCII letters: the email rule (``rules.EMAIL_PATTERN``, ASCII) judges the
  address as written, and Unicode lower-casing would first turn a Kelvin sign (U+212A) into
  ``k`` or a dotted capital I (U+0130) into ``i``, making an invalid address another person's
  valid one; with A-Z only, lower-casing can neither make nor unmake a valid address.
* Phone numbers: E.164, see :mod:`line_exports.phones`.
* LINE IFAs (``is_ifa_audience``: an IDFA or AAID, a UUID): trimmed and lower-cased
  (:func:`normalize_ifa`) before deduplication, by the exporter and the sandbox alike. LINE's
  Messaging API reference ("Create audience for uploading user IDs", ``audiences[].id``: "A user
  ID or IFA") says nothing on case, so RFC 4122 decides: a UUID's hex digits "are output as lower
  case characters and are case insensitive on input", i.e. ``EA7583CD-…`` and ``ea7583cd-…`` are
  one device and are uploaded once (LinkedIn's ``google_aid``/``apple_idfa`` follow LinkedIn's
  own documented case instead).
* MAAC ``customer_id`` import keys: trimmed (:data:`CUSTOMER_ID_NORMALIZE`), sent trimmed, and a
  key of only white space is no key (a ``required`` reject, as a blank email is). MAAC's
  reference (``maac-crescendo-export.txt``, Members: "customer_id string ... User ID of the
  third-party system") says nothing on white space or on how it matches the key, so the
  exporter assumes the strictest reading that keeps counts true: `` 123``, ``123 `` and ``123``
  are one member's key, which sent three times would fail the whole import
  (``duplicate_error``), and a blank key (``blank_error``) likewise. The sandbox matches MAAC's
  ``email`` and ``customer_id`` keys by these same steps (:func:`maac_key`).
* Names LinkedIn matches (a company's ``companyName``; a user's ``firstName``, ``lastName``,
  ``company``, ``title`` when the user has no ID): compared trimmed and lower-cased
  (:data:`NAME_MATCH`, :func:`name_keys`) for the duplicate check, and sent as held. LinkedIn's
  reference (``linkedin-matched-audiences-export.txt``: "A string representing the company name
  of this company", "the first name of the contact to match") does not say how it matches
  them; a name written by people is matched by LinkedIn to a company or a member, not compared
  byte for byte, so ``Acme``, ``Acme `` and ``ACME`` are taken as one company: sent once (the
  first row's spelling), the others ``duplicate`` rejects. A name of only white space
  (:func:`blank`) names no one: the exporter's one-of rules and the sandbox refuse it alike.
* LINE audience names: LINE's Messaging API (manage-audience.yml, ``description`` of every
  create, rename and list request): "The audience's name. This is case-insensitive, meaning
  AUDIENCE and audience are considered identical." :func:`audience_name_key` is that identity,
  for the exporter finding an audience by name and the sandbox's list filter. The spec says
  nothing about white space (not trimmed: ``Spring Buyers `` is another name) nor refuses a
  create whose name an audience already has (audience names are not unique at LINE: a create
  makes another audience), so neither does the sandbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow, numpy: imported on first use (the light CLI paths load neither)
    import duckdb
    import numpy as np
    import pyarrow as pa

CAPI_USER_IDENTIFIERS = (
    "line_uid",
    "click_id",
    "ifa",
    "browser_id",
    "phone",
    "email",
    "external_id",
)
"""The fields of a CAPI event's ``user`` object, any one of which identifies the user."""

EMAIL_NORMALIZE = ("trim", "ascii_lowercase")
"""The normalize steps (:class:`~line_exports.rules.Column`) of every email column."""

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalized(values: Sequence[str | None], steps: Sequence[str]) -> list[str | None]:
    """``values`` after the normalize ``steps`` of a :class:`~line_exports.rules.Column`
    (e.g. :data:`EMAIL_NORMALIZE`), by the very kernels the exporter's column path runs
    (:func:`line_exports.arrow_text.normalize`): the sandboxes' one definition."""
    import pyarrow as pa

    from line_exports.arrow_text import normalize

    return normalize(pa.array(list(values), pa.string()), tuple(steps)).to_pylist()


def normalize_email(value: str) -> str:
    """One email address as every destination matches it: trimmed, A-Z lower-cased (any other
    character kept as written, see the module)."""
    return value.strip().translate(_ASCII_LOWER)


CUSTOMER_ID_NORMALIZE = ("trim",)
"""The normalize steps of MAAC's ``customer_id`` column (see the module: MAAC's reference is
silent, so keys that differ only by surrounding white space are one key)."""

MAAC_KEY_NORMALIZE: dict[str, tuple[str, ...]] = {
    "email": EMAIL_NORMALIZE,
    "customer_id": CUSTOMER_ID_NORMALIZE,
}
"""MAAC import key -> the steps by which it is matched (``mobile``: E.164,
:mod:`line_exports.phones`; ``line_uid``: as sent, a checked pattern)."""


def maac_keys(import_key: str, values: Sequence[str]) -> list[str]:
    """``email`` or ``customer_id`` import keys as MAAC matches them (:data:`MAAC_KEY_NORMALIZE`;
    any other key as given): "" for a key of only white space. One Arrow call for them all."""
    steps = MAAC_KEY_NORMALIZE.get(import_key)
    if not steps or not values:
        return list(values)
    return [key or "" for key in normalized(values, steps)]


def maac_key(import_key: str, value: str) -> str:
    """One import key as MAAC matches it (:func:`maac_keys`)."""
    return maac_keys(import_key, [value])[0]


NAME_MATCH = ("trim", "lowercase")
"""How a name LinkedIn matches is compared (see the module): trimmed, lower-cased."""

BLANK_PATTERN = r"^[\s\x0b\x1c-\x1f\x85\p{Z}]*$"
"""Text of only white space (or empty): it names no one. RE2's ``\s`` lacks the vertical tab,
the separators U+001C-U+001F and NEL (U+0085), which Python's ``isspace`` and Arrow's
whitespace trim (the duplicate check's) count as white space (VERIFY-13p P1); with Unicode
separators (``\p{Z}``) the three agree."""


def name_keys(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Names (Arrow text) as compared for duplicates (:data:`NAME_MATCH`); nulls stay null,
    and so does a name of only white space: it names no one, so a name-only user whose company
    is ``"  "`` is the one whose company is NULL or ``""`` (VERIFY-13r R1)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from line_exports.arrow_text import normalize

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    keys = normalize(values, NAME_MATCH)
    return pc.if_else(pc.equal(pc.binary_length(keys), 0), pa.scalar(None, keys.type), keys)


def register_name_key(con: duckdb.DuckDBPyConnection) -> None:
    """``name_key(varchar)`` on a DuckDB connection: :func:`name_keys` (the duplicate check's,
    mirror's and the sync keys' one definition). NULL in, NULL out, and a blank name's key is
    NULL (``null_handling="special"``: DuckDB hands the function its NULLs and takes NULLs back)."""
    import duckdb

    con.create_function(  # a lambda: DuckDB reads a function's type hints, not ours
        "name_key",
        lambda values: name_keys(values),
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("VARCHAR"),
        type="arrow",
        null_handling="special",
        side_effects=False,
    )


def name_key(value: str) -> str:
    """One name as compared for duplicates (:func:`name_keys`)."""
    import pyarrow as pa

    return name_keys(pa.array([value], pa.string()))[0].as_py()


def blank(values: pa.Array) -> np.ndarray:
    """Which ``values`` (Arrow text) are missing or only white space (:data:`BLANK_PATTERN`):
    those the duplicate check's trim (Arrow's whitespace trim, :data:`NAME_MATCH`) leaves
    empty, which is the same set of values (every code point checked, test_idents2_speed) and
    costs a look at each value's first and last byte where nothing can be trimmed, instead of
    a Unicode regex over every character (a quarter of the LinkedIn companies rule set's time)."""
    import pyarrow.compute as pc

    from line_exports.arrow_text import normalize

    trimmed = normalize(values, ("trim",))
    return pc.equal(pc.binary_length(trimmed), 0).fill_null(True).to_numpy(zero_copy_only=False)


def is_blank(value: object) -> bool:
    """Whether one value is no text, or text of only white space (:func:`blank`)."""
    import pyarrow as pa

    return not isinstance(value, str) or bool(blank(pa.array([value], pa.string()))[0])


def audience_name_key(name: str) -> str:
    """A LINE audience name as LINE compares it: case-insensitive (see the module), white
    space kept."""
    return name.lower()


IFA_NORMALIZE = ("trim", "lowercase")
"""The normalize steps (:class:`~line_exports.rules.Column`) of a LINE IFA audience's ``id``."""


def normalize_ifa(value: str) -> str:
    """One IFA as one device: trimmed, lower-cased (RFC 4122's output form; see the module)."""
    return value.strip().lower()


_ONE_OF_REASONS = {
    frozenset(CAPI_USER_IDENTIFIERS): "LINE matches the event's user by one of these fields and "
    "does not measure an event whose user it cannot match (LINE Conversion API v1, Development "
    'Guidelines, "User match")',
    frozenset(("email", "google_aid", "apple_idfa", "first_name", "last_name")): "LinkedIn "
    "matches a member by a user ID or, with none, by first and last name, which are then both "
    "required (LinkedIn Marketing API, DMP Segment Users)",
    frozenset(("company_name", "company_website_domain", "company_email_domain")): "LinkedIn "
    "matches a company by its name or a domain and cannot match one with neither (LinkedIn "
    "Marketing API, DMP Segment Companies)",
}


def one_of_reason(groups: tuple[tuple[str, ...], ...]) -> str:
    """Why an API needs one of ``groups`` (a one-of rule's columns, e.g. a CAPI event's user
    identifiers), citing its documentation, or "" for a rule of no identity."""
    return _ONE_OF_REASONS.get(frozenset(name for group in groups for name in group), "")


CAPI_NOT_SENT = {"external_id": "undefined"}
"""Values LINE reads as "not sent" (Send conversion event, ``external_id``: the literal string
``undefined`` is treated as if the field were absent), so they identify no one."""


def capi_user_identified(user: dict[str, object]) -> bool:
    """Whether a CAPI ``user`` object carries at least one identifier (a non-empty value, and
    not one LINE reads as not sent, :data:`CAPI_NOT_SENT`)."""
    return any(
        user.get(name) not in (None, "", CAPI_NOT_SENT.get(name)) for name in CAPI_USER_IDENTIFIERS
    )
