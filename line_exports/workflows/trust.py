"""What a workflow folder may reach: files, environment variables, hosts and the SQL engine.

A workflow folder is another team's code. The deployment (``load_workflows``,
``WorkflowsComponent``, or the process environment: ``LINE_EXPORTS_ALLOWED_ENV``,
``LINE_EXPORTS_ALLOWED_HOSTS`` (comma-separated), ``LINE_EXPORTS_EXTERNAL_ACCESS=1``, which the
CLI honours too) decides what it may reach; nothing in the folder can widen it:

- files: ``td>``, ``!include`` and ``result: x.json`` paths resolve (symlinks followed) inside
  the folder, else a load error naming file:line;
- environment: ``${secret:name}`` and ``<field>_env: VAR`` read only variables matching the
  allow-list: by default ``<TYPE>_*`` for a connection of destination ``<type>``
  (``MAAC_*``, ``LINE_MESSAGING_*``, ...) and ``WAREHOUSE_URL`` for the query source, plus
  the deployment's ``allowed_env`` patterns (``fnmatch``, e.g. ``SHOP_A_*``);
- hosts: a destination's URL settings (``base_url``, ``api_url``, ...) must name one of its
  official hosts over HTTPS, a host of ``allowed_hosts`` (HTTPS, or any scheme on loopback), or
  loopback (the sandbox). A loopback URL written in the folder gets no credential from the
  environment: only a deployment-set variable or ``allowed_hosts`` can pair the two;
- SQL: the embedded DuckDB runs the folder's queries with ``enable_external_access=false`` and
  ``lock_configuration=true`` unless the deployment sets ``external_access=True``.

The HTTP core adds one rule for everything: a bearer token never goes over plain HTTP to a
non-loopback host (:func:`line_exports.http.check_transport`).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from line_exports.http import is_loopback
from line_exports.workflows.errors import WorkflowError

SOURCE_ENV = ("WAREHOUSE_URL",)
"""Variables the ``source:`` of ``connections.yaml`` may read by default."""


def official_hosts() -> dict[str, tuple[str, ...]]:
    """Destination type -> the API hosts its reference documents (always over HTTPS)."""
    from line_exports.destinations import line_conversion, linkedin, maac
    from line_exports.destinations.line_messaging import settings as line_messaging

    def hosts(*urls: str) -> tuple[str, ...]:
        return tuple(urlsplit(u).hostname or "" for u in urls)

    return {
        "maac": hosts(*maac.HOSTS.values()),
        "line_messaging": hosts(line_messaging.API_HOST, line_messaging.DATA_HOST),
        "line_conversion": hosts(line_conversion.API_URL),
        "linkedin": hosts(linkedin.API_URL, linkedin.OAUTH_URL),
    }


def is_url_field(name: str) -> bool:
    """A resource field holding an endpoint: ``base_url``, ``data_base_url``, ``api_url``, ..."""
    return name.endswith("_url")


@dataclass(frozen=True)
class TrustPolicy:
    """The deployment's grant to a workflow folder (never read from the folder itself).

    ``allowed_env``: extra ``fnmatch`` patterns of environment variables any connection may
    read. ``allowed_hosts``: extra hosts (``host`` or ``host:port``) a destination may talk to
    (HTTPS unless loopback), e.g. a company proxy. ``external_access``: let the folder's SQL
    read and write files, attach databases and load extensions in the embedded DuckDB (only for
    a folder as trusted as the deployment).
    """

    allowed_env: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    external_access: bool = False

    @classmethod
    def of(
        cls,
        allowed_env: Iterable[str] | None = None,
        allowed_hosts: Iterable[str] | None = None,
        external_access: bool = False,
    ) -> TrustPolicy:
        return cls(tuple(allowed_env or ()), tuple(allowed_hosts or ()), external_access)

    @classmethod
    def from_environment(cls) -> TrustPolicy:
        """The grants this process's environment gives (set by the deployment, never by a
        folder): ``LINE_EXPORTS_ALLOWED_ENV``, ``LINE_EXPORTS_ALLOWED_HOSTS`` (comma-separated)
        and ``LINE_EXPORTS_EXTERNAL_ACCESS`` (``1``/``true``)."""

        def listed(name: str) -> tuple[str, ...]:
            return tuple(p.strip() for p in os.environ.get(name, "").split(",") if p.strip())

        access = os.environ.get("LINE_EXPORTS_EXTERNAL_ACCESS", "").strip().lower()
        return cls(
            listed("LINE_EXPORTS_ALLOWED_ENV"),
            listed("LINE_EXPORTS_ALLOWED_HOSTS"),
            access in ("1", "true", "yes"),
        )

    def widened(
        self, allowed_env: Iterable[str], allowed_hosts: Iterable[str], external_access: bool
    ) -> TrustPolicy:
        """This policy plus more grants."""
        return TrustPolicy(
            (*self.allowed_env, *allowed_env),
            (*self.allowed_hosts, *allowed_hosts),
            self.external_access or external_access,
        )

    def env_patterns(self, type_name: str | None) -> tuple[str, ...]:
        """The allow-list for a connection of ``type_name`` (``None``: the query source)."""
        own = (f"{type_name.upper()}_*",) if type_name else SOURCE_ENV
        return (*own, *self.allowed_env)

    def may_read_env(self, name: str, type_name: str | None) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.env_patterns(type_name))

    def host_granted(self, host: str, port: int | None) -> bool:
        """``host`` (or ``host:port``) is in the deployment's ``allowed_hosts``."""
        wanted = {host.lower(), f"{host.lower()}:{port}" if port else host.lower()}
        return any(h.lower() in wanted for h in self.allowed_hosts)


def inside(
    root: Path,
    target: str,
    *,
    base: Path,
    file: Path,
    what: str,
    task: str | None = None,
    setting: str | None = None,
    line: int | None = None,
    exists: bool = False,
) -> Path:
    """``target`` (relative to ``base``) resolved with symlinks followed; it must stay inside
    ``root`` (the workflow folder), and with ``exists`` be a file, else a
    :class:`WorkflowError` naming file:line."""
    resolved = (base / target).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise WorkflowError(
            file,
            f"{what} {target} resolves outside the workflow folder {root} (to {resolved}); "
            "a workflow may only read files inside its folder",
            task=task,
            setting=setting,
            line=line,
        )
    if exists and not resolved.is_file():
        raise WorkflowError(
            file,
            f"{what} {target} not found (looked for {resolved})",
            task=task,
            setting=setting,
            line=line,
        )
    return resolved


def check_env(
    policy: TrustPolicy,
    variable: str,
    type_name: str | None,
    *,
    file: Path,
    task: str | None,
    setting: str | None,
    line: int | None,
) -> None:
    """The folder may read ``variable`` for a connection of ``type_name``, else a load error."""
    if policy.may_read_env(variable, type_name):
        return
    raise WorkflowError(
        file,
        f"environment variable {variable} is not allowed for this "
        f"{'connection' if type_name else 'source'} (allowed: "
        f"{', '.join(policy.env_patterns(type_name))}); the deployment grants more with "
        "allowed_env (load_workflows, WorkflowsComponent or LINE_EXPORTS_ALLOWED_ENV)",
        task=task,
        setting=setting,
        line=line,
    )


def check_endpoint(
    policy: TrustPolicy,
    type_name: str,
    url: str,
    *,
    from_env: str | None,
    credentials_from_env: bool,
    file: Path,
    task: str | None,
    setting: str,
    line: int | None,
) -> None:
    """A destination URL the folder chose is one the deployment allows (see module doc).

    ``from_env`` names the variable the URL came from: its value is never put in a message
    (it may be anything the deployment holds)."""
    shown = f"the value of {from_env}" if from_env else repr(url)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        problem = "is not an http(s) URL"
    elif policy.host_granted(host, port):
        problem = (
            "" if parts.scheme == "https" or is_loopback(host) else "is plain HTTP (use https)"
        )
    elif is_loopback(host):
        problem = (
            "points at loopback and would carry a credential from the environment; only the "
            "deployment pairs those (a variable it sets, or allowed_hosts)"
            if credentials_from_env and not from_env
            else ""
        )
    elif host in official_hosts().get(type_name, ()):
        problem = "" if parts.scheme == "https" else "is plain HTTP (use https)"
    else:
        problem = (
            "is not an official host of this API, loopback, or in the deployment's allowed_hosts"
        )
    if problem:
        official = ", ".join(f"https://{h}" for h in official_hosts().get(type_name, ()))
        raise WorkflowError(
            file,
            f"{shown} {problem} (allowed: {official or 'none'}, loopback"
            f"{', ' + ', '.join(policy.allowed_hosts) if policy.allowed_hosts else ''})",
            task=task,
            setting=setting,
            line=line,
        )


def env_value(variable: str) -> str | None:
    """The variable's value, read only after :func:`check_env` allowed it."""
    return os.environ.get(variable)


def credential_from_env(values: Mapping[str, Any], secrets: Iterable[str]) -> bool:
    """Some secret field is filled from the environment (a ``dg.EnvVar``)."""
    import dagster as dg

    return any(isinstance(values.get(name), dg.EnvVar) for name in secrets)


def looks_like_sql_file(text: str) -> bool:
    """A ``query:`` value that is a file name (one word ending in ``.sql``), not SQL."""
    value = text.strip()
    return value.lower().endswith(".sql") and not any(c.isspace() for c in value)
