"""Webhook sources: which LINE channels may post to us and how their events land.

The file names sources only; channel secrets are read from environment variables whose
*names* the file holds, so the file can be shared and reviewed without leaking secrets.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from line_exports import paths
from line_exports.names import closest

LANDING_MODES = ("append", "replace", "replace_on_new_data")
PARTITION_COLUMNS = ("time", "event_timestamp")
SCHEDULE_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly")
SOURCES_ENV = "LINE_EXPORTS_WEBHOOK_SOURCES"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


NO_SCHEDULE = frozenset({"", "off", "once", "none"})
_TEXT_FIELDS = (
    "name",
    "source_id",
    "channel_secret_env",
    "mode",
    "partition_column",
    "timezone",
    "schedule",
    "raw_table",
    "events_table",
    "rejects_table",
    "database",
    "scheduling_timezone",
)
REFUSED_KEYS = {
    "channel_secret": "put channel secrets in the environment, not the file "
    "(use channel_secret_env)",
    "td_api_key": "there is no Treasure Data account here: events land in the target database "
    "of the Dagster resource (target_url)",
    "datastore": "Plazma is TD's storage; events land in the target database of the Dagster "
    "resource (target_url), with database: as its schema",
}
"""Reference settings with no equivalent here, refused with the reason."""


class SourceConfigError(ValueError):
    """A webhook sources file that cannot be trusted to route or land events."""


def _delay_seconds(name: str, value: Any) -> int:
    """Delay Transfer: whole seconds >= 0 (a YAML integer, or its digits as text)."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise SourceConfigError(
            f"source {name}: delay {value!r} must be a whole number of seconds >= 0"
        )
    return int(text)


def _tags(name: str, value: Any) -> tuple[str, ...]:
    """Tags: a list of strings (one string is a list of one)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(
        isinstance(t, str) and t.strip() for t in items
    ):
        raise SourceConfigError(f"source {name}: tags must be a list of non-empty strings")
    return tuple(dict.fromkeys(t.strip() for t in items))


@dataclass(frozen=True)
class WebhookSource:
    """One LINE channel posting to ``/v1/task/{source_id}``.

    The fields are the reference's settings (TD's "LINE OA Streaming Import Integration":
    Create Source, Data Placement, Schedule):

    - ``name``: Data Transfer Name; ``channel_secret_env``: the variable holding the
      Authentication's Channel Secret Key.
    - ``database``: Database, where the tables land: the target's schema (DuckDB and
      PostgreSQL ``CREATE SCHEMA IF NOT EXISTS``); empty means the target's default schema.
    - ``raw_table`` / ``events_table``: Raw Table / Events Table in that database.
    - ``mode``: the import method (``append``, ``replace``, ``replace_on_new_data``).
    - ``partition_column``: Timestamp-based Partition Key: ingest time (``time``) or the
      event's own ``event_timestamp``.
    - ``timezone``: Timezone for your data storage (how ``received_at`` is written).
    - ``schedule``: a cron string or preset (``@hourly``, ``@daily``, ...), ``sensor`` (land as
      soon as new requests are spooled) or ``off`` (run once, by hand).
    - ``delay``: Delay Transfer, seconds: each scheduled run starts that long after its tick.
    - ``scheduling_timezone``: Scheduling Timezone, the zone the cron is read in; empty means
      ``timezone``.
    - ``tags``: Tags, "used to find this source": Dagster tags (label form, empty value) on
      both assets and on the landing job's runs.
    - ``relay_to``: downstream webhook URLs (a bot of your own, another tool) every verified
      request is forwarded to (see ``relay``; not in the reference, which advises a relay in
      front); each must be loopback or a host the deployment allows
      (``LINE_EXPORTS_ALLOWED_HOSTS``, over HTTPS).
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
    database: str = ""
    delay: int = 0
    scheduling_timezone: str = ""
    tags: tuple[str, ...] = ()
    relay_to: tuple[str, ...] = ()

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
        if not self.scheduling_timezone:
            object.__setattr__(self, "scheduling_timezone", self.timezone)
        for key in ("timezone", "scheduling_timezone"):
            try:
                ZoneInfo(getattr(self, key))
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise SourceConfigError(
                    f"source {self.name}: unknown {key} {getattr(self, key)!r}"
                ) from exc
        object.__setattr__(self, "delay", _delay_seconds(self.name, self.delay))
        object.__setattr__(self, "tags", _tags(self.name, self.tags))
        if self.delay and self.schedule.strip().lower() in NO_SCHEDULE | {"sensor"}:
            raise SourceConfigError(
                f"source {self.name}: delay is the Delay Transfer of a repeating schedule; "
                f"schedule {self.schedule!r} has no scheduled time to delay"
            )
        if self.database and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.database):
            raise SourceConfigError(f"source {self.name}: bad database name {self.database!r}")
        if not self.raw_table:
            object.__setattr__(self, "raw_table", f"line_oa_raw_{self.name}")
        if not self.events_table:
            object.__setattr__(self, "events_table", f"line_oa_events_{self.name}")
        if not self.rejects_table:  # requests that cannot land, with their reason
            object.__setattr__(self, "rejects_table", f"line_oa_rejects_{self.name}")
        for table in (self.raw_table, self.events_table, self.rejects_table):
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", table):
                raise SourceConfigError(f"source {self.name}: bad table name {table!r}")
        if not isinstance(self.relay_to, (str, list, tuple)):
            raise SourceConfigError(f"source {self.name}: relay_to must be a list of URLs")
        targets = (self.relay_to,) if isinstance(self.relay_to, str) else tuple(self.relay_to)
        object.__setattr__(self, "relay_to", targets)
        if len(set(targets)) != len(targets):
            raise SourceConfigError(f"source {self.name}: relay_to lists a URL twice")
        for index, target in enumerate(targets):
            problem = relay_target_problem(target)
            if problem:
                raise SourceConfigError(
                    f"source {self.name}: relay_to[{index}] {shown_url(target)!r} {problem}"
                )

    def qualified(self, table: str) -> str:
        """``database.table`` (or the bare table in the target's default schema)."""
        return f"{self.database}.{table}" if self.database else table

    def channel_secret(self) -> str | None:
        """The secret from the environment, read late so it is never copied into config."""
        value = os.environ.get(self.channel_secret_env)
        return value or None


def shown_url(url: object) -> object:
    """``url`` with any ``user:password@`` replaced by ``***@``, for error messages."""
    if not isinstance(url, str) or "@" not in url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def relay_target_problem(url: object) -> str | None:
    """Why ``url`` may not be a relay target, or None. The rule of every URL the deployment
    did not write in Python (``workflows.trust``): loopback (any scheme; the sandbox), or a
    host of ``LINE_EXPORTS_ALLOWED_HOSTS`` over HTTPS. Forwarded bodies are personal data."""
    from urllib.parse import urlsplit

    from line_exports.http import is_loopback
    from line_exports.workflows.trust import TrustPolicy

    if not isinstance(url, str):
        return "is not a URL string"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return "has a bad port"
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        return "is not an http(s) URL"
    if parts.username is not None or parts.password is not None:
        return (
            "holds credentials (user:password@), which would show in logs and metadata; the "
            "target verifies the forwarded x-line-signature with the channel secret instead"
        )
    if is_loopback(host):
        return None
    policy = TrustPolicy.from_environment()
    if not policy.host_granted(host, port):
        granted = ", ".join(policy.allowed_hosts) or "none"
        return (
            "is not loopback or a host the deployment allows (LINE_EXPORTS_ALLOWED_HOSTS: "
            f"{granted})"
        )
    if parts.scheme != "https":
        return "is plain HTTP to another machine (use https)"
    return None


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
    known = set(WebhookSource.__dataclass_fields__)
    sources: list[WebhookSource] = []
    for item in document.get("sources") or []:
        if not isinstance(item, dict):
            raise SourceConfigError("each source must be a mapping")
        label = f"source {item.get('name', '?')}"
        for key in item:
            if key in REFUSED_KEYS:
                raise SourceConfigError(f"{label}: {key}: {REFUSED_KEYS[key]}")
            if key not in known:
                raise SourceConfigError(
                    f"{label}: unknown setting {key!r}{closest(str(key), sorted(known))}"
                )
        args = dict(item)
        if "channel_secret_env" not in args and "name" in args:
            args["channel_secret_env"] = default_secret_env(str(args["name"]))
        args = {k: (str(v) if k in _TEXT_FIELDS and v is not None else v) for k, v in args.items()}
        if args.get("tags") is None:
            args.pop("tags", None)
        try:
            sources.append(WebhookSource(**args))
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
    entry: dict[str, Any] = {
        "name": source.name,
        "source_id": source.source_id,
        "channel_secret_env": source.channel_secret_env,
        "mode": source.mode,
        "partition_column": source.partition_column,
        "timezone": source.timezone,
        "schedule": source.schedule,
    }
    if source.scheduling_timezone != source.timezone:
        entry["scheduling_timezone"] = source.scheduling_timezone
    for key in ("database", "delay", "tags"):
        if getattr(source, key):
            value = getattr(source, key)
            entry[key] = list(value) if key == "tags" else value
    if source.relay_to:
        entry["relay_to"] = list(source.relay_to)
    return yaml.safe_dump([entry], sort_keys=False)
