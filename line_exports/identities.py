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
"""

from __future__ import annotations

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


def normalize_email(value: str) -> str:
    """One email address as every destination matches it: trimmed, A-Z lower-cased (any other
    character kept as written, see the module)."""
    return value.strip().translate(_ASCII_LOWER)


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
