"""Where LINE lets an action, a flex component or a quote token go (issue 13, VERIFY-13f R3,
R4, R6), one definition (:data:`.limits.ACTION_PLACES`, :data:`.limits.FLEX_PLACES` and the
video requirements, :data:`.limits.TARGET_ONLY`) applied when an export is defined and by the
sandbox, which answers a direct POST of the body with LINE's 400:

- R3 camera, camera roll and location actions: "This action can be configured only with quick
  reply buttons"; rich menu switch: "only with rich menus. It can't be used for Flex Messages
  or quick replies" (Messaging API reference, action objects);
- R4 box ``contents`` per ``layout`` (horizontal/vertical: box, button, image, text,
  separator, filler; baseline: icon, text, filler), the hero (box, image, video), a video's
  ``altContent`` (box, image); a video hero needs a kilo/mega/giga bubble not in a carousel
  ("Create a Flex Message including a video", Requirements);
- R6 ``quoteToken``: "You can only use quote tokens to send messages with the following
  endpoints: Send reply message, Send push message" ("Send messages", Send quote messages).
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
    sandbox_says,
)
from line_exports_tests.test_line_messaging import export, resource, run, user

QUICK = "This action can be configured only with quick reply buttons"
RICH = "This action can be configured only with rich menus"
QUOTE = "Quote tokens can only be used in reply or push messages"
SIZE = "A bubble with a video hero must be of size kilo, mega or giga"
CAROUSEL = "A bubble with a video hero can't be a child of a carousel"
URL = "https://example.com/a.jpg"
IMAGE = {"type": "image", "url": URL}
VIDEO = {
    "type": "video",
    "url": "https://example.com/v.mp4",
    "previewUrl": URL,
    "altContent": IMAGE,
}
ICON = {"type": "icon", "url": URL}
SPAN = {"type": "span", "text": "s"}
TEXT = {"type": "text", "text": "t"}


def quick(action: dict[str, Any]) -> dict[str, Any]:
    return {"type": "text", "text": "hi",
            "quickReply": {"items": [{"type": "action", "action": action}]}}  # fmt: skip


def flex(contents: dict[str, Any]) -> dict[str, Any]:
    return {"type": "flex", "altText": "a", "contents": contents}


def box(layout: str, *contents: dict[str, Any]) -> dict[str, Any]:
    return {"type": "box", "layout": layout, "contents": list(contents)}


def bubble(**blocks: Any) -> dict[str, Any]:
    return {"type": "bubble", **blocks}


CAMERA = {"type": "camera", "label": "Camera"}
SWITCH = {"type": "richmenuswitch", "label": "s", "richMenuAliasId": "a", "data": "d"}
ACT = "messages[0].template.actions[0]"
BODY = "messages[0].contents.body"
BROKEN = [  # (case, message, the problems LINE states)
    ("camera in buttons", buttons(CAMERA), [(f"{ACT}.type", QUICK)]),
    ("cameraRoll in buttons", buttons({"type": "cameraRoll", "label": "Roll"}),
     [(f"{ACT}.type", QUICK)]),
    ("location in buttons", buttons({"type": "location", "label": "Where"}),
     [(f"{ACT}.type", QUICK)]),
    ("camera as a flex button", flex(bubble(body=box("vertical", {"type": "button", "action": CAMERA}))),
     [(f"{BODY}.contents[0].action.type", QUICK)]),
    ("richmenuswitch in quick reply", quick(SWITCH),
     [("messages[0].quickReply.items[0].action.type", RICH)]),
    ("richmenuswitch in buttons", buttons(SWITCH), [(f"{ACT}.type", RICH)]),
    ("video in the body", flex(bubble(body=box("vertical", VIDEO))),
     [(f"{BODY}.contents[0].type",
       "A vertical box can hold only box, button, image, text, separator, filler, not video")]),
    ("video hero in a carousel", flex({"type": "carousel", "contents": [bubble(size="mega", hero=VIDEO)]}),
     [("messages[0].contents.contents[0].hero", CAROUSEL)]),
    ("video hero of a micro bubble", flex(bubble(size="micro", hero=VIDEO)),
     [("messages[0].contents.size", SIZE)]),
    ("icon in a vertical box", flex(bubble(body=box("vertical", ICON))),
     [(f"{BODY}.contents[0].type",
       "A vertical box can hold only box, button, image, text, separator, filler, not icon")]),
    ("span in a box", flex(bubble(body=box("baseline", SPAN))),
     [(f"{BODY}.contents[0].type", "A baseline box can hold only icon, text, filler, not span")]),
    ("image in a baseline box", flex(bubble(body=box("baseline", IMAGE))),
     [(f"{BODY}.contents[0].type", "A baseline box can hold only icon, text, filler, not image")]),
    ("text as the hero", flex(bubble(hero=TEXT)),
     [("messages[0].contents.hero.type", "A hero can hold only box, image, video, not text")]),
]  # fmt: skip
KEPT = [
    ("camera in quick reply", quick(CAMERA)),
    ("location in quick reply", quick({"type": "location", "label": "Where"})),
    ("video hero of a default (mega) bubble", flex(bubble(hero=VIDEO))),
    ("video hero of a kilo bubble", flex(bubble(size="kilo", hero=VIDEO))),
    ("icon and span in place",
     flex(bubble(body=box("baseline", ICON, {"type": "text", "contents": [SPAN]})))),
    ("image hero in a carousel", flex({"type": "carousel", "contents": [bubble(hero=IMAGE)]})),
]  # fmt: skip


@pytest.mark.parametrize(("case", "message", "problems"), BROKEN, ids=[c[0] for c in BROKEN])
def test_a_misplaced_object_is_refused_at_definition_and_by_the_sandbox_in_one_wording(
    sandbox_server: SandboxServer, case: str, message: dict[str, Any], problems: list[Any]
) -> None:
    refused_everywhere(sandbox_server, message, problems)


@pytest.mark.parametrize(("case", "message"), KEPT, ids=[c[0] for c in KEPT])
def test_objects_in_their_places_pass_both(
    sandbox_server: SandboxServer, case: str, message: dict[str, Any]
) -> None:
    kept_everywhere(sandbox_server, message)


QUOTED = {"type": "text", "text": "hi", "quoteToken": "q3Plxr4AgKd"}


@pytest.mark.parametrize("target", ["multicast", "narrowcast", "broadcast"])
def test_a_quote_token_is_refused_outside_push_and_reply(
    sandbox_server: SandboxServer, target: str
) -> None:
    with pytest.raises(TemplateError, match=re.escape(f"messages[0].quoteToken: {QUOTE}")):
        MessageTemplate.parse(json.dumps(QUOTED), target=target)
    body: dict[str, Any] = {"messages": [QUOTED]}
    if target == "multicast":
        body["to"] = [user(1)]
    answer = post(sandbox_server, target, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["details"] == [{"message": QUOTE, "property": "messages[0].quoteToken"}]
    MessageTemplate.parse(json.dumps(QUOTED), target="push")
    assert sandbox_says(sandbox_server, QUOTED, "push") == []


def test_a_multicast_export_with_a_quote_token_is_refused_when_defined() -> None:
    with pytest.raises(Exception, match=re.escape(f"messages[0].quoteToken: {QUOTE}")):
        export(
            "multicast_quote",
            "SELECT 'U' || lpad('1', 32, '0') AS id",
            target="multicast_message",
            template_message_multicast=json.dumps(QUOTED),
        )


def test_a_push_export_of_a_camera_quick_reply_is_sent_and_one_in_buttons_refused(
    sandbox_server: SandboxServer,
) -> None:
    with pytest.raises(Exception, match=re.escape(f"{ACT}.type: {QUICK}")):
        export("push_camera_buttons", "SELECT 1", target="push_message",
               template_message=json.dumps(buttons(CAMERA)))  # fmt: skip
    meta = run(
        export(
            "push_camera_quick",
            f"SELECT '{user(1)}' AS id",
            target="push_message",
            template_message=json.dumps(quick(CAMERA)),
        ),
        resource(sandbox_server),
    )
    assert (meta["rows_read"], meta["rows_accepted"]) == (1, 1), meta
    assert store_of(sandbox_server.sandbox).received(user(1)) == [[quick(CAMERA)]]
