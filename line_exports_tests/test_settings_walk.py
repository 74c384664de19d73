"""No setting is accepted and ignored, and every parameter of the reference docs is taken or
refused with a reason.

Two walks:

1. **Every settings model** (each destination's settings class and resource, whose fields are
   the ``.dig`` ``result_settings`` keys; the webhook source config and its resource): each
   field must be read somewhere in the package outside its own class (a field read only by a
   method of its class counts when that method is used outside the class). The sandbox does
   not count: it is the API, not the exporter. Found by reading the package's syntax trees,
   so a read under another object's attribute of the same name also counts: the walk catches
   a field nothing reads at all, which is the failure this test exists for.
2. **Every parameter named in the five reference docs** (TD's LINE Messaging, LINE Conversion
   API, Crescendo Lab MAAC, LinkedIn Matched Audiences export and LINE OA Streaming Import
   pages), listed below from those pages when this test was written (a user's clone has no
   copy of them): each is a field of the model that takes it (and so is read, by walk 1), a
   ``.dig`` key the loader knows, a column of the destination's rules, or refused with its
   reason, which the test provokes and reads.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import line_exports
from line_exports import build_export
from line_exports.destination import ExportSettings
from line_exports.destinations import get_destination
from line_exports.output_mapping import PART_KINDS, OutputMapping
from line_exports.webhook.assets import LineOaWebhookResource
from line_exports.webhook.config import SourceConfigError, WebhookSource, parse_sources
from line_exports.webhook.events import EVENT_COLUMNS
from line_exports.workflows.connections import resource_settings
from line_exports.workflows.loader import TASK_KEYS, TOP_LEVEL
from line_exports.workflows.schedules import OPTIONS as SCHEDULE_OPTIONS

PACKAGE = Path(line_exports.__file__).resolve().parent
DESTINATIONS = ("line_messaging", "line_conversion", "maac", "linkedin")

# ---------------------------------------------------------------------------------------------
# Walk 1: every field of every settings model is read.


@dataclasses.dataclass(frozen=True)
class Read:
    name: str
    owner: str | None  # the class the read sits in
    method: str | None  # the function the read sits in


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"``: a read through such a constant reads ``text``."""
    found: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _text(node: ast.expr | None, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _reads_in(tree: ast.AST, constants: dict[str, str]) -> Iterator[Read]:
    def visit(node: ast.AST, owner: str | None, method: str | None) -> Iterator[Read]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                yield from visit(child, child.name, None)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from visit(child, owner, method or child.name)
                continue
            key: str | None = None
            if isinstance(child, ast.Attribute) and isinstance(child.ctx, ast.Load):
                key = child.attr
            elif isinstance(child, ast.Subscript) and isinstance(child.ctx, ast.Load):
                key = _text(child.slice, constants)
            elif isinstance(child, ast.Call) and child.args:
                func = child.func
                if _is_getattr(func) and len(child.args) > 1:
                    key = _text(child.args[1], constants)
                elif isinstance(func, ast.Attribute) and func.attr in ("get", "pop"):
                    key = _text(child.args[0], constants)
            if key is not None:
                yield Read(key, owner, method)
            yield from visit(child, owner, method)

    yield from visit(tree, None, None)


def _is_getattr(func: ast.expr) -> bool:
    return isinstance(func, ast.Name) and func.id == "getattr"


def _package_reads() -> list[Read]:
    trees = []
    constants: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "sandbox" in path.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        trees.append(tree)
        constants.update(_constants(tree))
    return [read for tree in trees for read in _reads_in(tree, constants)]


@functools.cache
def _by_name() -> dict[str, list[Read]]:
    """The package's reads by name: walked once per process, on first use (not while pytest
    collects, which every xdist worker does)."""
    by_name: dict[str, list[Read]] = defaultdict(list)
    for read in _package_reads():
        by_name[read.name].append(read)
    return by_name


def _owner_of(model: type, field: str) -> str:
    """The class in ``model``'s MRO that declares ``field``."""
    for klass in model.__mro__:
        if field in getattr(klass, "__annotations__", {}):
            return klass.__name__
    return model.__name__


def _used_methods(owner: str) -> set[str]:
    """Methods of class ``owner`` used outside it, or by its used methods (a fixpoint)."""
    used: set[str] = set()
    methods = {r.method for reads in _by_name().values() for r in reads if r.owner == owner}
    changed = True
    while changed:
        changed = False
        for method in methods - used:
            if method and any(
                r.owner != owner or r.method in used for r in _by_name().get(method, [])
            ):
                used.add(method)
                changed = True
    return used


def is_read(model: type, field: str) -> bool:
    owner = _owner_of(model, field)
    used = _used_methods(owner)
    return any(read.owner != owner or read.method in used for read in _by_name().get(field, []))


def _fields(model: type) -> list[str]:
    if dataclasses.is_dataclass(model):
        return [f.name for f in dataclasses.fields(model)]
    return list(model.model_fields)  # type: ignore[attr-defined]


def _models() -> list[tuple[str, type]]:
    models: list[tuple[str, type]] = []
    for name in DESTINATIONS:
        dest = get_destination(name)
        models.append((f"{name} settings", dest.settings_class))
        models.append((f"{name} resource", dest.resource_class))
    models.append(("webhook source (sources.yaml)", WebhookSource))
    models.append(("webhook resource", LineOaWebhookResource))
    return models


MODELS = _models()


@pytest.mark.parametrize(("label", "model"), MODELS, ids=[label for label, _ in MODELS])
def test_every_field_of_every_settings_model_is_read(label: str, model: type) -> None:
    unread = [f for f in _fields(model) if not is_read(model, f)]
    assert unread == [], f"{label}: accepted but never read: {unread}"


def test_every_dig_result_settings_key_is_a_read_field() -> None:
    """A ``.dig`` ``result_settings`` key goes to the run config or to the resource: both walked."""
    for name in DESTINATIONS:
        dest = get_destination(name)
        keys = set(dest.settings_class.model_fields) | resource_settings(dest)
        for key in keys:
            model = (
                dest.settings_class
                if key in dest.settings_class.model_fields
                else dest.resource_class
            )
            assert key in _fields(model) and is_read(model, key), f"{name}: {key}"


def test_the_walk_finds_an_unread_field() -> None:
    """The walk can fail: a field no code reads is reported."""

    class Probe(ExportSettings):
        a_setting_nobody_reads: int = 0

    assert not is_read(Probe, "a_setting_nobody_reads")
    assert is_read(Probe, "max_retry")  # read through retry_settings(), used by every export


# ---------------------------------------------------------------------------------------------
# Walk 2: every parameter of the reference docs. Written from ../shared/reference/ when this
# test was authored: (page, parameter as the page names it, how this project takes it).
#
#   ("settings", destination, field)     a field of the destination's settings (run config)
#   ("resource", destination, field)     a field of its resource, also a result_settings key
#   ("webhook", field)                   a WebhookSource field (sources.yaml)
#   ("dig", key)                         a .dig key (workflow, task or schedule option)
#   ("column", destination, column, settings)   a column of the destination's rules
#   ("event_column", column)             a column of the OA import's events table
#   ("mapping", key)                     a part of output_mapping (Audience Studio)
#   ("refused_source", key, reason)      a sources.yaml key refused, the message saying why

MESSAGING = "line-messaging-export"
CAPI = "line-conversion-api-export"
MAAC = "maac-crescendo-export"
LINKEDIN = "linkedin-matched-audiences-export"
OA = "line-oa-streaming-import"

RETRY = [
    ("max_retry", "Maximum Retry / max_retry"),
    ("initial_retry_wait", "Seconds to Wait For First Retry / initial_retry_wait"),
    ("max_retry_wait", "Seconds for Max Retry Wait / max_retry_wait"),
    ("connection_timeout", "Seconds for Connection Timeout / connection_timeout"),
]
SCHEDULING = [  # every export page's "Schedule Query Export Jobs" and Workflow sections
    ('Schedule (cron, @daily, @hourly, "")', ("dig", "schedule")),
    ("Timezone", ("dig", "timezone")),
    ("Delay execution", ("dig", "delay")),
    ("result_connection", ("dig", "result_connection")),
    ("result_settings", ("dig", "result_settings")),
    ("td> / database", ("dig", "td>")),
    ("database", ("dig", "database")),
]
MAPPING = [  # every export page's "Activate a Segment in Audience Studio": Output Mapping
    ("Output Mapping", ("settings", "*", "output_mapping")),
    ("Export All Columns", ("mapping", "export_all_columns")),
    ("+ Add Columns (Source column, Output Column Name)", ("mapping", "columns")),
    ("String Builder: + Add string", ("mapping", "strings")),
    ("String Builder: String", ("mapping", "string")),
    ("String Builder: Timestamp", ("mapping", "timestamp")),
    ("String Builder: Segment Id", ("mapping", "segment_id")),
    ("String Builder: Segment Name", ("mapping", "segment_name")),
    ("String Builder: Audience Id (the parent segment)", ("mapping", "audience_id")),
]
AUDIENCE = {"target": "audience", "audience_name": "a"}
CAPI_COLUMNS = [
    "referrer",
    "ip_address",
    "title",
    "user_agent",
    "url",
    "deduplication_key",
    "event_type",
    "event_name",
    "source_type",
    "event_timestamp",
    "browser_id",
    "click_id",
    "phone",
    "ifa",
    "external_id",
    "line_uid",
    "email",
]
MAAC_MEMBERS = {"data_object": "members", "import_key": "line_uid", "tags": "t"}
MAAC_SEGMENTS = {"data_object": "segments", "segment_name": "s"}
LINKEDIN_USERS = {"ad_account_id": "1", "segment_name": "s", "audience_type": "users"}
LINKEDIN_COMPANIES = {**LINKEDIN_USERS, "audience_type": "companies"}

REFERENCE: list[tuple[str, str, tuple[Any, ...]]] = [
    # LINE Messaging: the CLI parameter table, and the console's fields.
    (MESSAGING, "type", ("dig", "type")),
    (MESSAGING, "auth_method", ("resource", "line_messaging", "auth_method")),
    (
        MESSAGING,
        "access_token / Channel Access Token",
        ("resource", "line_messaging", "access_token"),
    ),
    (MESSAGING, "client_id / Chanel Id", ("resource", "line_messaging", "client_id")),
    (MESSAGING, "client_secret / Channel Secret", ("resource", "line_messaging", "client_secret")),
    (MESSAGING, "target", ("settings", "line_messaging", "target")),
    (MESSAGING, "audience_name", ("settings", "line_messaging", "audience_name")),
    (MESSAGING, "audience_id", ("settings", "line_messaging", "audience_id")),
    (MESSAGING, "use_audience_id", ("settings", "line_messaging", "use_audience_id")),
    (
        MESSAGING,
        "is_ifa_audience / Is IFAs Audience?",
        ("settings", "line_messaging", "is_ifa_audience"),
    ),
    (MESSAGING, "template_message", ("settings", "line_messaging", "template_message")),
    (
        MESSAGING,
        "template_message_multicast",
        ("settings", "line_messaging", "template_message_multicast"),
    ),
    (MESSAGING, "skip_invalid_message", ("settings", "line_messaging", "skip_invalid_message")),
    (
        MESSAGING,
        "skip_multicast_invalid_message",
        ("settings", "line_messaging", "skip_multicast_invalid_message"),
    ),
    (MESSAGING, "notification_disabled", ("settings", "line_messaging", "notification_disabled")),
    (
        MESSAGING,
        "custom_aggregation_units",
        ("settings", "line_messaging", "custom_aggregation_units"),
    ),
    (MESSAGING, "batch_size_multicast", ("settings", "line_messaging", "batch_size_multicast")),
    *[(MESSAGING, label, ("settings", "line_messaging", f)) for f, label in RETRY],
    (MESSAGING, "recipient ID column (audience)", ("column", "line_messaging", "id", AUDIENCE)),
    # LINE Conversion API: CLI parameters, console fields, and the query's columns.
    (CAPI, "type", ("dig", "type")),
    (CAPI, "access_token / Access Token", ("resource", "line_conversion", "access_token")),
    (CAPI, "line_tag_id / LINE Tag ID", ("resource", "line_conversion", "line_tag_id")),
    (CAPI, "line_channel_id / LINE Channel ID", ("resource", "line_conversion", "line_channel_id")),
    (
        CAPI,
        "ignore_invalid_records / Ignore Invalid Records",
        ("settings", "line_conversion", "ignore_invalid_records"),
    ),
    (CAPI, "max_records / Batch Size", ("settings", "line_conversion", "max_records")),
    *[(CAPI, label, ("settings", "line_conversion", f)) for f, label in RETRY],
    *[(CAPI, c, ("column", "line_conversion", c, {})) for c in CAPI_COLUMNS],
    # Crescendo Lab MAAC: the parameter table and the two data objects' columns.
    (MAAC, "api_token / Access Token", ("resource", "maac", "api_token")),
    (MAAC, "data_object / Data Object", ("settings", "maac", "data_object")),
    (MAAC, "import_key / Import Key / Lookup Field", ("settings", "maac", "import_key")),
    (MAAC, "tags / Tags", ("settings", "maac", "tags")),
    (MAAC, "segment_name / Segment Name", ("settings", "maac", "segment_name")),
    (MAAC, "segment_description / Description", ("settings", "maac", "segment_description")),
    (
        MAAC,
        "skip_invalid_records / Skip Invalid Records",
        ("settings", "maac", "skip_invalid_records"),
    ),
    (MAAC, "update_segment", ("settings", "maac", "update_segment")),
    (MAAC, "Retry Limit", ("settings", "maac", "max_retry")),
    (MAAC, "Retry Initial wait", ("settings", "maac", "initial_retry_wait")),
    (MAAC, "Retry Max wait", ("settings", "maac", "max_retry_wait")),
    (MAAC, "Max http waiting time", ("settings", "maac", "connection_timeout")),
    (MAAC, "Max upload chunk size", ("settings", "maac", "batch_size")),
    *[
        (MAAC, f"members column {c}", ("column", "maac", c, MAAC_MEMBERS))
        for c in [
            "line_uid",
            "line_display_name",
            "email",
            "mobile",
            "customer_id",
            "gender",
            "birthday",
            "tags",
        ]
    ],
    (MAAC, "segments column line_uid", ("column", "maac", "line_uid", MAAC_SEGMENTS)),
    # LinkedIn Matched Audiences: the console's parameters and the columns of both list types.
    (LINKEDIN, "Ad Account ID", ("settings", "linkedin", "ad_account_id")),
    (LINKEDIN, "Audience Type", ("settings", "linkedin", "audience_type")),
    (LINKEDIN, "Segment Name", ("settings", "linkedin", "segment_name")),
    (LINKEDIN, "Segment Description", ("settings", "linkedin", "segment_description")),
    (LINKEDIN, "DMP Segment Mode", ("settings", "linkedin", "dmp_segment_mode")),
    (LINKEDIN, "Ignore Invalid Records", ("settings", "linkedin", "ignore_invalid_records")),
    (LINKEDIN, "OAuth connection", ("resource", "linkedin", "refresh_token")),
    *[
        (LINKEDIN, f"users column {c}", ("column", "linkedin", c, LINKEDIN_USERS))
        for c in [
            "email",
            "google_aid",
            "apple_idfa",
            "first_name",
            "last_name",
            "company",
            "title",
            "country",
        ]
    ],
    *[
        (LINKEDIN, f"companies column {c}", ("column", "linkedin", c, LINKEDIN_COMPANIES))
        for c in ["company_name", "company_website_domain", "company_email_domain"]
    ],
    # LINE OA Streaming Import: authentication, source, data placement and schedule fields.
    (OA, "TD API Key", ("refused_source", "td_api_key", "no Treasure Data account here")),
    (OA, "Channel Secret Key", ("webhook", "channel_secret_env")),
    (OA, "Data Transfer Name", ("webhook", "name")),
    (OA, "Authentication", ("webhook", "channel_secret_env")),
    (OA, "Datastore (Plazma)", ("refused_source", "datastore", "Plazma is TD's storage")),
    (OA, "Tags", ("webhook", "tags")),
    (OA, "Database", ("webhook", "database")),
    (OA, "Raw Table", ("webhook", "raw_table")),
    (OA, "Events Table", ("webhook", "events_table")),
    (OA, "Append / Always Replace / Replace on New Data", ("webhook", "mode")),
    (OA, "Timestamp-based Partition Key", ("webhook", "partition_column")),
    (OA, "Timezone for your data storage", ("webhook", "timezone")),
    (OA, "Schedule (Off, @hourly, @daily, @monthly, custom cron)", ("webhook", "schedule")),
    (OA, "Delay Transfer", ("webhook", "delay")),
    (OA, "Scheduling Timezone", ("webhook", "scheduling_timezone")),
    (OA, "Source ID (UUID v4)", ("webhook", "source_id")),
    (OA, "Channel secret in the file", ("refused_source", "channel_secret", "environment")),
    *[(OA, f"events column {c}", ("event_column", c)) for c, _ in EVENT_COLUMNS[:12]],
]
for _page in (MESSAGING, CAPI, MAAC, LINKEDIN):
    REFERENCE += [(_page, label, how) for label, how in SCHEDULING]
    REFERENCE += [(_page, label, how) for label, how in MAPPING]


def _check(how: tuple[Any, ...]) -> None:
    kind = how[0]
    if kind in ("settings", "resource"):
        _, name, field = how
        for dest_name in DESTINATIONS if name == "*" else (name,):
            dest = get_destination(dest_name)
            model = dest.settings_class if kind == "settings" else dest.resource_class
            assert field in _fields(model), f"{dest_name} has no {kind} field {field}"
            assert is_read(model, field), f"{dest_name}.{field} is accepted but never read"
            if kind == "resource":
                assert field in resource_settings(dest), f"{field} not a result_settings key"
    elif kind == "webhook":
        assert how[1] in _fields(WebhookSource) and is_read(WebhookSource, how[1])
    elif kind == "dig":
        assert how[1] in (*TOP_LEVEL, *TASK_KEYS, *SCHEDULE_OPTIONS, "type"), how[1]
    elif kind == "column":
        _, name, column, settings = how
        dest = get_destination(name)
        ruleset = dest.ruleset(dest.settings_class(**settings))
        assert column in [c.name for c in ruleset.columns], f"{name} has no column {column}"
    elif kind == "event_column":
        assert how[1] in [c for c, _ in EVENT_COLUMNS]
    elif kind == "mapping":
        assert how[1] in OutputMapping.model_fields or how[1] in PART_KINDS
    elif kind == "refused_source":
        _, key, reason = how
        entry = {"name": "shop_oa", "source_id": "5f0c2f9e-8a1d-4c7b-9e3a-2b6d4f8a1c05", key: "x"}
        with pytest.raises(SourceConfigError, match=reason):
            parse_sources({"sources": [entry]})
    else:  # pragma: no cover - a typo in the table
        raise AssertionError(f"unknown kind {kind!r}")


@pytest.mark.parametrize(
    ("page", "parameter", "how"), REFERENCE, ids=[f"{p}:{n}" for p, n, _ in REFERENCE]
)
def test_every_reference_parameter_is_taken_or_refused(
    page: str, parameter: str, how: tuple[Any, ...]
) -> None:
    _check(how)


def test_td_api_key_in_a_destinations_settings_is_refused_with_tds_reason(
    tmp_path: Path,
) -> None:
    """TD's connector setting td_api_key has no use here: refused saying why and where the
    destination's credentials go, from Python and from a .dig (with its file:line)."""
    for name in DESTINATIONS:
        with pytest.raises(ValueError, match="Treasure Data's API key") as err:
            build_export("x", destination=name, query="select 1", settings={"td_api_key": "k"})
        assert "result_connection in connections.yaml" in str(err.value)
        assert "did you mean" not in str(err.value)
    from line_exports.workflows import load_folder

    (tmp_path / "connections.yaml").write_text("connections:\n  lm:\n    type: line_messaging\n")
    (tmp_path / "q.sql").write_text("SELECT 'U1' AS line_uid\n")
    (tmp_path / "push.dig").write_text(
        "+push:\n  td>: q.sql\n  result_connection: lm\n  result_settings:\n    td_api_key: abc\n"
    )
    errors = [str(e) for e in load_folder(tmp_path).errors]
    assert any(
        e.startswith(f"{tmp_path / 'push.dig'}:5, task +push, setting result_settings.td_api_key")
        and "Treasure Data's API key" in e
        and "access_token" in e
        for e in errors
    ), errors


def test_a_setting_no_destination_has_is_refused_naming_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'segment_name'"):
        build_export("x", destination="maac", query="select 1", settings={"segment_nme": "s"})
