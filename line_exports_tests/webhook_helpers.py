"""Shared pieces for the webhook tests: a real uvicorn server on loopback and LINE-shaped events.

The sample events follow LINE's webhook OpenAPI spec (one per event type and message content
type) so the tests exercise every shape LINE documents, plus one type LINE has not invented yet.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from line_exports.sandbox.server import PromptServer
from line_exports.webhook.app import create_app
from line_exports.webhook.config import WebhookSource
from line_exports.webhook.guard import Limits, guarded_protocol
from line_exports.webhook.signature import sign

# LINE's published signature example (Messaging API docs).
LINE_EXAMPLE_SECRET = "8c570fa6dd201bb328f1c1eac23a96d8"
LINE_EXAMPLE_BODY = b'{"destination":"U8e742f61d673b39c7fff3cecb7536ef0","events":[]}'
LINE_EXAMPLE_SIGNATURE = "GhRKmvmHys4Pi8DxkF4+EayaH0OqtJtaZxgTD9fMDLs="

DESTINATION = "U8e742f61d673b39c7fff3cecb7536ef0"
USER = {"type": "user", "userId": "U4af4980629a0e8b0b4e0a0c0b5b2a111"}
GROUP = {"type": "group", "groupId": "Ca56f94637c0e1cb2ea1a7ad4b2f0e1d1", "userId": USER["userId"]}


def make_source(name: str = "shop_oa", mode: str = "append", **kw: Any) -> WebhookSource:
    """A source whose secret lives in ``LINE_CHANNEL_SECRET_<NAME>`` (tests set it)."""
    return WebhookSource(
        name=name,
        source_id=str(uuid.uuid4()),
        channel_secret_env=f"LINE_CHANNEL_SECRET_{name.upper()}",
        mode=mode,
        **kw,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(
    sources: Sequence[WebhookSource],
    spool_path: Path,
    max_body_bytes: int = 1024 * 1024,
    limits: Limits | None = None,
    **app_options: Any,
) -> Iterator[str]:
    """A real uvicorn server in a thread on an ephemeral loopback port; yields its base URL.

    It runs with the same connection guard as ``webhook serve`` (``limits`` or the defaults);
    ``app_options`` go to ``create_app`` (``relay=RelayPolicy(...)``).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(sources, spool_path=spool_path, max_body_bytes=max_body_bytes, **app_options)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=guarded_protocol(limits or Limits()),
    )
    server = PromptServer(config)  # stops in milliseconds (uvicorn's own polls 0.1 s)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.wake()
        thread.join(timeout=10)
        sock.close()


def body_of(events: list[dict[str, Any]], destination: str = DESTINATION) -> bytes:
    """A webhook body the way LINE serialises it (compact JSON)."""
    return json.dumps(
        {"destination": destination, "events": events}, separators=(",", ":")
    ).encode()


def signed_headers(secret: str, body: bytes, header: str = "x-line-signature") -> dict[str, str]:
    return {header: sign(secret, body), "content-type": "application/json"}


def base_event(kind: str, n: int, *, redelivery: bool = False, **extra: Any) -> dict[str, Any]:
    """Fields every event carries; ``webhookEventId`` is unique per (kind, n)."""
    event: dict[str, Any] = {
        "type": kind,
        "mode": "active",
        "timestamp": int(time.time() * 1000) - 1500,
        "source": USER,
        "webhookEventId": f"01H{kind.upper()[:8]:_<8}{n:015d}",
        "deliveryContext": {"isRedelivery": redelivery},
    }
    event.update(extra)
    return event


def every_event_type() -> list[dict[str, Any]]:
    """One event per type (and per message content type) in LINE's webhook spec."""
    rt = "nHuyWiB7yP5Zw52FIkcQobQuGDXCTA"
    messages = [
        {
            "id": "444573844083572737",
            "type": "text",
            "quoteToken": "q1",
            "text": "Hello, world! (love)",
            "emojis": [
                {
                    "index": 14,
                    "length": 6,
                    "productId": "5ac1bfd5040ab15980c9b435",
                    "emojiId": "001",
                }
            ],
            "mention": {
                "mentionees": [{"index": 0, "length": 4, "type": "user", "userId": USER["userId"]}]
            },
        },
        {
            "id": "354718705033693859",
            "type": "image",
            "quoteToken": "q2",
            "contentProvider": {"type": "line"},
            "imageSet": {"id": "E005D41A", "index": 1, "total": 2},
        },
        {
            "id": "325708",
            "type": "video",
            "duration": 60000,
            "quoteToken": "q3",
            "contentProvider": {
                "type": "external",
                "originalContentUrl": "https://example.com/v.mp4",
                "previewImageUrl": "https://example.com/v.jpg",
            },
        },
        {"id": "325709", "type": "audio", "duration": 60000, "contentProvider": {"type": "line"}},
        {"id": "325710", "type": "file", "fileName": "file.txt", "fileSize": 2138},
        {
            "id": "325711",
            "type": "location",
            "title": "my location",
            "address": "1-3 Kioicho, Tokyo",
            "latitude": 35.67966,
            "longitude": 139.73669,
        },
        {
            "id": "325712",
            "type": "sticker",
            "packageId": "1",
            "stickerId": "1",
            "quoteToken": "q4",
            "stickerResourceType": "STATIC",
            "keywords": ["Anticipation", "Cony"],
        },
    ]
    events = [base_event("message", i, replyToken=rt, message=m) for i, m in enumerate(messages)]
    events += [
        base_event("unsend", 1, unsend={"messageId": "325708"}),
        base_event("follow", 1, replyToken=rt, follow={"isUnblocked": False}),
        base_event("unfollow", 1),
        base_event("join", 1, replyToken=rt, source=GROUP),
        base_event("leave", 1, source=GROUP),
        base_event(
            "memberJoined",
            1,
            replyToken=rt,
            source=GROUP,
            joined={"members": [{"type": "user", "userId": "U4af4980629a0e8b0b4e0a0c0b5b2a222"}]},
        ),
        base_event(
            "memberLeft",
            1,
            source=GROUP,
            left={"members": [{"type": "user", "userId": "U4af4980629a0e8b0b4e0a0c0b5b2a222"}]},
        ),
        base_event(
            "postback",
            1,
            replyToken=rt,
            postback={"data": "action=buy&itemid=111", "params": {"datetime": "2017-12-25T01:00"}},
        ),
        base_event(
            "videoPlayComplete", 1, replyToken=rt, videoPlayComplete={"trackingId": "track-id"}
        ),
        base_event("beacon", 1, replyToken=rt, beacon={"hwid": "d41d8cd98f", "type": "enter"}),
        base_event(
            "accountLink", 1, replyToken=rt, link={"result": "ok", "nonce": "xxxxxxxxxxxxxxx"}
        ),
        base_event(
            "membership", 1, replyToken=rt, membership={"type": "joined", "membershipId": 3189}
        ),
        base_event(
            "module", 1, module={"type": "attached", "botId": "U111", "scopes": ["message:send"]}
        ),
        base_event("activated", 1, chatControl={"expireAt": 1579240800000}),
        base_event("deactivated", 1),
        base_event("botSuspended", 1),
        base_event("botResumed", 1),
        base_event("delivery", 1, delivery={"data": "8a5c8f2c4d"}),
        base_event(
            "messageEdited",
            1,
            replyToken=rt,
            message={"id": "444573844083572737", "type": "text", "text": "Hello, edited"},
        ),
        # A type LINE may add later, with a field nobody knows yet: kept, not an error.
        base_event("teleport", 1, teleport={"to": "moon"}, shinyNewField=[1, 2, 3]),
    ]
    return events


# Which column must hold which detail object, per event type (the "no field is lost" check).
DETAIL_BY_TYPE: dict[str, tuple[str, str]] = {
    "message": ("message", "event_message"),
    "messageEdited": ("message", "event_message"),
    "unsend": ("unsend", "event_unsend"),
    "follow": ("follow", "event_follow"),
    "memberJoined": ("joined", "event_joined"),
    "memberLeft": ("left", "event_left"),
    "postback": ("postback", "event_postback"),
    "videoPlayComplete": ("videoPlayComplete", "event_videoplaycomplete"),
    "beacon": ("beacon", "event_beacon"),
    "accountLink": ("link", "event_link"),
    "membership": ("membership", "event_membership"),
    "module": ("module", "event_module"),
    "activated": ("chatControl", "event_chatcontrol"),
    "delivery": ("delivery", "event_delivery"),
}
