"""Receivers on several machines: two real ``webhook serve`` processes share one PostgreSQL spool.

A real PostgreSQL server on loopback (``postgres_server``); the receivers and two landing
workers are real processes. One receiver is SIGKILLed mid-load while the landers keep landing
into a PostgreSQL warehouse: every acknowledged event must land exactly once. The receivers also
relay to a sandbox bot: the one holding the relay claim is the one killed, the other takes over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests
import sqlalchemy as sa

from line_exports.sandbox import line_webhook_bot as bots
from line_exports.sandbox.core import Sandbox
from line_exports.sandbox.server import SandboxServer
from line_exports.webhook.config import WebhookSource
from line_exports.webhook.landing import land_source
from line_exports.webhook.spool import open_reader

try:  # works whether or not line_exports_tests becomes a package
    from line_exports_tests import postgres_server
    from line_exports_tests.webhook_helpers import base_event, body_of, free_port, signed_headers
except ImportError:
    import postgres_server  # type: ignore[no-redef]
    from webhook_helpers import base_event, body_of, free_port, signed_headers

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def _serve(port: int, home: Path, sources: Path, spool_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LINE_CHANNEL_SECRET_SHOP_OA": SECRET}
    cmd = [
        sys.executable, "-m", "line_exports.webhook.cli", "webhook", "serve",
        "--port", str(port), "--data-dir", str(home), "--sources", str(sources),
        "--spool-url", spool_url, "--no-access-log", "--log-level", "warning",
        "--relay-backoff-base", "0.05", "--relay-backoff-max", "0.5",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def _wait_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90  # start-up imports are slow on a busy host
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"receiver on {port} did not come up")


def _wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


_LANDER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from line_exports.webhook.config import load_sources
    from line_exports.webhook.landing import land_source
    sources, spool, target, stop = sys.argv[1:5]
    (source,) = load_sources(sources)
    runs = landed = 0
    print("ready", flush=True)
    while True:
        final = Path(stop).exists()
        result = land_source(source, spool_path=spool, target_url=target)
        runs, landed = runs + 1, landed + result.events_landed
        if final:
            break
        time.sleep(0.05)
    print(json.dumps({"runs": runs, "events_landed": landed}))
    """
)


def test_two_receivers_one_postgres_spool_sigkill_mid_load(
    tmp_path: Path, postgres_server_url: str
) -> None:
    spool_url = postgres_server.new_database(postgres_server_url)
    target_url = postgres_server.new_database(postgres_server_url)
    source = WebhookSource(
        name="shop_oa",
        source_id=str(uuid.uuid4()),
        channel_secret_env="LINE_CHANNEL_SECRET_SHOP_OA",
    )
    sandbox = Sandbox()
    bots.register_bot(sandbox, "shop", SECRET)
    bot = SandboxServer(sandbox).start()
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        f"sources:\n  - name: shop_oa\n    source_id: {source.source_id}\n"
        f"    relay_to: [{bot.url}/bot/shop/webhook]\n"
    )
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    stop = tmp_path / "stop"
    landers: list[subprocess.Popen[str]] = []
    try:
        for i, port in enumerate(ports):
            procs.append(_serve(port, tmp_path / f"home{i}", sources, spool_url))
            _wait_up(port, procs[-1])
            if i == 0:  # alone, it takes the relay claim: LINE's "Verify" (no events) goes through
                body = body_of([])
                url = f"http://127.0.0.1:{port}/v1/task/{source.source_id}"
                assert requests.post(url, data=body, headers=signed_headers(SECRET, body)).ok
                _wait_for(lambda: len(bots.received(sandbox, "shop")) == 1)
        # Two landing workers at once, landing while the receivers commit concurrently.
        landers = [
            subprocess.Popen(
                [sys.executable, "-c", _LANDER, str(sources), spool_url, target_url, str(stop)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for lander in landers:  # imported and about to land
            assert lander.stdout is not None and lander.stdout.readline().strip() == "ready"
        total, per_request = 240, 3
        acked: dict[str, int] = {}
        lock = threading.Lock()
        next_request = [0]
        killed = threading.Event()

        def client(k: int) -> None:
            with requests.Session() as http:
                while True:
                    with lock:
                        n = next_request[0]
                        next_request[0] += 1
                    if n >= total:
                        return
                    events = [
                        base_event("message", n * per_request + i, message={"id": str(n)})
                        for i in range(per_request)
                    ]
                    for attempt in range(40):
                        body = body_of(events)
                        # The load balancer's choice: alternate; after a failure, the other one.
                        port = ports[(n + attempt + k) % 2]
                        try:
                            resp = http.post(
                                f"http://127.0.0.1:{port}/v1/task/{source.source_id}",
                                data=body,
                                headers=signed_headers(SECRET, body),
                                timeout=10,
                            )
                            ok = resp.status_code == 200
                        except requests.RequestException:
                            ok = False
                        if ok:
                            with lock:
                                for e in events:
                                    acked[e["webhookEventId"]] = (
                                        acked.get(e["webhookEventId"], 0) + 1
                                    )
                                if len(acked) >= total * per_request // 3 and not killed.is_set():
                                    killed.set()
                                    os.killpg(procs[0].pid, signal.SIGKILL)  # mid-load, no flush
                            break
                        for e in events:  # LINE marks its redeliveries
                            e["deliveryContext"] = {"isRedelivery": True}
                        time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert killed.is_set()
        assert len(acked) == total * per_request  # the surviving receiver took the rest
        stop.touch()
        outputs = [
            json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in landers
        ]
        with open_reader(spool_url) as reader:
            spooled = [r.body for r in reader.iter_all(source.source_id)]
        _wait_for(lambda: len(bots.received(sandbox, "shop")) >= len(spooled))
        time.sleep(0.5)  # nothing more may arrive
        relayed = [r.body for r in bots.received(sandbox, "shop")]
    finally:
        bot.stop()
        stop.touch()
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for lander in landers:
            if lander.poll() is None:
                lander.kill()
                lander.wait(timeout=30)

    # The landers' last runs started after the load ended: nothing is left for a third one.
    assert land_source(source, spool_path=spool_url, target_url=target_url).events_landed == 0
    engine = sa.create_engine(target_url)
    try:
        with engine.connect() as conn:
            counts = dict(
                conn.execute(
                    sa.text(
                        "SELECT event_webhookeventid, COUNT(*) FROM line_oa_events_shop_oa"
                        " GROUP BY 1"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    assert set(counts) == set(acked)  # every acknowledged event landed
    assert set(counts.values()) == {1}  # none twice, though two workers landed at once
    assert sum(o["events_landed"] for o in outputs) == len(acked)
    assert all(o["runs"] > 1 for o in outputs)  # both landed while the load ran
    with open_reader(spool_url) as reader:
        assert reader.pending_count(source.source_id)[0] == 0
    # Relay: every spooled request reached the bot in spool order, at least once; the killed
    # holder may have had one 2xx whose cursor move it never committed (sent again, right after).
    again = [i for i in range(1, len(relayed)) if relayed[i] == relayed[i - 1]]
    assert len(relayed) - len(spooled) <= 1
    if len(relayed) > len(spooled):
        assert len(again) >= 1 and relayed[: again[-1]] + relayed[again[-1] + 1 :] == spooled
    else:
        assert relayed == spooled
    assert bots.store_of(sandbox).refused == {}


def test_a_request_committed_late_by_a_slow_receiver_is_never_skipped(
    postgres_server_url: str,
) -> None:
    """Receiver A takes row id 1 but commits after receiver B's row 2 was already landed: an id
    cursor would have moved past 1 for ever. The (transaction, row) cursor waits for A."""
    from line_exports.webhook.spool_pg import PgSpoolReader, make_engine

    spool_url = postgres_server.new_database(postgres_server_url)
    source_id = str(uuid.uuid4())
    insert = sa.text(
        "INSERT INTO requests (request_id, source_id, received_at, signature_ok, event_count,"
        " body) VALUES (:r, :s, 0, true, 0, :b)"
    )
    with PgSpoolReader(spool_url) as reader:
        engine = make_engine(spool_url)
        try:
            slow = engine.connect()
            slow_tx = slow.begin()
            slow.execute(insert, {"r": "a", "s": source_id, "b": b"{}"})  # id 1, not committed
            with engine.begin() as fast:
                fast.execute(insert, {"r": "b", "s": source_id, "b": b"{}"})  # id 2, committed
            first = reader.pending(source_id, (0, 0), 100)
            assert first == []  # "b" waits: a transaction older than it is still open
            slow_tx.commit()
            slow.close()
            second = reader.pending(source_id, (0, 0), 100)
        finally:
            engine.dispose()
    assert [r.request_id for r in second] == ["a", "b"]
    assert [r.id for r in second] == [1, 2]


def test_dead_letter_resend_record_on_postgres(postgres_server_url: str) -> None:
    """The resend record (webhook.resend) on the PostgreSQL spool: recorded before the POST,
    claimed once, kept once sent."""
    from line_exports.webhook.spool import SpooledRequest

    spool_url = postgres_server.new_database(postgres_server_url)
    source_id = str(uuid.uuid4())
    request = SpooledRequest(7, "r7", source_id, 1.0, True, None, 1, b'{"events":[]}', 7, "sig")
    with open_reader(spool_url) as reader:
        reader.relay_dead_letter(source_id, "http://127.0.0.1:9/bot", request, 3, 503, "gave up")
        (letter,) = reader.dead_letters(source_id)
        assert (letter.resend, letter.body, letter.signature) == (None, request.body, "sig")
        assert reader.resend_begin(letter.id, "a") and not reader.resend_begin(letter.id, "b")
        assert reader.dead_letters(source_id)[0].resend == "sending"
        reader.resend_cancel(letter.id)  # not accepted: may go again
        assert reader.resend_begin(letter.id, "c")
        reader.resend_sent(letter.id, 200)
        reader.resend_cancel(letter.id)  # a sent one stays sent
        (sent,) = reader.dead_letters(source_id)
        assert sent.resend == "sent" and sent.resent_at is not None
        assert not reader.resend_begin(letter.id, "d")
