"""digdag's ``mail>``: send an email (a notification, typically in ``_error:``).

Source: digdag-docs ``operators/mail.md`` and ``MailOperatorFactory`` (digdag 0.10).

Options, as digdag reads them (each may also come from ``_export: {mail: {...}}``):

* ``mail>: body.txt`` (a file inside the workflow folder) or ``mail>: {data: TEXT}``; the body
  takes ``${...}``, filled per run;
* ``subject`` (required), ``to`` (an address or a list; required), ``cc``, ``bcc``, ``from``
  (required), ``html: true`` (an HTML body; default plain text);
* ``attach_files: [{path, filename, content_type}]``: files inside the folder; ``filename``
  defaults to the path's last part, ``content_type`` to ``application/octet-stream``.

The SMTP server is the deployment's, never the folder's: digdag's system config
``config.mail.*`` and secrets ``mail.*`` are the environment variables below, read only if the
deployment's allow-list grants them (by default ``MAIL_*``, as ``<TYPE>_*`` for a destination):

=================  =========================================  ========
variable           digdag                                     default
=================  =========================================  ========
``MAIL_HOST``      ``config.mail.host`` / ``mail.host``       required
``MAIL_PORT``      ``config.mail.port`` / ``mail.port``       required
``MAIL_USERNAME``  ``config.mail.username`` / ``mail.username``  none: no AUTH
``MAIL_PASSWORD``  ``config.mail.password`` / ``mail.password``  empty
``MAIL_TLS``       ``config.mail.tls`` / ``mail.tls``         true (STARTTLS when offered)
``MAIL_SSL``       ``config.mail.ssl`` / ``mail.ssl``         false (SMTP over TLS)
``MAIL_FROM``      ``config.mail.from``                       (``from:`` wins)
``MAIL_SUBJECT``   ``config.mail.subject``                    (``subject:`` wins)
=================  =========================================  ========

``host``, ``port``, ``username``, ``password``, ``tls``, ``ssl`` and ``debug`` written in the
``.dig`` are refused: digdag itself never pairs a folder's host with the system's credentials,
and here the folder has no credentials of its own. TLS certificates are verified; a password
is never sent in the clear to a host that is not loopback (a server without STARTTLS then
fails the task). Timeouts are digdag's: 10 s to connect, 60 s per command.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses, make_msgid
from pathlib import Path
from typing import Any

from line_exports.workflows.errors import WorkflowError
from line_exports.workflows.opspec import OperatorSpec

ENV = ("HOST", "PORT", "USERNAME", "PASSWORD", "TLS", "SSL", "FROM", "SUBJECT")
"""``MAIL_<NAME>``: the deployment's SMTP settings."""
SERVER_OPTIONS = ("host", "port", "username", "password", "tls", "ssl", "debug")
REFUSED = {
    name: "the SMTP server is the deployment's: set MAIL_HOST, MAIL_PORT, MAIL_USERNAME, "
    "MAIL_PASSWORD, MAIL_TLS, MAIL_SSL in its environment (digdag's config.mail.* and "
    "secrets mail.*)"
    for name in SERVER_OPTIONS
}
KEYS = ("subject", "to", "cc", "bcc", "from", "html", "attach_files")
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0


def _addresses(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [str(v) for v in items]


def check_address(text: str) -> str:
    """One address (``a@b.example`` or ``Name <a@b.example>``), else ``ValueError``."""
    found = getaddresses([text])
    if len(found) != 1 or "@" not in found[0][1] or not found[0][1].split("@")[1]:
        raise ValueError(f"{text!r} is not an email address")
    if "${" not in text:
        Address(addr_spec=found[0][1])  # raises on a malformed local part or domain
    return text


def _parse(parser: Any, body: Any, label: str, variables: Any, scope: Any) -> dict[str, Any]:
    from line_exports.workflows.digfile import interpolate
    from line_exports.workflows.trust import check_env, inside

    # ``_export: {mail: {host: ...}}`` is refused where it is written (digfile.merge_exports)
    defaults = variables.get("mail") if isinstance(variables.get("mail"), Mapping) else {}

    def option(name: str) -> Any:
        return body.get(name) if name in body else defaults.get(name)

    def text(value: str, setting: str) -> str:
        return interpolate(
            value,
            variables,
            file=parser.file,
            task=label,
            setting=setting,
            line=body.line_of(setting) or body.line_of("mail>"),
            scope=scope,
            defer=True,
        )

    def fail(message: str, setting: str) -> WorkflowError:
        return WorkflowError(
            parser.file, message, task=label, setting=setting, line=body.line_of(setting)
        )

    for name in ENV:
        check_env(
            parser.policy,
            f"MAIL_{name}",
            "mail",
            file=parser.file,
            task=label,
            setting="mail>",
            line=body.line_of("mail>"),
        )
    command = body.get("mail>")
    if isinstance(command, Mapping) and set(command) == {"data"}:
        raw_body, source = str(command["data"]), "mail> data"
    elif isinstance(command, str) and command.strip():
        path = inside(
            parser.root,
            command.strip(),
            base=parser.file.parent,
            file=parser.file,
            what="mail body",
            task=label,
            setting="mail>",
            line=body.line_of("mail>"),
            exists=True,
        )
        raw_body, source = path.read_text(encoding="utf-8"), f"mail> {command.strip()}"
    else:
        raise fail("mail> needs a body file (mail>: body.txt) or {data: TEXT}", "mail>")
    subject = option("subject")
    if subject is None and not os.environ.get("MAIL_SUBJECT"):
        raise fail("mail> needs subject: (or the deployment's MAIL_SUBJECT)", "subject")
    recipients: dict[str, list[str]] = {}
    for name in ("to", "cc", "bcc"):
        values = _addresses(option(name))
        try:
            recipients[name] = [text(check_address(v), name) for v in values]
        except ValueError as exc:
            raise fail(str(exc), name) from None
    if not recipients["to"]:
        raise fail("mail> needs to: [address, ...]", "to")
    sender = option("from")
    if sender is not None:
        try:
            sender = text(check_address(str(sender)), "from")
        except ValueError as exc:
            raise fail(str(exc), "from") from None
    html = option("html") or False
    if html not in (True, False):
        raise fail(f"html {html!r} must be true or false", "html")
    attachments = []
    for item in option("attach_files") or []:
        if not isinstance(item, Mapping) or "path" not in item:
            raise fail("attach_files items are {path, filename, content_type}", "attach_files")
        target = inside(
            parser.root,
            str(item["path"]),
            base=parser.file.parent,
            file=parser.file,
            what="attachment",
            task=label,
            setting="attach_files",
            line=body.line_of("attach_files"),
            exists=True,
        )
        attachments.append(
            {
                "path": str(target),
                "filename": str(item.get("filename") or Path(str(item["path"])).name),
                "content_type": str(item.get("content_type") or "application/octet-stream"),
            }
        )
    return {
        "body": text(raw_body, source),
        "subject": None if subject is None else text(str(subject), "subject"),
        **recipients,
        "from": sender,
        "html": bool(html),
        "attach_files": attachments,
    }


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(f"MAIL_{name}")
    if value is None or value == "":
        return default
    return value.strip().lower() == "true"  # Java's Boolean.parseBoolean


def build_message(params: Mapping[str, Any], fill: Any) -> EmailMessage:
    """The message as digdag's MimeMessage: From/Sender, To, Cc, Bcc, UTF-8 subject and body,
    attachments after the body."""
    sender = fill(params["from"]) if params["from"] else os.environ.get("MAIL_FROM")
    if not sender:
        raise ValueError("mail> needs from: (or the deployment's MAIL_FROM)")
    message = EmailMessage()
    message["From"] = sender
    message["Sender"] = sender
    message["To"] = ", ".join(fill(a) for a in params["to"])
    if params["cc"]:
        message["Cc"] = ", ".join(fill(a) for a in params["cc"])
    if params["bcc"]:
        message["Bcc"] = ", ".join(fill(a) for a in params["bcc"])
    subject = params["subject"]
    message["Subject"] = fill(subject) if subject is not None else os.environ["MAIL_SUBJECT"]
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip(">") or None)
    message.set_content(fill(params["body"]), subtype="html" if params["html"] else "plain")
    for item in params["attach_files"]:
        maintype, _, subtype = item["content_type"].partition("/")
        data = Path(item["path"]).read_bytes()
        message.add_attachment(
            data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=item["filename"],
        )
    return message


def send(message: EmailMessage) -> None:
    """Send through the deployment's SMTP server (:data:`ENV`)."""
    from line_exports.http import is_loopback

    host = os.environ.get("MAIL_HOST")
    port = os.environ.get("MAIL_PORT")
    if not host or not port:
        raise ValueError("missing SMTP configuration: the deployment sets MAIL_HOST and MAIL_PORT")
    username = os.environ.get("MAIL_USERNAME")
    password = os.environ.get("MAIL_PASSWORD", "")
    context = ssl.create_default_context()
    if _flag("SSL", False):
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            host, int(port), timeout=CONNECT_TIMEOUT, context=context
        )
    else:
        client = smtplib.SMTP(host, int(port), timeout=CONNECT_TIMEOUT)
    with client:
        if client.sock is not None:
            client.sock.settimeout(COMMAND_TIMEOUT)
        client.ehlo()
        secure = _flag("SSL", False)
        if not secure and _flag("TLS", True) and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
            secure = True
        if username:
            if not secure and not is_loopback(host):
                raise ValueError(
                    "the SMTP server offers no TLS, and a password is never sent in the clear "
                    "to a host that is not loopback (MAIL_TLS / MAIL_SSL)"
                )
            client.login(username, password)
        client.send_message(message)


def _run(step: Any, context: Any, fill: Any, source: Any) -> dict[str, Any]:
    import dagster as dg

    params = step.params
    try:
        message = build_message(params, fill)
        send(message)
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        # smtplib's messages name the server's reply, never the password
        raise dg.Failure(
            description=f"{step.scope.task_name}: mail>: {type(exc).__name__}: {exc}"
        ) from None
    count = sum(len(params[k]) for k in ("to", "cc", "bcc"))
    context.log.info(
        f"{step.scope.task_name}: mail>: sent {message['Subject']!r} to {count} recipient(s)"
    )
    return {
        "subject": str(message["Subject"]),
        "to": str(message["To"]),
        "recipients": count,
        "message_id": str(message["Message-ID"]),
        "attachments": len(params["attach_files"]),
    }


SPEC = OperatorSpec(
    name="mail>",
    kind="mail",
    keys=KEYS,
    parse=_parse,
    run=_run,
    kinds=frozenset({"email"}),
    refused=REFUSED,
    what="mail>",
)
