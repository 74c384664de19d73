"""LINE's rules between message fields (VERIFY-13c F1, F8, F9), one definition
(:data:`line_exports.destinations.line_messaging.limits.RULES` and the datetime picker's
``PATTERNS`` rows) applied alike when an export is defined, per rendered row and by the sandbox
(over loopback HTTP), with one wording:

- carousel columns: "If you use an image or title for a column, make sure to do the same for
  all other columns" (Messaging API reference, "Column object for carousel", note);
- imagemap video: "*1 This property is required if you set a video to play on the imagemap",
  "*2 ... if you set a video to play and a label to display after the video";
- datetime picker: ``max`` "Must be greater than the ``min`` value", and the "Date and time
  format" table per ``mode`` (1900-01-01 .. 2100-12-31, 00:00 .. 23:59, ``T`` or ``t``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from line_exports.destinations.line_messaging.messages import MessageTemplate
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.line_message_checks import kept_everywhere, refused_everywhere, sandbox_says
from line_exports_tests.test_line_messaging import export, resource, run, user

URL = "https://example.com/a.jpg"
CAROUSEL = "messages[0].template.columns"
PICKER = "messages[0].template.actions[0]"
TITLE = "Every column must have a title, or none may (a title in one column needs one in all)"
IMAGE = (
    "Every column must have a thumbnailImageUrl, or none may "
    "(an image in one column needs one in all)"
)
ACTIONS = "Every column must have the same number of actions"
VIDEO = "Must not be null when video is set"
LINK = "Must not be null when video.externalLink is set"
ORDER = "Must be greater than the min value"
DATE = "Must be a date (full-date) from 1900-01-01 to 2100-12-31, such as 2017-06-18"
TIME = "Must be a time (time-hour:time-minute) from 00:00 to 23:59, such as 06:15"
DATETIME = (
    "Must be a date and time from 1900-01-01T00:00 to 2100-12-31T23:59, such as 2017-06-18T06:15"
)


def column(**fields: Any) -> dict[str, Any]:
    return {"text": "hello", "actions": [{"type": "message", "label": "a", "text": "a"}], **fields}


def carousel(*columns: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "template",
        "altText": "alt",
        "template": {"type": "carousel", "columns": list(columns)},
    }


def imagemap(video: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "imagemap",
        "baseUrl": "https://example.com/rm001",
        "altText": "alt",
        "baseSize": {"width": 1040, "height": 1040},
        "video": video,
        "actions": [
            {"type": "message", "text": "hi", "area": {"x": 0, "y": 0, "width": 10, "height": 10}}
        ],
    }


AREA = {"x": 0, "y": 0, "width": 1040, "height": 585}
VIDEO_FULL = {"originalContentUrl": URL, "previewImageUrl": URL, "area": AREA}


def picker(mode: str, **values: str) -> dict[str, Any]:
    action = {"type": "datetimepicker", "label": "when", "data": "d=1", "mode": mode, **values}
    return {
        "type": "template",
        "altText": "alt",
        "template": {"type": "buttons", "text": "pick", "actions": [action]},
    }


BROKEN = [  # (case, message, the problems LINE states)
    ("title in one column", carousel(column(title="T1"), column()), [(CAROUSEL, TITLE)]),
    ("empty title beside a title", carousel(column(title=""), column(title="T")),
     [(CAROUSEL, TITLE)]),
    ("image in one column", carousel(column(), column(thumbnailImageUrl=URL)),
     [(CAROUSEL, IMAGE)]),
    ("actions 2 and 1", carousel(column(actions=[column()["actions"][0]] * 2), column()),
     [(CAROUSEL, ACTIONS)]),
    ("video with no preview or area", imagemap({"originalContentUrl": URL}),
     [("messages[0].video.previewImageUrl", VIDEO), ("messages[0].video.area", VIDEO)]),
    ("video with no content URL", imagemap({"previewImageUrl": URL, "area": AREA}),
     [("messages[0].video.originalContentUrl", VIDEO)]),
    ("externalLink with no label", imagemap({**VIDEO_FULL, "externalLink": {"linkUri": URL}}),
     [("messages[0].video.externalLink.label", LINK)]),
    ("externalLink with no linkUri", imagemap({**VIDEO_FULL, "externalLink": {"label": "More"}}),
     [("messages[0].video.externalLink.linkUri", LINK)]),
    ("min after max", picker("date", min="2026-12-31", max="2026-01-01"),
     [(f"{PICKER}.max", ORDER)]),
    ("min equal to max", picker("time", min="10:00", max="10:00"), [(f"{PICKER}.max", ORDER)]),
    ("datetime form in date mode", picker("date", initial="2026-05-01t10:00"),
     [(f"{PICKER}.initial", DATE)]),
    ("25:61", picker("time", initial="25:61"), [(f"{PICKER}.initial", TIME)]),
    ("time without its zero", picker("time", max="9:00"), [(f"{PICKER}.max", TIME)]),
    ("after 2100-12-31", picker("date", max="2101-01-01"), [(f"{PICKER}.max", DATE)]),
    ("before 1900-01-01", picker("datetime", min="1899-12-31T23:59"),
     [(f"{PICKER}.min", DATETIME)]),
    ("February 30th", picker("date", initial="2024-02-30"), [(f"{PICKER}.initial", DATE)]),
    ("datetime with a space", picker("datetime", initial="2026-05-01 10:00"),
     [(f"{PICKER}.initial", DATETIME)]),
    ("datetime with seconds", picker("datetime", initial="2026-05-01T10:00:00"),
     [(f"{PICKER}.initial", DATETIME)]),
    ("no mode", {**picker("date"), "template": {"type": "buttons", "text": "pick", "actions": [
        {"type": "datetimepicker", "label": "when", "data": "d=1"}]}},
     [(f"{PICKER}.mode", "Must not be null")]),
]  # fmt: skip
KEPT = [  # (case, message) LINE takes
    ("titles in all columns", carousel(column(title="T1"), column(title="T2"))),
    ("images in all columns", carousel(column(thumbnailImageUrl=URL), column(thumbnailImageUrl=URL))),
    ("neither", carousel(column(), column())),
    ("video, no link", imagemap(VIDEO_FULL)),
    ("video and link", imagemap({**VIDEO_FULL, "externalLink": {"linkUri": URL, "label": "More"}})),
    ("date range", picker("date", initial="2024-02-29", min="1900-01-01", max="2100-12-31")),
    ("time range", picker("time", initial="06:15", min="00:00", max="23:59")),
    ("datetime t and T", picker("datetime", initial="2017-12-25t00:00", min="2017-12-25T00:00",
                                max="2018-01-24t23:59")),
    ("mode only", picker("datetime")),
]  # fmt: skip


@pytest.mark.parametrize(("case", "message", "problems"), BROKEN, ids=[c[0] for c in BROKEN])
def test_a_broken_rule_is_refused_at_definition_and_by_the_sandbox_in_one_wording(
    sandbox_server: SandboxServer, case: str, message: dict[str, Any], problems: list[Any]
) -> None:
    refused_everywhere(sandbox_server, message, problems)


@pytest.mark.parametrize(("case", "message"), KEPT, ids=[c[0] for c in KEPT])
def test_messages_that_keep_the_rules_pass_both(
    sandbox_server: SandboxServer, case: str, message: dict[str, Any]
) -> None:
    kept_everywhere(sandbox_server, message)


PER_ROW = [  # (case, template, rows of the placeholders' columns, problems of each row)
    (
        "a title filled per row",
        carousel(column(title="{{t}}"), column(title="T")),
        {"t": ["x", "", "y"]},
        [[], [(CAROUSEL, TITLE)], []],
    ),
    (
        "images filled per row",
        carousel(column(thumbnailImageUrl="{{u}}"), column(thumbnailImageUrl=URL)),
        {"u": [URL, ""]},
        [[], [(f"{CAROUSEL}[0].thumbnailImageUrl", "May not be empty"), (CAROUSEL, IMAGE)]],
    ),
    (
        "min and max filled per row",
        picker("date", min="{{lo}}", max="{{hi}}"),
        {
            "lo": ["2026-01-01", "2026-12-31", "2026-01-01", "2026-01-01"],
            "hi": ["2026-12-31", "2026-01-01", "2026-01-01", "2026-13-01"],
        },
        [[], [(f"{PICKER}.max", ORDER)], [(f"{PICKER}.max", ORDER)], [(f"{PICKER}.max", DATE)]],
    ),
    (
        "a min filled per row, a fixed max",
        picker("datetime", initial="{{d}}", min="{{d}}", max="2026-06-01T00:00"),
        {"d": ["2026-05-01t10:00", "2026-07-01T00:00", "2026-05-01 10:00"]},
        [
            [],
            [(f"{PICKER}.max", ORDER)],
            [(f"{PICKER}.initial", DATETIME), (f"{PICKER}.min", DATETIME)],
        ],
    ),
    (
        "a time filled per row",
        picker("time", initial="{{h}}:00"),
        {"h": ["23", "24", "7"]},
        [[], [(f"{PICKER}.initial", TIME)], [(f"{PICKER}.initial", TIME)]],
    ),
    (
        # Presence cannot change per row: a placeholder always fills a string (an empty one is
        # the limit row's "May not be empty"), so the video rule is decided at definition.
        "video fields filled per row",
        imagemap({**VIDEO_FULL, "originalContentUrl": "{{v}}", "externalLink": {
            "linkUri": URL, "label": "{{l}}"}}),
        {"v": [URL, ""], "l": ["More", "More"]},
        [[], [("messages[0].video.originalContentUrl", "May not be empty")]],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "template", "columns", "expected"), PER_ROW, ids=[c[0] for c in PER_ROW]
)
def test_a_rule_a_placeholder_breaks_is_a_per_row_problem_in_the_sandbox_s_words(
    sandbox_server: SandboxServer,
    case: str,
    template: dict[str, Any],
    columns: dict[str, list[str]],
    expected: list[list[tuple[str, str]]],
) -> None:
    parsed = MessageTemplate.parse(json.dumps(template))  # not refused: rows decide
    frame = pd.DataFrame(columns)
    failures = parsed.check_rows(frame)
    rendered = parsed.render(frame)
    for i in range(len(frame)):
        per_row = sorted((path, words) for path, words, mask in failures if mask[i])
        message = json.loads(rendered.iloc[i])[0]
        sandbox = sorted(sandbox_says(sandbox_server, message, "validate/push"))
        assert per_row == sandbox == sorted(expected[i]), (i, per_row, sandbox)


def test_a_push_rejects_the_rows_a_placeholder_breaks_and_sends_the_rest(
    sandbox_server: SandboxServer,
) -> None:
    """A real run: rows whose filled-in picker breaks a rule are ``message`` rejects (not a
    failed run, nothing sent for them), the other rows are pushed. A placeholder's empty value
    is a ``required`` reject before rendering (TD drops NULL/empty), so in a push a filled-in
    carousel title cannot vanish from one column; the per-row check keeps the rule anyway."""
    messages = [
        carousel(column(title="{{title}}"), column(title="T")),
        picker("date", min="{{lo}}", max="2026-12-31"),
    ]
    rows = [("x", "2026-01-01"), ("", "2026-01-01"), ("y", "2027-01-01"), ("z", "2026-13-01")]
    query = " UNION ALL ".join(
        f"SELECT {n} AS n, '{user(n)}' AS id, '{title}' AS title, '{lo}' AS lo"
        for n, (title, lo) in enumerate(rows, start=1)
    )
    meta = run(
        export(
            "push_cross_rules",
            f"SELECT id, title, lo FROM ({query}) ORDER BY n",
            target="push_message",
            template_message=json.dumps(messages),
        ),
        resource(sandbox_server),
    )
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (4, 3, 1), meta
    rejects = pd.read_csv(Path(meta["rejects_file"])).sort_values("_row_number")
    assert rejects[["_row_number", "column", "rule"]].values.tolist()[0] == [2, "title", "required"]
    assert rejects[["_row_number", "rule", "message"]].values.tolist()[1:] == [
        [3, "message", f"messages[1].template.actions[0].max: {ORDER}"],
        [4, "message", f"messages[1].template.actions[0].min: {DATE}"],
    ]
    store = store_of(sandbox_server.sandbox)
    assert [len(store.received(user(n))) for n in (1, 2, 3, 4)] == [1, 0, 0, 0]
    sent = store.received(user(1))[0]
    expected = copy.deepcopy(messages)
    expected[0]["template"]["columns"][0]["title"] = "x"
    expected[1]["template"]["actions"][0]["min"] = "2026-01-01"
    assert sent == expected
