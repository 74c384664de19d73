"""Webhook relay: verified requests forwarded from the spool to downstream bots (real servers).

The receiver (real uvicorn, SQLite spool) relays two sources to the sandbox's fake bots, which
verify ``x-line-signature`` with the channel secret. The bots are down at first (nothing
listening on their port), then come back: every request arrives once, unchanged, in order per
source. 4xx and exhausted retries go to the dead-letter table; ``webhook replay`` re-forwards.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from line_exports.sandbox import line_webhook_bot as bots
from line_exports.sandbox.core import Fault, Sandbox
from line_exports.sandbox.server import SandboxServer
from line_exports.webhook.cli import main
from line_exports.webhook.config import SOURCES_ENV, SourceConfigError, WebhookSource, parse_sources
from line_exports.webhook.landing import land_source
from line_exports.webhook.relay import RelayPolicy, classify, parse_since
from line_exports.webhook.spool import SPOOL_ENV, SPOOL_URL_ENV, open_reader

try:  # works whether or not line_exports_tests becomes a package
    from line_exports_tests.webhook_helpers import (
        base_event,
        body_of,
        free_port,
        running_server,
        signed_headers,
    )
except ImportError:
    from webhook_helpers import base_event, body_of, free_port, running_server, signed_headers

SECRETS = {
    "shop_oa": "11112222333344445555666677778888",
    "cafe_oa": "9999aaaabbbbccccddddeeeeffff0000",
}
FAST = RelayPolicy(max_attempts=200, backoff_base=0.05, backoff_max=0.3, timeout=2.0, poll=0.05)


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LINE_EXPORTS_HOME", str(tmp_path / "home"))
    # main() exports --sources/--spool for serve's workers: undo that after each test.
    for name in (SOURCES_ENV, SPOOL_ENV, SPOOL_URL_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, secret in SECRETS.items():
        monkeypatch.setenv(f"LINE_CHANNEL_SECRET_{name.upper()}", secret)


def _source(name: str, bot_url: str) -> WebhookSource:
    return WebhookSource(
        name=name,
        source_id=str(uuid.uuid4()),
        channel_secret_env=f"LINE_CHANNEL_SECRET_{name.upper()}",
        relay_to=(bot_url,),
    )


def _wait(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _post(base: str, source: WebhookSource, n: int) -> tuple[bytes, str]:
    event = base_event("message", n, message={"id": str(n), "type": "text", "text": f"m{n}"})
    body = body_of([event])
    headers = signed_headers(SECRETS[source.name], body)
    resp = requests.post(
        f"{base}/v1/task/{source.source_id}", data=body, headers=headers, timeout=5
    )
    assert resp.status_code == 200
    return body, headers["x-line-signature"]


def test_target_down_then_back_gets_everything_once_in_order(tmp_path: Path) -> None:
    sandbox = Sandbox()
    port = free_port()  # nothing listens here yet: the bots are down
    bot = f"http://127.0.0.1:{port}"
    for name in SECRETS:
        bots.register_bot(sandbox, name, SECRETS[name])
    shop, cafe = (_source(name, f"{bot}/bot/{name}/webhook") for name in SECRETS)
    spool = tmp_path / "spool.sqlite3"
    sent: dict[str, list[tuple[bytes, str]]] = {"shop_oa": [], "cafe_oa": []}
    with running_server([shop, cafe], spool, relay=FAST) as base:
        for n in range(20):  # interleaved, as two channels' traffic would be
            sent["shop_oa"].append(_post(base, shop, n))
            sent["cafe_oa"].append(_post(base, cafe, 1000 + n))
        with open_reader(spool) as reader:  # the relay kept trying meanwhile
            _wait(lambda: reader.relay_state(shop.source_id, shop.relay_to[0]).attempts >= 2)
            state = reader.relay_state(shop.source_id, shop.relay_to[0])
            assert state.forwarded == 0 and "ConnectionError" in (state.last_error or "")
        # Retention 0 must not prune what a target still waits for.
        land_source(shop, spool_path=spool, target_url=f"sqlite:///{tmp_path / 'w.sqlite'}",
                    retention_days=0)  # fmt: skip
        with open_reader(spool) as reader:
            assert reader.pending_count(shop.source_id, (0, 0))[0] == 20

        server = SandboxServer(sandbox, port=port).start()  # the bots are back
        try:
            for name in SECRETS:
                _wait(lambda name=name: len(bots.received(sandbox, name)) >= 20)
            sent["shop_oa"].append(_post(base, shop, 20))  # live traffic flows straight on
            _wait(lambda: len(bots.received(sandbox, "shop_oa")) >= 21)
            time.sleep(0.3)  # nothing more may arrive
        finally:
            server.stop()
    for name, expected in sent.items():
        got = [(r.body, r.signature) for r in bots.received(sandbox, name)]
        assert got == expected  # once each, in order, body and signature unchanged
    assert bots.store_of(sandbox).refused == {}  # every signature verified downstream

    result = land_source(shop, spool_path=spool, target_url=f"sqlite:///{tmp_path / 'w.sqlite'}",
                         retention_days=0)  # fmt: skip
    target = shop.relay_to[0]
    assert result.relay[target]["forwarded"] == 21 and result.relay[target]["backlog"] == 0
    with open_reader(spool) as reader:  # forwarded and landed: now pruned
        assert reader.pending_count(shop.source_id, (0, 0))[0] == 0


def test_dead_letters_then_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = Sandbox()
    bots.register_bot(sandbox, "shop_oa", SECRETS["shop_oa"])
    policy = RelayPolicy(max_attempts=3, backoff_base=0.05, backoff_max=0.1, poll=0.05)
    with SandboxServer(sandbox) as server:
        shop = _source("shop_oa", f"{server.url}/bot/shop_oa/webhook")
        spool = tmp_path / "spool.sqlite3"
        path = "/bot/shop_oa/webhook"
        # Request 0: a 400 that no retry changes; request 1: 503 three times (the budget).
        sandbox.add_fault(Fault(path=path, status=400, times=1))
        sandbox.add_fault(Fault(path=path, status=503, times=3))
        with running_server([shop], spool, relay=policy) as base:
            started = time.time()
            sent = [_post(base, shop, n) for n in range(5)]
            _wait(lambda: len(bots.received(sandbox, "shop_oa")) >= 3)
            time.sleep(0.3)
        got = [r.body for r in bots.received(sandbox, "shop_oa")]
        assert got == [body for body, _ in sent[2:]]  # the rest, in order, after the two
        with open_reader(spool) as reader:
            dead = reader.dead_letters(shop.source_id)
            state = reader.relay_state(shop.source_id, shop.relay_to[0])
        assert [(d.status, d.attempts) for d in dead] == [(400, 1), (503, 3)]
        assert [(d.body, d.signature) for d in dead] == sent[:2]  # kept exactly
        assert dead[1].reason.startswith("gave up after 3 attempts")
        assert state.forwarded == 3 and state.attempts == 0

        # Replay: everything still in the spool since before the first post, to that target.
        sources_file = tmp_path / "sources.yaml"
        sources_file.write_text(
            "sources:\n  - name: shop_oa\n"
            f"    source_id: {shop.source_id}\n    relay_to: [{shop.relay_to[0]}]\n"
        )
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 1))
        argv = ["webhook", "replay", "--since", since, "--sources", str(sources_file),
                "--spool", str(spool), "--target", shop.relay_to[0]]  # fmt: skip
        # The first one's answer is lost: a replay tries it again (a bot dedups on
        # webhookEventId), unlike a resend.
        lost = sandbox.add_fault(Fault(path=path, lose_answer=True, times=1))
        assert main(argv) == 0
        (line,) = capsys.readouterr().out.strip().splitlines()
        report = json.loads(line)
        assert (report["requests"], report["forwarded"], report["failed"]) == (5, 5, 0)
        got = [(r.body, r.signature) for r in bots.received(sandbox, "shop_oa")]
        assert lost.hits == 1 and got[3] == sent[0]
        assert got[4:] == sent  # all five again, dead letters included, in order
        assert main([*argv[:-1], f"{server.url}/bot/other/webhook"]) == 2  # not a relay_to


def test_relay_targets_follow_the_host_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    good = str(uuid.uuid4())

    def entry(url: object) -> dict[str, object]:
        return {"sources": [{"name": "a", "source_id": good, "relay_to": url}]}

    (s,) = parse_sources(entry(["http://127.0.0.1:9/bot", "http://localhost/x"]))
    assert s.relay_to == ("http://127.0.0.1:9/bot", "http://localhost/x")
    monkeypatch.delenv("LINE_EXPORTS_ALLOWED_HOSTS", raising=False)
    with pytest.raises(SourceConfigError, match=r"source a: relay_to\[0\] .*ALLOWED_HOSTS"):
        parse_sources(entry(["https://bot.example.com/callback"]))
    monkeypatch.setenv("LINE_EXPORTS_ALLOWED_HOSTS", "bot.example.com")
    (s,) = parse_sources(entry(["https://bot.example.com/callback"]))
    assert s.relay_to == ("https://bot.example.com/callback",)
    with pytest.raises(SourceConfigError, match="plain HTTP"):
        parse_sources(entry(["http://bot.example.com/callback"]))
    with pytest.raises(SourceConfigError, match="twice"):
        parse_sources(entry(["http://127.0.0.1/a", "http://127.0.0.1/a"]))
    with pytest.raises(SourceConfigError, match="http"):
        parse_sources(entry(["ftp://127.0.0.1/a"]))
    for url in ("http://user:s3cret@127.0.0.1:9/bot", "https://u:s3cret@bot.example.com/cb"):
        with pytest.raises(SourceConfigError, match="credentials") as refused:
            parse_sources(entry([url]))
        assert "s3cret" not in str(refused.value) and "***@" in str(refused.value)


def test_what_is_retried_and_since_forms() -> None:
    assert [classify(s) for s in (200, 204, 400, 401, 403, 404, 408, 429, 500, 503, 302)] == [
        "ok", "ok", "dead", "dead", "dead", "dead", "retry", "retry", "retry", "retry", "retry",
    ]  # fmt: skip
    assert parse_since("2026-11-30T09:00:00+09:00") == parse_since("2026-11-30T00:00:00Z")
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("1700000000") == 1_700_000_000.0
    with pytest.raises(ValueError, match="offset"):
        parse_since("2026-11-30T09:00:00")
    assert RelayPolicy(backoff_base=1, backoff_max=10).backoff(6) == 10
    assert RelayPolicy(backoff_base=1, backoff_max=60).backoff(1, retry_after=30) == 30


def test_relay_command_forwards_until_stopped(tmp_path: Path) -> None:
    """``line-exports webhook relay`` on its own (receivers with ``--no-relay``): a real process
    forwards what the spool holds and stops cleanly on Ctrl-C."""
    import os
    import signal
    import subprocess
    import sys

    sandbox = Sandbox()
    bots.register_bot(sandbox, "shop_oa", SECRETS["shop_oa"])
    with SandboxServer(sandbox) as server:
        shop = _source("shop_oa", f"{server.url}/bot/shop_oa/webhook")
        spool = tmp_path / "spool.sqlite3"
        with running_server([shop], spool, relay=None) as base:  # a receiver that only spools
            sent = [_post(base, shop, n) for n in range(3)]
        assert bots.received(sandbox, "shop_oa") == []
        sources_file = tmp_path / "sources.yaml"
        sources_file.write_text(
            "sources:\n  - name: shop_oa\n"
            f"    source_id: {shop.source_id}\n    relay_to: [{shop.relay_to[0]}]\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "line_exports.webhook.cli", "webhook", "relay",
             "--sources", str(sources_file), "--spool", str(spool)],
            env={**os.environ}, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _wait(lambda: len(bots.received(sandbox, "shop_oa")) >= 3, seconds=90)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert [(r.body, r.signature) for r in bots.received(sandbox, "shop_oa")] == sent


def test_dagster_landing_shows_the_relay_state(tmp_path: Path) -> None:
    """A Dagster user sees the relay in the landing run's metadata: backlog and dead letters."""
    import dagster as dg

    from line_exports.webhook.assets import build_webhook_definitions

    shop = _source("shop_oa", f"http://127.0.0.1:{free_port()}/bot/shop_oa/webhook")  # down
    spool = tmp_path / "spool.sqlite3"
    with running_server([shop], spool, relay=None) as base:
        for n in range(2):
            _post(base, shop, n)
    defs = build_webhook_definitions(
        [shop], spool_path=spool, target_url=f"sqlite:///{tmp_path / 'w.sqlite'}"
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            list(defs.assets),  # type: ignore[arg-type]
            resources=dict(defs.resources or {}),
            instance=instance,
        )
    assert result.success
    (raw,) = [
        m.metadata
        for m in (
            e.event_specific_data.materialization for e in result.get_asset_materialization_events()
        )  # type: ignore[union-attr]
        if m.asset_key.path[-1] == "line_oa_raw"
    ]
    assert raw["relay_backlog"].value == 2 and raw["relay_dead_letters"].value == 0
    assert raw["relay"].value[shop.relay_to[0]]["forwarded"] == 0


def test_resend_dead_letters_once_each_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dead letters go again to the fixed bot, unchanged and in order, once each: a second
    resend skips them; a refused one is left to resend later; one whose answer was lost is in
    doubt (skipped until --include-in-doubt), never sent twice blindly."""
    from line_exports.webhook.landing import relay_status
    from line_exports.webhook.resend import resend_dead_letters
    from line_exports.webhook.signature import sign
    from line_exports.webhook.spool import SpooledRequest

    sandbox = Sandbox()
    bots.register_bot(sandbox, "shop_oa", SECRETS["shop_oa"])
    path = "/bot/shop_oa/webhook"
    with SandboxServer(sandbox) as server:
        shop = _source("shop_oa", f"{server.url}{path}")
        target = shop.relay_to[0]
        spool = tmp_path / "spool.sqlite3"
        bodies = [body_of([base_event("message", n)]) for n in range(4)]
        with open_reader(spool) as reader:
            for n, body in enumerate(bodies, start=1):
                request = SpooledRequest(n, f"r{n}", shop.source_id, time.time(), True, None, 1,
                                         body, n, sign(SECRETS["shop_oa"], body))  # fmt: skip
                reader.relay_dead_letter(shop.source_id, target, request, 12, 503, "gave up")

        def resend(**kw: object) -> Any:
            (result,) = resend_dead_letters(shop, spool=spool, policy=FAST, **kw)
            return result

        sandbox.add_fault(Fault(path=path, status=400, times=1))  # dead letter 1: still refused
        sandbox.add_fault(Fault(path=path, lose_answer=True, times=1))  # 2: the answer is lost
        busy = sandbox.add_fault(Fault(path=path, status=503, times=1))  # 3: tried again
        first = resend()
        assert (first.resent, first.in_doubt, first.already_sent) == ([3, 4], [2], [])
        assert busy.hits == 1
        assert first.failed[0].startswith("1: HTTP 400")
        again = resend()
        assert (again.resent, again.in_doubt, again.already_sent) == ([1], [2], [3, 4])
        assert [r.body for r in bots.received(sandbox, "shop_oa")] == [
            bodies[1], bodies[2], bodies[3], bodies[0]  # 2 arrived though its answer was lost
        ]  # fmt: skip
        assert bots.store_of(sandbox).refused == {}  # signatures unchanged, verified
        (sources := tmp_path / "sources.yaml").write_text(
            f"sources:\n  - name: shop_oa\n    source_id: {shop.source_id}\n"
            f"    relay_to: [{target}]\n"
        )
        argv = ["webhook", "resend", "--sources", str(sources), "--spool", str(spool)]
        assert main(argv) == 1  # 2 is still in doubt
        assert main([*argv, "--include-in-doubt"]) == 0  # the operator's decision
        assert len(bots.received(sandbox, "shop_oa")) == 5
        capsys.readouterr()
        assert main(["webhook", "dead-letters", *argv[2:]]) == 0
        listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(d["id"], d["resend"]) for d in listed] == [(i, "sent") for i in (1, 2, 3, 4)]
        with open_reader(spool) as reader:
            status = relay_status(reader, shop)[target]
        assert (status["dead_letters"], status["dead_letters_resent"]) == (0, 4)
        with pytest.raises(ValueError, match="not in its relay_to"):
            resend_dead_letters(shop, spool=spool, targets=[f"{server.url}/bot/other/webhook"])
