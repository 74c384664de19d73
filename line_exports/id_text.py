"""``IdText``: a setting whose value is an ID or a token, given as text or as a YAML/JSON number.

TD's references write IDs unquoted (``client_id: 1234``, ``line_channel_id: 1234567890``,
``ad_account_id: 512345678``), so YAML and JSON read them as integers. An ``IdText`` field
takes an integer as its exact digits (Python integers are exact at any size; no float detour)
and refuses a number with a fraction or an exponent, whose digits the parser may already have
lost, asking for quotes instead.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def id_text(value: Any) -> Any:
    """An integer as its digits; a float or a boolean refused; anything else left to ``str``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an ID: write the ID's digits or text")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ValueError(
            f"{value!r} was read as a decimal number, which may have lost digits: "
            "quote the ID ('...') to keep it exactly"
        )
    return value


IdText = Annotated[str, BeforeValidator(id_text)]
"""``str`` that also accepts an integer, kept as its exact digits."""
