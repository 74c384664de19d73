"""Connections: a name in ``result_connection`` -> a destination type and its credentials.

``connections.yaml`` (next to the workflows) declares each connection once::

    source:                      # optional: where td> queries run (default embedded DuckDB)
      url_env: WAREHOUSE_URL
    connections:
      maac_members:
        type: maac
        api_token_env: MAAC_API_TOKEN   # read only when set, as dg.EnvVar (never stored)
        base_url_env: MAAC_BASE_URL

Any field of the destination's resource may be given as ``<field>: value`` or
``<field>_env: ENV_VAR``. Credentials (secret fields) only come from the environment
(``_env`` or ``${secret:name}``). With no variable set, the resource keeps its defaults, which
for every destination means the local sandbox. The TD CLI ``--result`` JSON (``type`` plus
settings and credentials in one object) is read by :func:`parse_td_result`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from pydantic import ValidationError

from line_exports.destination import Destination
from line_exports.destinations import destinations, get_destination
from line_exports.secret_fields import is_secret
from line_exports.workflows.digfile import (
    LineDict,
    SecretRef,
    interpolate,
    load_yaml,
    parse_yaml,
)
from line_exports.workflows.errors import WorkflowError, closest
from line_exports.workflows.trust import (
    TrustPolicy,
    check_endpoint,
    check_env,
    credential_from_env,
    env_value,
    inside,
    is_url_field,
)

CONNECTIONS_FILE = "connections.yaml"


def secret_fields(dest: Destination) -> set[str]:
    """Fields of the destination's resource marked secret: only ever from the environment."""
    return {name for name, info in dest.resource_class.model_fields.items() if is_secret(info)}


def resource_fields(dest: Destination) -> set[str]:
    return set(dest.resource_class.model_fields)


def resource_settings(dest: Destination) -> set[str]:
    """``result_settings`` names that belong on the resource: auth, secrets, and resource-only
    fields (they never become run config)."""
    settings = set(dest.settings_class.model_fields)
    return set(dest.auth_fields) | secret_fields(dest) | (resource_fields(dest) - settings)


def known_type(
    type_name: Any, file: Path, task: str | None, setting: str, line: int | None
) -> Destination:
    """The destination for ``type_name`` or an error listing the known types."""
    name = str(type_name or "")
    try:
        return get_destination(name)
    except ValueError:
        known = sorted(destinations())
        raise WorkflowError(
            file,
            f"unknown destination type {name!r}{closest(name, known)}; known: {', '.join(known)}",
            task=task,
            setting=setting,
            line=line,
        ) from None


def resource_value(value: Any) -> Any:
    """A secret reference becomes ``dg.EnvVar`` (resolved at run time, never stored)."""
    return dg.EnvVar(value.env) if isinstance(value, SecretRef) else value


def secret_checker(
    policy: TrustPolicy,
    type_name: str | None,
    file: Path,
    task: str | None,
    setting: str | None,
    line: int | None,
) -> Any:
    """``interpolate``'s ``check_secret``: the deployment's allow-list for ``${secret:...}``."""

    def check(variable: str) -> None:
        check_env(policy, variable, type_name, file=file, task=task, setting=setting, line=line)

    return check


@dataclass
class Connection:
    """A named destination with the resource values it was declared with.

    ``url_env`` maps a URL field to the deployment variable it was read from (its value is
    checked, never shown); ``lines`` locates each field for errors."""

    name: str
    destination: Destination
    values: dict[str, Any] = field(default_factory=dict)
    file: Path | None = None
    policy: TrustPolicy = field(default_factory=TrustPolicy)
    url_env: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int | None] = field(default_factory=dict)

    def resource(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        file: Path | None = None,
        task: str | None = None,
        lines: Mapping[str, int | None] | None = None,
    ) -> dg.ConfigurableResource:
        """The resource; every URL it would talk to is checked against the trust policy."""
        overrides = dict(overrides or {})
        values = {**self.values, **{k: resource_value(v) for k, v in overrides.items()}}
        with_env_credential = credential_from_env(values, secret_fields(self.destination))
        for name, value in values.items():
            if not is_url_field(name) or value is None:
                continue
            in_task = name in overrides
            if in_task and isinstance(overrides[name], SecretRef):
                raise WorkflowError(
                    file or self.file or Path("."),
                    f"{name} is a URL, not a credential: ${{secret:...}} cannot fill it",
                    task=task,
                    setting=f"result_settings.{name}",
                    line=(lines or {}).get(name),
                )
            variable = None if in_task else self.url_env.get(name)
            if isinstance(value, dg.EnvVar):
                variable = variable or value.env_var_name
                url = env_value(variable) or ""
            else:
                url = str(value)
            check_endpoint(
                self.policy,
                self.destination.type_name,
                url,
                from_env=variable,
                credentials_from_env=with_env_credential,
                file=(file or self.file or Path(".")) if in_task else (self.file or Path(".")),
                task=task if in_task else f"connection {self.name}",
                setting=f"result_settings.{name}" if in_task else name,
                line=(lines or {}).get(name) if in_task else self.lines.get(name),
            )
        return self.destination.resource_class(**values)


@dataclass
class ConnectionsFile:
    """What ``connections.yaml`` declares: the query source and the connections."""

    connections: dict[str, Connection] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    errors: list[WorkflowError] = field(default_factory=list)
    file: Path | None = None


def _env_values(
    spec: Mapping[str, Any],
    allowed: set[str],
    secrets: set[str],
    file: Path,
    where: str,
    lines: LineDict | None,
    policy: TrustPolicy,
    type_name: str | None,
    url_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``field: value`` / ``field_env: VAR`` -> resource values. A variable is read only when
    the policy allows it and it is set, and then wins over a literal ``field:`` (the fallback,
    e.g. a sandbox tag id). A URL field read from a variable stays a ``dg.EnvVar`` (its name
    goes in ``url_env``), so its value never shows in the UI."""
    literal: dict[str, Any] = {}
    from_env: dict[str, Any] = {}
    for key, raw in spec.items():
        key = str(key)
        line = lines.line_of(key) if lines is not None else None
        name = key[: -len("_env")] if key.endswith("_env") and key not in allowed else key
        if name not in allowed:
            suggestions = sorted(allowed | {f"{a}_env" for a in allowed})
            raise WorkflowError(
                file,
                f"unknown field {key!r}{closest(key, suggestions)}",
                task=where,
                setting=key,
                line=line,
            )
        if raw is None:
            continue
        if key != name:
            variable = str(raw)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variable):
                raise WorkflowError(
                    file,
                    f"{variable!r} is not an environment variable name",
                    task=where,
                    setting=key,
                    line=line,
                )
            check_env(policy, variable, type_name, file=file, task=where, setting=key, line=line)
            if os.environ.get(variable):
                keep_name = name in secrets or is_url_field(name)
                from_env[name] = dg.EnvVar(variable) if keep_name else os.environ[variable]
                if is_url_field(name) and url_env is not None:
                    url_env[name] = variable
            continue
        value = (
            interpolate(
                raw,
                {},
                file=file,
                task=where,
                setting=key,
                line=line,
                allow_secret=True,
                check_secret=secret_checker(policy, type_name, file, where, key, line),
            )
            if isinstance(raw, str)
            else raw
        )
        if isinstance(value, SecretRef) and is_url_field(name):
            raise WorkflowError(
                file,
                f"{name} is a URL, not a credential: write {name}_env: ENV_VAR or the URL",
                task=where,
                setting=key,
                line=line,
            )
        if name in secrets and not isinstance(value, SecretRef):
            raise WorkflowError(
                file,
                f"{name} is a credential: write {name}_env: ENV_VAR or ${{secret:name}}, not the value",
                task=where,
                setting=key,
                line=line,
            )
        literal[name] = resource_value(value)
    return {**literal, **from_env}


def load_connections(
    path: Path, policy: TrustPolicy | None = None, root: Path | None = None
) -> ConnectionsFile:
    """Read ``connections.yaml``; each broken connection is an error, the others still load.

    ``policy`` is the deployment's grant (default: :class:`TrustPolicy`); ``root`` the folder
    its ``!include`` and ``duckdb_path`` must stay in (default: the file's own folder)."""
    policy = policy or TrustPolicy.from_environment()
    root = root or path.parent
    result = ConnectionsFile(file=path)
    if not path.exists():
        return result
    try:
        data = load_yaml(path, root)
    except WorkflowError as exc:
        result.errors.append(exc)
        return result
    if data is None:
        return result
    if not isinstance(data, Mapping):
        result.errors.append(
            WorkflowError(path, "must be a mapping with 'connections:' (and optionally 'source:')")
        )
        return result
    for key in data:
        if key not in ("connections", "source"):
            result.errors.append(
                WorkflowError(
                    path,
                    f"unknown top-level key {key!r}{closest(str(key), ['connections', 'source'])}",
                    line=data.line_of(key),
                )
            )
    source = data.get("source") or {}
    if source:
        from line_exports.sources import SqlSource

        fields = set(SqlSource.model_fields) - set(SqlSource.DEPLOYMENT_FIELDS)
        try:
            result.source = _env_values(
                source,
                fields,
                {"url"},
                path,
                "source",
                source if isinstance(source, LineDict) else None,
                policy,
                None,
            )
            if isinstance(result.source.get("duckdb_path"), str):
                result.source["duckdb_path"] = str(
                    inside(
                        root,
                        result.source["duckdb_path"],
                        base=path.parent,
                        file=path,
                        what="duckdb_path",
                        task="source",
                        setting="duckdb_path",
                        line=source.line_of("duckdb_path")
                        if isinstance(source, LineDict)
                        else None,
                    )
                )
        except WorkflowError as exc:
            result.errors.append(exc)
    for name, spec in (data.get("connections") or {}).items():
        line = data["connections"].line_of(name)
        try:
            if not isinstance(spec, Mapping):
                raise WorkflowError(
                    path,
                    "a connection is a mapping with type: and its fields",
                    task=f"connection {name}",
                    line=line,
                )
            dest = known_type(
                spec.get("type"),
                path,
                f"connection {name}",
                "type",
                spec.line_of("type") if isinstance(spec, LineDict) else line,
            )
            rest = {k: v for k, v in spec.items() if k not in ("type", "description")}
            url_env: dict[str, str] = {}
            values = _env_values(
                rest,
                resource_fields(dest),
                secret_fields(dest),
                path,
                f"connection {name}",
                spec if isinstance(spec, LineDict) else None,
                policy,
                dest.type_name,
                url_env,
            )
            field_lines = {
                str(k).removesuffix("_env"): spec.line_of(k)
                for k in rest
                if isinstance(spec, LineDict)
            }
            connection = Connection(str(name), dest, values, path, policy, url_env, field_lines)
            try:
                connection.resource()
            except ValidationError as exc:
                first = exc.errors()[0]
                raise WorkflowError(
                    path,
                    first["msg"],
                    task=f"connection {name}",
                    setting=".".join(str(p) for p in first["loc"]),
                    line=line,
                ) from None
            result.connections[str(name)] = connection
        except WorkflowError as exc:
            result.errors.append(exc)
    return result


def parse_td_result(
    text_or_path: str | Path, base: Path | None = None, root: Path | None = None
) -> dict[str, Any]:
    """TD CLI ``td query --result '<json>'``: a JSON object with ``type`` and the settings,
    given as the JSON text or a path to a ``.json`` file, or a ``.yml``/``.yaml`` file
    (relative to ``base``; with ``root`` it must resolve inside that folder, symlinks
    followed); settings under ``out:`` (as the references write them) are read from there."""
    text = str(text_or_path).strip()
    source = "--result JSON"
    if not text.startswith("{"):
        path = Path(text)
        if base is not None and not path.is_absolute():
            path = base / path
        if root is not None and not path.resolve().is_relative_to(root.resolve()):
            raise ValueError(
                f"--result {text!r} resolves outside the workflow folder {root}; a workflow "
                "may only read files inside its folder"
            )
        if not path.exists():
            raise ValueError(f"--result {text!r} is neither a JSON object nor an existing file")
        source = str(path)
        text = path.read_text(encoding="utf-8")
    if source.endswith((".yml", ".yaml")):
        try:
            data = parse_yaml(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{source}: not valid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    if isinstance(data, dict) and set(data) == {"out"} and isinstance(data["out"], dict):
        data = data["out"]  # the references' examples write the settings under out:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: must be a JSON object with 'type' and the settings")
    if "type" not in data:
        raise ValueError(
            f"{source}: missing 'type' (e.g. line_messaging, line_conversion, maac, linkedin)"
        )
    return data
