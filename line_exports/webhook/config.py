"""Webhook sources: which LINE channels may post to us and how their events land.

The file names sources only; channel secrets are read from environment variables whose
*names* the file holds, so the file can be shared and reviewed without leaking secrets.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from line_exports import paths

LANDING_MODES = ("append", "replace", "replace_on_new_data")
PARTITION_COLUMNS = ("time", "event_timestamp")
SCHEDULE_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly")
SOURCES_ENV = "LINE_EXPORTS_WEBHOOK_SOURCES"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class SourceConfigError(ValueError):
    """A webhook sources file that cannot be trusted to route or land events."""


@dataclass(frozen=True)
class WebhookSource:
    """One LINE channel posting to ``/v1/task/{source_id}``.

    ``schedule`` is a cron string or preset (``@hourly``, ``@daily``, ...), ``sensor``
    (land as soon as new requests are spooled) or ``off`` (run once, by hand).
    ``partition_column`` picks what seeds the ``time`` column: ingest time (``time``) or the
    event's own ``event_timestamp``.
    """

    name: str
    source_id: str
    channel_secret_env: str
    mode: str = "append"
    partition_column: str = "time"
    timezone: str = "UTC"
    schedule: str = "@hourly"
    raw_table: str = ""
    events_table: str = ""
    rejects_table: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise SourceConfigError(
                f"source name {self.name!r} must be lower snake_case (letters, digits, _)"
            )
        try:
            parsed = uuid.UUID(self.source_id)
        except (ValueError, AttributeError, TypeError) as exc:
            raise SourceConfigError(f"source {self.name}: source_id is not a UUID") from exc
        if parsed.version != 4 or str(parsed) != self.source_id.lower():
            raise SourceConfigError(f"source {self.name}: source_id must be a UUID v4")
        object.__setattr__(self, "source_id", str(parsed))
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.channel_secret_env or ""):
            raise SourceConfigError(
                f"source {self.name}: channel_secret_env must name an environment variable"
            )
        if self.mode not in LANDING_MODES:
            raise SourceConfigError(f"source {self.name}: mode must be one of {LANDING_MODES}")
        if self.partition_column not in PARTITION_COLUMNS:
            raise SourceConfigError(
                f"source {self.name}: partition_column must be one of {PARTITION_COLUMNS}"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SourceConfigError(f"source {self.name}: unknown timezone") from exc
        if not self.raw_table:
            object.__setattr__(self, "raw_table", f"line_oa_raw_{self.name}")
        if not self.events_table:
            object.__setattr__(self, "events_table", f"line_oa_events_{self.name}")
        if not self.rejects_table:  # requests that cannot land, with their reason
            object.__setattr__(self, "rejects_table", f"line_oa_rejects_{self.name}")
        for table in (self.raw_table, self.events_table, self.rejects_table):
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", table):
                raise SourceConfigError(f"source {self.name}: bad table name {table!r}")

    def channel_secret(self) -> str | None:
        """The secret from the environment, read late so it is never copied into config."""
        value = os.environ.get(self.channel_secret_env)
        return value or None


def default_secret_env(name: str) -> str:
    """The conventional variable name for a source's channel secret."""
    return f"LINE_CHANNEL_SECRET_{name.upper()}"


def default_sources_path() -> Path:
    """``$LINE_EXPORTS_WEBHOOK_SOURCES`` or ``<data dir>/webhook/sources.yaml``.

    The data dir is git-ignored, which suits a file of source IDs that should not be public.
    """
    env = os.environ.get(SOURCES_ENV)
    if env:
        return Path(env).resolve()
    return paths.data_dir() / "webhook" / "sources.yaml"


def parse_sources(document: Any) -> list[WebhookSource]:
    """Validate a loaded YAML document into sources; names and IDs must be unique."""
    if document is None:
        return []
    if not isinstance(document, dict) or not isinstance(document.get("sources", []), list):
        raise SourceConfigError("sources file must be a mapping with a 'sources' list")
    known = {f for f in WebhookSource.__dataclass_fields__ if f != "extra"}
    sources: list[WebhookSource] = []
    for item in document.get("sources") or []:
        if not isinstance(item, dict):
            raise SourceConfigError("each source must be a mapping")
        if "channel_secret" in item:
            raise SourceConfigError(
                "put channel secrets in the environment, not the file (use channel_secret_env)"
            )
        args = {k: v for k, v in item.items() if k in known}
        if "channel_secret_env" not in args and "name" in args:
            args["channel_secret_env"] = default_secret_env(str(args["name"]))
        args = {k: (str(v) if v is not None else v) for k, v in args.items()}
        try:
            sources.append(
                WebhookSource(**args, extra={k: v for k, v in item.items() if k not in known})
            )
        except TypeError as exc:
            raise SourceConfigError(f"bad source entry: {exc}") from exc
    names = [s.name for s in sources]
    ids = [s.source_id for s in sources]
    if len(set(names)) != len(names) or len(set(ids)) != len(ids):
        raise SourceConfigError("source names and source_ids must be unique")
    return sources


def load_sources(path: str | os.PathLike[str] | None = None) -> list[WebhookSource]:
    """Read the sources file; a missing file means no sources (every request gets 404)."""
    file = Path(path) if path else default_sources_path()
    if not file.exists():
        return []
    return parse_sources(yaml.safe_load(file.read_text(encoding="utf-8")))


def source_to_yaml(source: WebhookSource) -> str:
    """A sources-file entry for ``new-source`` to print or append."""
    entry = {
        "name": source.name,
        "source_id": source.source_id,
        "channel_secret_env": source.channel_secret_env,
        "mode": source.mode,
        "partition_column": source.partition_column,
        "timezone": source.timezone,
        "schedule": source.schedule,
    }
    return yaml.safe_dump([entry], sort_keys=False)
