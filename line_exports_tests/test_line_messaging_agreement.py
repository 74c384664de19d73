"""The per-row check and the sandbox agree where they did not (VERIFY-14 round 2): a blank row
value of a whole-field flex form, the one-value enums line-bot-sdk does not enforce, and LINE's
quota answers (an odd shape, an endpoint that keeps failing)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import linebot
import pandas as pd
import pytest

from line_exports.destinations.line_messaging.client import (
    parse_quota,
    parse_quota_consumption,
)
from line_exports.destinations.line_messaging.messages import MessageTemplate, check_messages
from line_exports.http import ApiError
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_line_messaging import resource, run_fails
from line_exports_tests.test_line_messaging_limits import bubble, button, validate
from line_exports_tests.test_line_messaging_quota import push_export

BODY = "messages[0].contents.body"
FIELDS = [  # (component, its path, property, a good value)
    ({"type": "text", "text": "x"}, f"{BODY}.contents[0]", "color", "#112233"),
    ({"type": "text", "text": "x"}, f"{BODY}.contents[0]", "size", "md"),
    ({"type": "text", "text": "x"}, f"{BODY}.contents[0]", "margin", "sm"),
    ({"type": "text", "text": "x"}, f"{BODY}.contents[0]", "offsetTop", "-2px"),
    ({"type": "image", "url": "https://example.com/a.png"}, f"{BODY}.contents[0]",
     "aspectRatio", "1:1"),
    ({"type": "box", "layout": "vertical", "contents": []}, f"{BODY}.contents[0]",
     "backgroundColor", "#ffffff"),
]  # fmt: skip


def test_a_blank_row_value_of_a_whole_field_form_is_refused_per_row_as_the_sandbox_does(
    sandbox_server: SandboxServer,
) -> None:
    values = ["", " ", "\t", "\u3000"]
    for component, where, prop, good in FIELDS:
        template = MessageTemplate.parse(json.dumps(bubble({**component, prop: "{{v}}"})))
        frame = pd.DataFrame({"v": [*values, good]})
        failures = template.check_rows(frame)
        rendered = template.render(frame)
        for i, value in enumerate(frame["v"]):
            answer = validate(sandbox_server, json.loads(rendered.iloc[i]))
            sandbox = [
                (d["property"], d["message"])
                for d in (answer.json().get("details", []) if answer.status_code == 400 else [])
            ]
            per_row = [(path, message) for path, message, mask in failures if mask[i]]
            assert per_row == sandbox, (prop, value, per_row, sandbox)
            assert bool(per_row) is (value != good), (prop, value)
            assert per_row in ([], [(f"{where}.{prop}", per_row[0][1])] if per_row else [])


def _sdk_one_value_enums() -> list[tuple[str, str, str]]:
    """(file under linebot/, alias-less field name, the one value) of each generated validator
    ``value not in ('x')``: a substring test, not membership (line-bot-sdk 3.27.0's bug)."""
    root = Path(linebot.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for field, value in re.findall(
            r"@validator\('(\w+)'\)\s+def \w+\(cls, value\):(?:(?!@validator).)*?"
            r"if value not in \('([^',]*)'\):",
            text,
            flags=re.S,
        ):
            found.append((str(path.relative_to(root)), field, value))
    return found


MINIMAL = {  # a flex component of each kind an SDK one-value enum sits on
    "text": {"type": "text", "text": "x"},
    "button": button("go"),
}


def test_every_one_value_enum_the_sdk_does_not_enforce_is_refused_when_wrong(
    sandbox_server: SandboxServer,
) -> None:
    found = _sdk_one_value_enums()
    messaging = [f for f in found if f[0].startswith("v3/messaging/")]
    assert ("v3/messaging/models/flex_text.py", "adjust_mode", "shrink-to-fit") in messaging
    for file, field, value in messaging:
        kind = Path(file).stem.removeprefix("flex_")
        prop = re.sub(r"_(\w)", lambda m: m.group(1).upper(), field)
        path = f"{BODY}.contents[0].{prop}"
        for wrong in (value[: len(value) // 2], value[1:], ""):
            message = bubble({**MINIMAL[kind], prop: wrong})
            problems = check_messages([message])[0]
            words = f"Must be one of the following values: [{value}]"
            assert (path, words) in problems, (file, wrong, problems)
            answer = validate(sandbox_server, [message])
            assert answer.status_code == 400
            assert {"message": words, "property": path} in answer.json()["details"]
        assert check_messages([bubble({**MINIMAL[kind], prop: value})])[0] == []
    # The others sit on models the project never parses (webhook events, audience answers).
    sources = "\n".join(
        p.read_text(encoding="utf-8")
        for p in Path(__file__).parents[1].glob("line_exports/**/*.py")
    )
    for file, _, _ in found:
        if file not in {f[0] for f in messaging}:
            module = "linebot." + file.removesuffix(".py").replace("/", ".")
            assert module.rsplit(".", 2)[0] not in sources, (file, module)


@pytest.mark.parametrize(
    ("faulted", "reads"),
    [("/v2/bot/message/quota", 1), ("/v2/bot/message/quota/consumption", 2)],
)
def test_a_quota_answer_of_another_shape_fails_the_run_once_and_clearly(
    sandbox_server: SandboxServer, faulted: str, reads: int
) -> None:
    """The sandbox's fault answers 200 ``{"message": "[1,2]"}``: neither answer's shape."""
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=faulted, status=200, times=-1, body="[1,2]"))
    message = run_fails(push_export("line_odd_quota", 2), resource(sandbox_server))
    assert f"LINE's quota answer is not what the spec says: GET {faulted} " in message, message
    assert "Traceback" not in message and "KeyError" not in message
    assert sandbox.count("GET", "/v2/bot/message/quota") == reads  # not retried
    assert store_of(sandbox).pushes == 0


@pytest.mark.parametrize(
    ("parse", "body"),
    [(parse_quota, b) for b in ("", "[]", '{"type": "limited"}', '{"type": "limited", "value": "9"}',
                                '{"type": "limited", "value": true}', '{"type": "monthly"}')]
    + [(parse_quota_consumption, b) for b in ("null", "{}", '{"totalUsage": 1.5}',
                                              '{"totalUsage": -1}', '{"totalUsage": "3"}')],
)  # fmt: skip
def test_quota_answers_are_read_by_the_spec_shape(parse: Any, body: str) -> None:
    with pytest.raises(ApiError, match="LINE's quota answer is not what the spec says") as caught:
        parse(body)
    assert caught.value.retryable is False


def test_quota_answers_of_the_spec_shape_are_read() -> None:
    assert parse_quota('{"type": "none"}') is None
    assert parse_quota('{"type": "limited", "value": 10000000000}') == 10_000_000_000
    assert parse_quota_consumption('{"totalUsage": 0}') == 0


@pytest.mark.real_retry_waits  # counts the retries quota_read_seconds leaves room for
def test_a_quota_endpoint_that_keeps_failing_stops_the_run_within_quota_read_seconds(
    sandbox_server: SandboxServer,
) -> None:
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path="/v2/bot/message/quota", status=500, times=-1))
    # initial_retry_wait 1 s: tries at 0, 1 and 3 s; the next (at 7 s) would pass 5 s.
    asset = push_export("line_quota_500", 2, initial_retry_wait=1)
    message = run_fails(asset, resource(sandbox_server, quota_read_seconds=5))
    assert "LINE's quota read (/v2/bot/message/quota) failed 3 time(s)" in message, message
    assert "quota_read_seconds=5" in message
    assert sandbox.count("GET", "/v2/bot/message/quota") == 3
    assert store_of(sandbox).pushes == 0
