"""One check of a LINE message rule everywhere it is enforced: when an export is defined
(:meth:`MessageTemplate.parse`), and by the sandbox over loopback HTTP as LINE answers it, both
its validate endpoint and a real push (LINE's 400 with the same property paths and words, and
nothing delivered). A message that keeps the rules passes all three and is delivered as written.

Used by the rule tables of test_line_message_rules_fields, test_line_message_rules_places and
test_line_messaging_cross_rules, which differ only in their tables.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from line_exports.destinations.line_messaging.messages import MessageTemplate, TemplateError
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_line_messaging import TOKEN, user

Problems = list[tuple[str, str]]


def buttons(action: dict[str, Any]) -> dict[str, Any]:
    """A buttons template message holding one action."""
    return {
        "type": "template",
        "altText": "alt",
        "template": {"type": "buttons", "text": "pick", "actions": [action]},
    }


def post(server: SandboxServer, endpoint: str, body: dict[str, Any]) -> requests.Response:
    """POST ``body`` to the sandbox's ``/v2/bot/message/{endpoint}`` with the channel token."""
    return requests.post(
        f"{server.url}/v2/bot/message/{endpoint}",
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )


def sandbox_says(server: SandboxServer, message: dict[str, Any], endpoint: str) -> Problems:
    """LINE's (the sandbox's) problems ``(property, message)`` with one message sent to
    ``endpoint`` (``validate/push`` or ``push``, to one user): [] when it answers 200."""
    body: dict[str, Any] = {"messages": [message]}
    if endpoint == "push":
        body["to"] = user(1)
    answer = post(server, endpoint, body)
    if answer.status_code == 200:
        return []
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].startswith("The request body has"), answer.text
    return [(d["property"], d["message"]) for d in answer.json()["details"]]


def refused_everywhere(server: SandboxServer, message: dict[str, Any], problems: Problems) -> None:
    """``message`` is refused when an export is defined, its error ending with ``problems``
    (``path: words; ...``), and by the sandbox's validate endpoint and a push with exactly
    ``problems``; the push delivers nothing."""
    with pytest.raises(TemplateError) as refused:
        MessageTemplate.parse(json.dumps(message))
    said = str(refused.value)
    assert said.endswith("; ".join(f"{path}: {words}" for path, words in problems)), said
    assert sandbox_says(server, message, "validate/push") == problems
    assert sandbox_says(server, message, "push") == problems
    assert store_of(server.sandbox).received(user(1)) == []


def kept_everywhere(server: SandboxServer, message: dict[str, Any]) -> None:
    """``message`` is accepted when an export is defined, by the validate endpoint and by a
    push, which delivers it as written."""
    MessageTemplate.parse(json.dumps(message))
    assert sandbox_says(server, message, "validate/push") == []
    assert sandbox_says(server, message, "push") == []
    assert store_of(server.sandbox).received(user(1)) == [[message]]
