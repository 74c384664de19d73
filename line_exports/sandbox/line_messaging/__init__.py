"""LINE's Messaging API, faked faithfully: tokens, push, multicast, validate, upload audiences.

Follows LINE's official OpenAPI (``messaging-api.yml``, ``manage-audience.yml``,
``channel-access-token.yml``) and the Messaging API reference: Bearer auth (fixed channel tokens
plus short-lived ones issued by ``/v2/oauth/accessToken``, at most 30 per channel), per-endpoint
rate limits (push 2,000/s, multicast 200/s, audiences 60/min together, token 370/s), ``413``
over 2 MB, message schemas, ``X-Line-Retry-Key`` (a UUID; ``409`` for a key it accepted, for 24
hours from the key's first request on the sandbox clock, ``/_sandbox/clock``), audiences whose
upload jobs finish asynchronously (at most 10 running per audience), and file uploads on the
data host path. It records what each recipient received.

One module per concern, as the exporter's package: ``store`` (what the channel holds),
``common`` (errors, auth, limits), ``auth`` (tokens), ``messages`` (push, multicast, validate)
and ``audience``.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import BaseRoute

from line_exports.sandbox.core import Sandbox
from line_exports.sandbox.line_messaging import (
    audience,
    auth,
    insight,
    messages,
    narrowcast,
    rich_menu,
)
from line_exports.sandbox.line_messaging.common import Api
from line_exports.sandbox.line_messaging.store import CLIENTS, LineStore, store_of

__all__ = ["CLIENTS", "LineStore", "routes", "store_of", "summary"]


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    api = Api(sandbox, store_of(sandbox))
    return [
        *auth.routes(api),
        *messages.routes(api),
        *audience.routes(api),
        *narrowcast.routes(api),
        *rich_menu.routes(api),
        *insight.routes(api),
    ]


def summary(sandbox: Sandbox) -> dict[str, Any]:
    store = store_of(sandbox)
    with sandbox.lock:
        now = time.monotonic()
        return {
            "pushes": store.pushes,
            "multicasts": store.multicasts,
            "retry_key_conflicts": store.conflicts,
            "recipients": len(store.inbox),
            "messages_delivered": sum(len(v) for v in store.inbox.values()),
            "tokens_issued": store.tokens_issued,
            "stateless_tokens_issued": store.stateless_issued,
            **narrowcast.summary(sandbox),
            **rich_menu.summary(sandbox),
            "quota": {"limit": store.quota_limit, "used": store.quota_used},
            "audiences": {
                f"{a.id} {a.description}": a.view(now)["audienceCount"]
                for a in store.audiences.values()
            },
        }
