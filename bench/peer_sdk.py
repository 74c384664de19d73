"""Peer: the same push and multicast workloads with LINE's official SDK (``line-bot-sdk``).

The SDK is used the way its README shows: ``Configuration(host=<sandbox>, access_token=...)``,
``with ApiClient(configuration) as api_client``, ``MessagingApi(api_client).push_message(
PushMessageRequest(to=..., messages=[TextMessage(text=...)]))`` (and ``multicast(
MulticastRequest(...))``), one call after another, each with an ``x_line_retry_key``. A second
SDK line runs the same calls from a thread pool as wide as ours (``push_concurrency`` 50,
``multicast_concurrency`` 8), for a like-for-like client comparison. Ours is ``LineMessagingDestination.deliver`` (template
rendering, retry keys, ledger, pacing included). Same sandbox process, limits scaled x10 so
none of them is rate-limited, and our client's pacing scaled x10 too (it paces to LINE's real
2,000 pushes / 200 multicasts a second, which the SDK does not do); the sandbox is reset before
each workload; only the sending phase is timed.

    (line-bot-sdk is a dependency of the project: it checks message structure)
    .venv/bin/python bench/peer_sdk.py --pushes 5000 --multicasts 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    MULTICAST_TEMPLATE,
    PUSH_TEMPLATE,
    SandboxProcess,
    deliver_messages,
    print_header,
    recipients_frame,
    set_client_limit,
)

TOKEN = "sandbox-line-channel-token"
MULTICAST_THREADS = 8  # our multicast_concurrency default


def fresh(sandbox: SandboxProcess) -> int:
    """Answers 429 so far, then a reset: every workload starts on an empty sandbox."""
    refused = int(sandbox.state().get("rate_limited", 0))
    sandbox.reset()
    return refused


def sdk_push(url: str, frame: Any, threads: int) -> float:
    """Seconds for one push per row with the SDK (README style; threads > 1 = a pool)."""
    from linebot.v3.messaging import (
        ApiClient,
        Configuration,
        MessagingApi,
        PushMessageRequest,
        TextMessage,
    )

    configuration = Configuration(host=url, access_token=TOKEN)
    if threads > 1:
        configuration.connection_pool_maxsize = threads
    rows = list(zip(frame["id"].tolist(), frame["display_name"].tolist(),
                    frame["coupon_code"].tolist(), strict=True))  # fmt: skip
    with ApiClient(configuration) as api_client:
        api = MessagingApi(api_client)

        def send(row: tuple[str, str, str]) -> None:
            to, name, coupon = row
            api.push_message(
                PushMessageRequest(
                    to=to, messages=[TextMessage(text=f"Hi {name}, your coupon is {coupon}")]
                ),
                x_line_retry_key=str(uuid.uuid4()),
            )

        started = time.perf_counter()
        if threads > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(send, rows))
        else:
            for row in rows:
                send(row)
        return time.perf_counter() - started


def sdk_multicast(url: str, frame: Any, threads: int = 1) -> float:
    from linebot.v3.messaging import (
        ApiClient,
        Configuration,
        MessagingApi,
        MulticastRequest,
        TextMessage,
    )

    configuration = Configuration(host=url, access_token=TOKEN)
    if threads > 1:
        configuration.connection_pool_maxsize = threads
    ids = frame["id"].tolist()
    with ApiClient(configuration) as api_client:
        api = MessagingApi(api_client)

        def send(start: int) -> None:
            api.multicast(
                MulticastRequest(
                    to=ids[start : start + 500],
                    messages=[TextMessage(text="Spring sale: 20% off until Sunday")],
                ),
                x_line_retry_key=str(uuid.uuid4()),
            )

        started = time.perf_counter()
        if threads > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(send, range(0, len(ids), 500)))
        else:
            for start in range(0, len(ids), 500):
                send(start)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=5000)
    parser.add_argument("--multicasts", type=int, default=200, help="requests of 500 recipients")
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args(argv)
    try:
        from importlib.metadata import version

        import linebot  # noqa: F401
    except ImportError:
        print("line-bot-sdk is not installed: .venv/bin/pip install line-bot-sdk", file=sys.stderr)
        return 2
    print_header("peer: line-bot-sdk vs line_exports, same sandbox")
    print(f"line-bot-sdk {version('line-bot-sdk')}; sandbox rate limits x10 (no 429 expected)")
    push = recipients_frame(args.pushes, salt="peer-push")
    multi = recipients_frame(args.multicasts * 500, salt="peer-multi")
    set_client_limit("line_messaging", "push", 2000 * 10)
    set_client_limit("line_messaging", "multicast", 200 * 10)
    with (
        tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp,
        SandboxProcess(rate_scale=10) as sandbox,
    ):
        rows: list[tuple[str, str, float, float]] = []
        refused = 0
        ours = deliver_messages(sandbox.url, push, {"target": "push_message",
                                "template_message": PUSH_TEMPLATE,
                                "push_concurrency": args.concurrency}, Path(tmp) / "push")  # fmt: skip
        assert ours["accepted"] == args.pushes, ours
        ours_push = args.pushes / ours["seconds"]
        refused += fresh(sandbox)
        seq = args.pushes / sdk_push(sandbox.url, push, 1)
        refused += fresh(sandbox)
        pooled = args.pushes / sdk_push(sandbox.url, push, args.concurrency)
        refused += fresh(sandbox)
        rows += [("push", "SDK, README style (one after another)", seq, ours_push),
                 ("push", f"SDK, {args.concurrency} threads", pooled, ours_push)]  # fmt: skip
        ours_m = deliver_messages(sandbox.url, multi, {"target": "multicast_message",
                                  "template_message_multicast": MULTICAST_TEMPLATE},
                                  Path(tmp) / "multi")  # fmt: skip
        assert ours_m["accepted"] == args.multicasts * 500, ours_m
        ours_multi = ours_m["requests"] / ours_m["seconds"]
        refused += fresh(sandbox)
        sdk_multi = args.multicasts / sdk_multicast(sandbox.url, multi)
        refused += fresh(sandbox)
        rows.append(("multicast", "SDK, README style (one after another)", sdk_multi, ours_multi))
        sdk_multi_pooled = args.multicasts / sdk_multicast(sandbox.url, multi, MULTICAST_THREADS)
        rows.append(
            ("multicast", f"SDK, {MULTICAST_THREADS} threads", sdk_multi_pooled, ours_multi)
        )
        refused += fresh(sandbox)
    print(f"ours push: {ours_push:,.0f} requests/s ({args.pushes:,} pushes, push_concurrency "
          f"{args.concurrency}); ours multicast: {ours_multi:,.0f} requests/s "
          f"({args.multicasts} x 500 recipients, {ours_multi * 500:,.0f} recipients/s)")  # fmt: skip
    for kind, label, sdk_rate, our_rate in rows:
        print(
            f"{kind:9} {label:40} {sdk_rate:8,.0f} requests/s   ours/SDK = {our_rate / sdk_rate:5.2f}x"
        )
    print(f"429 answers from the sandbox: {refused}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
