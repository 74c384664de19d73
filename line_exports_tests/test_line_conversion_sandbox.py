"""The sandbox's LINE Conversion API over real HTTP: as strict as LINE's, answers like LINE's."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pytest
import requests

from line_exports.destinations.line_conversion import encode
from line_exports.rules import validate
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import events_of, register_tag, store_of

TOKEN = "sandbox-capi-token"
NOW = int(time.time())
SHA = "a" * 64


def event(key: str = "k1", **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event": {
            "deduplication_key": key,
            "event_type": "conversion",
            "event_name": "Conversion",
            "source_type": "web",
            "event_timestamp": NOW - 60,
        },
        "user": {"click_id": "clk", "phone": SHA, "email": SHA},
        "web": {"url": "https://example.jp/", "ip_address": "192.0.2.1"},
    }
    for path, value in changes.items():
        part, name = path.split("__")
        if value is None:
            item[part].pop(name, None)
        else:
            item[part][name] = value
    return item


def post(
    url: str, body: Any, tag: str = "tag-a", token: str | None = TOKEN, **headers: str
) -> requests.Response:
    data = body if isinstance(body, bytes | Iterator) else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **headers}
    if token is not None:
        all_headers["X-Line-TagAccessToken"] = token
    return requests.post(f"{url}/v1/{tag}/events", data=data, headers=all_headers, timeout=30)


def test_accepts_valid_events_with_202_and_no_body(sandbox_server: SandboxServer) -> None:
    answer = post(sandbox_server.url, [event("k1"), event("k2")])
    assert answer.status_code == 202 and answer.content == b""
    assert set(events_of(sandbox_server.sandbox, "tag-a")) == {"k1", "k2"}


def test_records_events_deduplicated_by_key_per_tag(sandbox_server: SandboxServer) -> None:
    assert post(sandbox_server.url, [event("k1"), event("k1")]).status_code == 202
    assert post(sandbox_server.url, [event("k1")]).status_code == 202
    assert post(sandbox_server.url, [event("k1")], tag="tag-b").status_code == 202
    store = store_of(sandbox_server.sandbox)
    assert (
        len(events_of(sandbox_server.sandbox, "tag-a")) == 1
        and len(events_of(sandbox_server.sandbox, "tag-b")) == 1
    )
    assert store.received_events == 4 and store.duplicate_events == 2
    state = requests.get(f"{sandbox_server.url}/_sandbox/state", timeout=5).json()[
        "line_conversion"
    ]
    assert state["events_by_tag"] == {"tag-a": 1, "tag-b": 1} and state["duplicate_events"] == 2


def test_token_is_checked_per_tag(sandbox_server: SandboxServer) -> None:
    url = sandbox_server.url
    assert post(url, [event()], token=None).status_code == 401
    assert (
        post(url, [event()], token="Bearer " + TOKEN).status_code == 401
    )  # the raw token, no Bearer
    register_tag(sandbox_server.sandbox, "tag-own", "own-token")
    assert (
        post(url, [event()], tag="tag-own", token=TOKEN).status_code == 401
    )  # bound tag: its own token only
    assert post(url, [event()], tag="tag-other", token="own-token").status_code == 401
    assert post(url, [event()], tag="tag-own", token="own-token").status_code == 202
    assert post(url, [event()], tag="tag-other", token=TOKEN).status_code == 202


def test_chunked_transfer_encoding_is_refused(sandbox_server: SandboxServer) -> None:
    body = json.dumps([event()]).encode()
    answer = post(sandbox_server.url, iter([body[:10], body[10:]]))
    assert answer.request.headers.get("Transfer-Encoding") == "chunked"
    assert answer.status_code == 400
    assert events_of(sandbox_server.sandbox, "tag-a") == {}


def test_line_uid_needs_a_numeric_channel_id_header(sandbox_server: SandboxServer) -> None:
    with_uid = [event("u1", user__line_uid="U" + "a" * 32)]
    assert post(sandbox_server.url, with_uid).status_code == 400
    assert post(sandbox_server.url, with_uid, **{"X-Line-ChannelID": "12ab"}).status_code == 400
    assert (
        post(sandbox_server.url, with_uid, **{"X-Line-ChannelID": "1657000000"}).status_code == 202
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"event__deduplication_key": None},
        {"event__deduplication_key": "undefined"},
        {"event__deduplication_key": "has space"},
        {"event__event_type": "purchase"},
        {"event__source_type": "app"},
        {"event__event_timestamp": str(NOW)},
        {"event__event_timestamp": float(NOW)},
        {"event__event_timestamp": NOW - 91 * 86_400},
        {"event__event_timestamp": NOW + 2 * 86_400},
        {"event__event_name": "x" * 21},
        {"event__test_flag": "yes"},
        {"user__phone": "+818012345678"},
        {"user__email": "user@example.jp"},
        {"user__email": SHA.upper()},
        {"user__click_id": "a b"},
        {"user__ifa": "nope"},
        {"user__browser_id": "nope"},
        {"user__external_id": "e" * 513},
        {"user__line_uid": "U123"},
        {"web__url": "ftp://x"},
        {"web__url": "https://" + "a" * 2041},
        {"web__referrer": "r" * 2049},
        {"web__title": "t" * 1025},
        {"web__ip_address": "999.0.0.1"},
        {"web__ip_address": "fe80::1%eth0"},
        {"web__user_agent": 5},
        {"user__unknown": "x"},
    ],
)
def test_one_bad_event_refuses_the_whole_request(
    sandbox_server: SandboxServer, bad: dict[str, Any]
) -> None:
    answer = post(sandbox_server.url, [event("good"), event("bad", **bad)])
    assert answer.status_code == 400
    assert events_of(sandbox_server.sandbox, "tag-a") == {}  # the valid one is discarded too


@pytest.mark.parametrize(
    "body",
    [
        {"event": {}},
        [],
        [{"user": {}}],
        [{"event": event()["event"]}],
        b"[not json",
        [event() | {"extra": 1}],
    ],
)
def test_body_shape(sandbox_server: SandboxServer, body: Any) -> None:
    assert post(sandbox_server.url, body).status_code == 400


def test_user_needs_one_identifier_and_web_may_be_absent(sandbox_server: SandboxServer) -> None:
    """LINE refuses an event whose user object carries none of its seven identifiers."""
    anonymous = {"event": event("m")["event"], "user": {}}
    answer = post(sandbox_server.url, [anonymous])
    assert answer.status_code == 400 and "at least one of line_uid" in answer.text
    for name, value in (("external_id", "x1"), ("click_id", "c1"), ("email", "a" * 64)):
        minimal = {"event": event(f"m-{name}")["event"], "user": {name: value}}
        assert post(sandbox_server.url, [minimal]).status_code == 202


def test_content_type_must_be_json(sandbox_server: SandboxServer) -> None:
    answer = post(sandbox_server.url, [event()], **{"Content-Type": "text/plain"})
    assert answer.status_code == 400


def test_at_most_100000_events_per_request(sandbox_server: SandboxServer) -> None:
    one = json.dumps(event("k")).encode()
    body = b"[" + b",".join([one] * 100_001) + b"]"
    assert post(sandbox_server.url, body).status_code == 400
    body = b"[" + b",".join([one] * 100_000) + b"]"
    assert post(sandbox_server.url, body).status_code == 202


def test_bodies_over_300_mb_are_refused_from_the_header(sandbox_server: SandboxServer) -> None:
    parsed = urlparse(sandbox_server.url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/tag-a/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-Line-TagAccessToken: {TOKEN}\r\nContent-Length: 300000001\r\n\r\n[".encode()
        )
        status_line = sock.recv(200).split(b"\r\n", 1)[0]
    assert b" 400 " in status_line


def test_what_the_client_encodes_is_what_the_sandbox_accepts(sandbox_server: SandboxServer) -> None:
    """The destination's own encoding of validated rows passes the sandbox's schema."""
    from line_exports.destinations.line_conversion import COLUMNS
    from line_exports.rules import RuleSet

    frame = pd.DataFrame(
        {
            "deduplication_key": ["a1", "a2"],
            "event_type": ["conversion", "page_view"],
            "source_type": ["web", "web"],
            "event_timestamp": [NOW - 10, NOW - 20],
            "event_name": ["Conversion", None],
            "email": ["A@B.jp", None],
            "phone": [None, "+81 90 1234 5678"],
            "url": [None, "https://x.jp/"],
            "title": [None, None],
        }
    )
    checked = validate(frame, RuleSet(COLUMNS))
    assert len(checked.valid) == 2 and not len(checked.rejects)
    body = encode(checked.valid)
    items = json.loads(body)
    assert "web" not in items[0] and items[1]["web"] == {"url": "https://x.jp/"}
    assert "event_name" not in items[1]["event"]
    assert post(sandbox_server.url, body).status_code == 202


def test_pandas_timestamps_become_unix_seconds() -> None:
    from line_exports.destinations.line_conversion import COLUMNS
    from line_exports.rules import RuleSet

    stamps = pd.Series(pd.to_datetime(["2026-11-01 00:00:00", "2026-11-01 00:00:01"]))
    frame = pd.DataFrame(
        {
            "deduplication_key": ["a", "b"],
            "event_type": "conversion",
            "source_type": "web",
            "event_timestamp": stamps,
        }
    )
    checked = validate(frame, RuleSet(COLUMNS))
    assert checked.valid["event_timestamp"].tolist() == [1793491200, 1793491201]
