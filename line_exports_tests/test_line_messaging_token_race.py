"""The short-lived token cache under real processes asking for a token at the same moment."""

from __future__ import annotations

import json
import multiprocessing
import os
from typing import Any

import requests

from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of

PROCESSES = 3


def ask_token(url: str, home: str, start: Any, results: Any) -> None:
    """One process: a fresh resource (nothing in memory) asks for the token once ``start``
    lets every process go."""
    os.environ["LINE_EXPORTS_HOME"] = home
    from line_exports.destinations.line_messaging import LineMessagingResource

    tokens = (
        LineMessagingResource(auth_method="short_lived_token", base_url=url).get_client().tokens
    )
    start.wait()
    try:
        token = tokens.token()
        results.put((token, tokens.issued))
    except Exception as exc:  # reported to the test, which fails on it
        results.put((f"error: {exc!r}", -1))


def test_processes_racing_on_the_token_cache_issue_one_token_and_keep_it_readable(
    sandbox_server: SandboxServer,
) -> None:
    from line_exports import paths
    from line_exports.destinations.line_messaging import LineMessagingResource

    store = store_of(sandbox_server.sandbox)
    # A slow token endpoint (0.3 s): every process asks while the first issue is in flight.
    sandbox_server.sandbox.add_fault(Fault(path="/v2/oauth/accessToken", delay=0.3, times=-1))
    # Real processes; the fork server imports the package once, then forks each one.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["line_exports.destinations.line_messaging"])
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()
    home = os.environ["LINE_EXPORTS_HOME"]
    workers = [
        ctx.Process(target=ask_token, args=(sandbox_server.url, home, start, results))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    tokens = {token for token, _ in answers}
    # One issue for all: the lock is held from the cache read to the cache write.
    assert store.tokens_issued == 1, answers
    assert sorted(issued for _, issued in answers) == [0] * (PROCESSES - 1) + [1]
    (token,) = tokens
    assert token in store.issued  # a valid token the API knows
    # The cache is one sealed, readable entry; no temporary file is left behind.
    cache = paths.data_dir() / "line_messaging_tokens.json"
    assert len(json.loads(cache.read_text())) == 1
    assert sorted(p.name for p in cache.parent.glob("line_messaging_tokens*")) == [
        "line_messaging_tokens.json",
        "line_messaging_tokens.lock",
    ]
    again = LineMessagingResource(auth_method="short_lived_token", base_url=sandbox_server.url)
    assert again.get_client().tokens.token() == token and store.tokens_issued == 1
    # The token works for a call.
    answer = requests.get(
        f"{sandbox_server.url}/v2/bot/message/quota",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert answer.status_code == 200
