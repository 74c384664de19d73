"""Config fields that hold secrets: one marking, read in one place.

Dagster masks a field whose JSON schema says ``dagster__is_secret``; users pass its value with
``dg.EnvVar`` so it never enters run config, and the workflow loader refuses it in a file.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo

SECRET_MARK = "dagster__is_secret"


def SecretField(description: str, default: Any = None) -> Any:  # noqa: N802 (a Field)
    """A pydantic ``Field`` Dagster treats as a secret.

    An unset secret (``None`` or ``""``) is a default *factory*, not a default value: Dagster's config
    schema then has no default for it, so the launchpad shows nothing instead of a masked
    ``**********`` for a value that was never set.
    """
    mark = {SECRET_MARK: True}
    if default in (None, ""):
        return Field(
            default_factory=lambda: default, description=description, json_schema_extra=mark
        )
    return Field(default=default, description=description, json_schema_extra=mark)


def is_secret(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(SECRET_MARK))
