"""LINE's rules over which fields of an object must or may be used together (issue 13,
VERIFY-13f R1, R2, R5), one definition (:data:`.limits.RULES`, :data:`.limits.EXCLUSIVE`,
:data:`.limits.REQUIRED`) applied when an export is defined, per rendered row, and by the
sandbox, which answers a direct POST of the body with LINE's 400:

- R1 postback action: "The ``displayText`` and ``text`` properties can't both be used at the
  same time" (Messaging API reference, "Postback action");
- R2 fields the reference's parameter tables mark required but ``messaging-api.yml`` (so LINE's
  models) lets be null: URI action ``uri``, postback ``data``, message action ``text``,
  datetime picker ``data``, rich menu switch ``richMenuAliasId`` and ``data`` ...;
- R5 "Logical operator objects" of a narrowcast's demographic filter: "Be sure to specify only
  one of these three properties (``and``, ``or``, or ``not``)" (the sandbox answered an operator
  with none 500, ``KeyError: 'not'``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from line_exports.destinations.line_messaging.messages import MessageTemplate, TemplateError
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.line_message_checks import (
    buttons,
    kept_everywhere,
    post,
    refused_everywhere,
)
from line_exports_tests.test_line_messaging import export, resource, run, user

BOTH = "The displayText and text properties can't both be used at the same time"
NULL = "Must not be null"
OPERATOR = "An operator object needs exactly one of and, or, not"
ACTION = "messages[0].template.actions[0]"


BROKEN = [  # (case, message, the problems LINE states)
    ("postback text and displayText",
     buttons({"type": "postback", "label": "L", "data": "d", "text": "a", "displayText": "b"}),
     [(f"{ACTION}.text", BOTH)]),
    ("quick reply postback text and displayText",
     {"type": "text", "text": "hi", "quickReply": {"items": [{"type": "action", "action": {
         "type": "postback", "label": "L", "data": "d", "text": "a", "displayText": "b"}}]}},
     [("messages[0].quickReply.items[0].action.text", BOTH)]),
    ("uri action without uri", buttons({"type": "uri", "label": "U"}), [(f"{ACTION}.uri", NULL)]),
    ("postback without data", buttons({"type": "postback", "label": "P"}),
     [(f"{ACTION}.data", NULL)]),
    ("message action without text", buttons({"type": "message", "label": "M"}),
     [(f"{ACTION}.text", NULL)]),
    ("datetimepicker without data", buttons({"type": "datetimepicker", "label": "D", "mode": "date"}),
     [(f"{ACTION}.data", NULL)]),
    ("flex button postback without data",
     {"type": "flex", "altText": "a", "contents": {"type": "bubble", "body": {
         "type": "box", "layout": "vertical", "contents": [
             {"type": "button", "action": {"type": "postback", "label": "P"}}]}}},
     [("messages[0].contents.body.contents[0].action.data", NULL)]),
    ("emoji without productId",
     {"type": "text", "text": "$ hi", "emojis": [{"index": 0, "emojiId": "001"}]},
     [("messages[0].emojis[0].productId", NULL)]),
]  # fmt: skip
KEPT = [
    ("postback displayText only",
     buttons({"type": "postback", "label": "L", "data": "d", "displayText": "b"})),
    ("postback text only", buttons({"type": "postback", "label": "L", "data": "d", "text": "a"})),
    ("uri action", buttons({"type": "uri", "label": "U", "uri": "https://example.com"})),
    ("datetimepicker", buttons({"type": "datetimepicker", "label": "D", "data": "d", "mode": "date"})),
]  # fmt: skip


@pytest.mark.parametrize(("case", "message", "problems"), BROKEN, ids=[c[0] for c in BROKEN])
def test_a_field_rule_broken_is_refused_at_definition_and_by_the_sandbox_in_one_wording(
    sandbox_server: SandboxServer, case: str, message: dict[str, Any], problems: list[Any]
) -> None:
    refused_everywhere(sandbox_server, message, problems)


@pytest.mark.parametrize(("case", "message"), KEPT, ids=[c[0] for c in KEPT])
def test_messages_that_keep_the_field_rules_pass_both(
    sandbox_server: SandboxServer, case: str, message: dict[str, Any]
) -> None:
    kept_everywhere(sandbox_server, message)


def test_richmenuswitch_without_alias_or_data_is_refused_as_required() -> None:
    message = {"type": "text", "text": "hi", "quickReply": {"items": [
        {"type": "action", "action": {"type": "richmenuswitch", "label": "x"}}]}}  # fmt: skip
    with pytest.raises(TemplateError) as refused:
        MessageTemplate.parse(json.dumps(message))
    where = "messages[0].quickReply.items[0].action"
    assert f"{where}.richMenuAliasId: {NULL}" in str(refused.value)
    assert f"{where}.data: {NULL}" in str(refused.value)


def test_a_push_template_filling_both_text_and_display_text_is_refused_when_defined(
    sandbox_server: SandboxServer,
) -> None:
    """The verifier's template (R1): both properties filled per row. A placeholder fills a
    string and never removes a key, so every row would send both: refused at definition, not
    row by row. Filling only ``displayText`` per row is pushed, each row its own value."""
    both = {
        "type": "postback",
        "label": "P",
        "data": "d",
        "displayText": "{{dt}}",
        "text": "{{tx}}",
    }
    with pytest.raises(Exception, match=re.escape(f"{ACTION}.text: {BOTH}")):
        export("push_postback_both", "SELECT 1", target="push_message",
               template_message=json.dumps(buttons(both)))  # fmt: skip
    one = {"type": "postback", "label": "P", "data": "d", "displayText": "{{dt}}"}
    rows = " UNION ALL ".join(
        f"SELECT {n} AS n, '{user(n)}' AS id, 'show {n}' AS dt" for n in (1, 2)
    )
    meta = run(
        export(
            "push_postback_one",
            f"SELECT id, dt FROM ({rows}) ORDER BY n",
            target="push_message",
            template_message=json.dumps(buttons(one)),
        ),
        resource(sandbox_server),
    )
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (2, 0, 2), meta
    store = store_of(sandbox_server.sandbox)
    for n in (1, 2):
        (sent,) = store.received(user(n))
        assert sent[0]["template"]["actions"][0] == {**one, "displayText": f"show {n}"}


MALE = {"type": "gender", "oneOf": ["male"]}
FEMALE = {"type": "gender", "oneOf": ["female"]}
OPERATORS = [  # (case, demographic filter, where LINE says it breaks the rule)
    ("none of and, or, not", {"type": "operator"}, "filter.demographic"),
    ("and with or", {"type": "operator", "and": [MALE], "or": [FEMALE]}, "filter.demographic"),
    ("and, or and not", {"type": "operator", "and": [MALE], "or": [FEMALE], "not": MALE},
     "filter.demographic"),
    ("an empty operator under not", {"type": "operator", "not": {"type": "operator"}},
     "filter.demographic.not"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "demographic", "where"), OPERATORS, ids=[c[0] for c in OPERATORS])
def test_a_demographic_operator_without_exactly_one_of_and_or_not_is_refused(
    sandbox_server: SandboxServer, case: str, demographic: dict[str, Any], where: str
) -> None:
    with pytest.raises(Exception, match=re.escape(f"{where}: {OPERATOR}")):
        export(
            "narrow_operator",
            "SELECT 'Spring' AS campaign",
            target="narrowcast",
            template_message=json.dumps({"type": "text", "text": "{{campaign}}"}),
            filter=json.dumps({"demographic": demographic}),
        )
    body = {"messages": [{"type": "text", "text": "hi"}], "filter": {"demographic": demographic}}
    answer = post(sandbox_server, "narrowcast", body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["details"] == [{"message": OPERATOR, "property": where}]
    assert post(sandbox_server, "narrowcast", {**body, "filter": {"demographic": MALE}}).ok
