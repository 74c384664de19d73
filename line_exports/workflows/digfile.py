"""Reading ``.dig`` files the way digdag does: YAML, ``!include``, ``_export`` and ``${...}``.

digdag writes times like ``daily>: 07:00:00``, which YAML 1.1 would read as a base-60 integer,
so this loader resolves numbers as YAML 1.2 does (plain decimal only). Every mapping remembers
the line of each key so an error can point at it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from line_exports.workflows.errors import WorkflowError
from line_exports.workflows.trust import inside

INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
SECRET_INSIDE = re.compile(r"\$\{\s*secret:([^}]*)\}")


class LineDict(dict):
    """A mapping that remembers the line of each key (1-based)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines: dict[Any, int] = {}
        self.line: int | None = None

    def line_of(self, key: Any) -> int | None:
        return self.lines.get(key, self.line)


class _Include:
    """The ``!include`` key digdag uses to splice another file's mapping in place."""

    def __init__(self, line: int) -> None:
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 numbers, line-aware mappings and ``!include``."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# Decimal integers only. A number with a leading zero (``audience_id: 0339483158``) stays text:
# YAML 1.1 (PyYAML's constructor) would read it as octal (``0123`` -> 83, ``0339`` -> a crash),
# and an ID's leading zeros are part of it.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?[0-9]+[eE][-+]?[0-9]+$"
    ),
    list("-+0123456789."),
)


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        if not isinstance(key, _Include) and key in result:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
            )
        result[key] = value
        result.lines[key] = key_node.start_mark.line + 1
    return result


def _include(loader: _Loader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode) and loader.construct_scalar(node) == "":
        return _Include(node.start_mark.line + 1)  # the ``!include : file`` key form
    return _IncludeValue(str(loader.construct_scalar(node)), node.start_mark.line + 1)  # type: ignore[arg-type]


class _IncludeValue:
    """``key: !include file``: the whole value comes from another file."""

    def __init__(self, path: str, line: int) -> None:
        self.path = path
        self.line = line


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor("!include", _include)


def parse_yaml(text: str) -> Any:
    """YAML text read as ``.dig`` files are (YAML 1.2 numbers, leading zeros kept as text)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def load_yaml(path: Path, root: Path | None = None, _seen: tuple[Path, ...] = ()) -> Any:
    """Parse a YAML/``.dig`` file, splicing ``!include`` files (relative to the including one).

    With ``root`` (the workflow folder) the file and every include must resolve inside it,
    symlinks followed; else a :class:`WorkflowError` names the including file and line.
    """
    resolved = path.resolve()
    if root is not None and not _seen:
        inside(root, path.name, base=path.parent, file=path, what="file")
    path = resolved
    if path in _seen:
        raise WorkflowError(path, f"!include cycle: {' -> '.join(p.name for p in (*_seen, path))}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowError(path, f"cannot read file: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise WorkflowError(path, f"malformed YAML: {message}", line=line) from None
    except yaml.YAMLError as exc:
        raise WorkflowError(path, f"malformed YAML: {exc}") from None
    return _splice(data, path, (*_seen, path), root)


def _splice(value: Any, path: Path, seen: tuple[Path, ...], root: Path | None) -> Any:
    if isinstance(value, _IncludeValue):
        return _load_included(path, value.path, value.line, seen, root)
    if isinstance(value, LineDict):
        out = LineDict()
        out.line = value.line
        for key, item in value.items():
            if isinstance(key, _Include):
                included = _load_included(path, str(item), key.line, seen, root)
                if not isinstance(included, Mapping):
                    raise WorkflowError(
                        path, f"!include {item}: the file must hold a mapping", line=key.line
                    )
                for inner_key, inner_value in included.items():
                    out[inner_key] = inner_value
                    out.lines[inner_key] = key.line
                continue
            out[key] = _splice(item, path, seen, root)
            out.lines[key] = value.lines.get(key, value.line or 0)
        return out
    if isinstance(value, list):
        return [_splice(v, path, seen, root) for v in value]
    return value


def _load_included(
    path: Path, target: str, line: int, seen: tuple[Path, ...], root: Path | None
) -> Any:
    if root is not None:
        file = inside(root, target, base=path.parent, file=path, what="!include", line=line)
    else:
        file = (path.parent / target).resolve()
    if not file.exists():
        raise WorkflowError(path, f"!include {target}: no such file ({file})", line=line)
    return load_yaml(file, root, seen)


def merge_exports(
    base: Mapping[str, Any], export: Any, file: Path, task: str | None, line: int | None
) -> dict[str, Any]:
    """digdag's ``_export``: nested mappings merge (``td: {database: x}`` adds ``td.database``).

    ``mail: {host: ...}`` (an SMTP server option, :data:`.mail.REFUSED`) is refused here, at the
    line where the ``_export`` writes it: the SMTP server is the deployment's.
    """
    if export is None:
        return dict(base)
    if not isinstance(export, Mapping):
        raise WorkflowError(
            file, "_export must be a mapping of variables", task=task, setting="_export", line=line
        )
    mail = export.get("mail")
    if isinstance(mail, Mapping):
        from line_exports.workflows.mail import REFUSED

        for key in mail:
            if key in REFUSED:
                where = mail.line_of(key) if isinstance(mail, LineDict) else None
                raise WorkflowError(
                    file,
                    f"_export mail.{key}: {REFUSED[key]}",
                    task=task,
                    setting=f"mail.{key}",
                    line=where or line,
                )
    return _merge(base, export)


def _merge(base: Mapping[str, Any], export: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in export.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[str(key)] = _merge(merged[key], value)
        else:
            merged[str(key)] = value
    return merged


def lookup(variables: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """``td.database`` -> variables['td']['database'] (or a literal dotted key)."""
    if name in variables:
        return True, variables[name]
    current: Any = variables
    for part in name.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return False, None
        current = current[part]
    return True, current


def secret_env_name(name: str) -> str:
    """The environment variable behind ``${secret:name}``: the name itself when set, else
    upper case with ``.``/``-`` as ``_`` (``maac.api_token`` -> ``MAAC_API_TOKEN``)."""
    if name in os.environ:
        return name
    return re.sub(r"[^A-Za-z0-9_]", "_", name).upper()


class SecretRef(str):
    """A ``${secret:name}`` value: stays a reference (env var name) until the run resolves it."""

    env: str

    def __new__(cls, name: str) -> SecretRef:
        obj = super().__new__(cls, f"${{secret:{name}}}")
        obj.env = secret_env_name(name)
        return obj


def interpolate(
    text: str,
    variables: Mapping[str, Any],
    *,
    file: Path,
    task: str | None,
    setting: str,
    line: int | None = None,
    timezone: str | None = None,
    allow_secret: bool = False,
    scope: Any = None,
    defer: bool = False,
    check_secret: Callable[[str], None] | None = None,
) -> Any:
    """Fill ``${...}`` from ``variables`` (:mod:`.variables`: digdag's expressions and built-ins).

    A value reading the run (``${session_date}``, ``${moment(...)}``) stays as written for run
    time where ``defer`` (or ``timezone``: queries) allows it, else it is an error;
    ``${secret:name}`` must be a whole value of a credential and becomes a :class:`SecretRef`.
    Anything unresolved is an error naming the variable and the expression. ``check_secret``
    is called with the environment variable's name before it is read (the deployment's
    allow-list).
    """
    stripped = text.strip()
    whole = INTERPOLATION.fullmatch(stripped)
    if whole and whole.group(1).strip().startswith("secret:"):
        name = whole.group(1).strip()[len("secret:") :].strip()
        if not allow_secret:
            raise WorkflowError(
                file,
                f"${{secret:{name}}} is only allowed as the value of a credential (it never goes into run config)",
                task=task,
                setting=setting,
                line=line,
            )
        ref = SecretRef(name)
        if check_secret is not None:
            check_secret(ref.env)
        if ref.env not in os.environ:
            raise WorkflowError(
                file,
                f"secret {name!r} is not set: export the environment variable {ref.env}",
                task=task,
                setting=setting,
                line=line,
            )
        return ref

    if SECRET_INSIDE.search(text):
        name = SECRET_INSIDE.search(text).group(1).strip()  # type: ignore[union-attr]
        raise WorkflowError(
            file,
            f"${{secret:{name}}} must be the whole value of a credential setting",
            task=task,
            setting=setting,
            line=line,
        )
    from line_exports.workflows.variables import RunScope, expand

    if scope is None:
        scope = RunScope(str(variables.get("timezone") or "UTC"), None, task or "")
    return expand(
        text,
        variables,
        scope,
        file=file,
        task=task,
        setting=setting,
        line=line,
        defer=defer or timezone is not None,
    )
