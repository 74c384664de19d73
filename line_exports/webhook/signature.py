"""LINE's webhook signature: Base64(HMAC-SHA256(channel secret, raw body)).

Checked on the exact bytes received, before any parsing, so a re-serialised body can never
pass and a forged one never reaches the JSON parser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign(channel_secret: str, body: bytes) -> str:
    """The ``x-line-signature`` value LINE would send for ``body``."""
    digest = hmac.new(channel_secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def well_formed(signature: str | None) -> bool:
    """Whether ``signature`` can be a LINE signature at all: Base64 of a 32-byte digest.

    Checked before the body is read, so junk signatures are refused without holding a body.
    """
    if not signature:
        return False
    try:
        return len(base64.b64decode(signature.strip().encode("ascii"), validate=True)) == 32
    except (ValueError, UnicodeEncodeError):
        return False


def verify(channel_secret: str, body: bytes, signature: str | None) -> bool:
    """Constant-time comparison so timing does not leak how much of a forgery matched."""
    if not signature:
        return False
    expected = sign(channel_secret, body).encode("ascii")
    try:
        given = signature.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected, given)
