"""Stopping a sandbox server (``SandboxServer.stop``) is graceful and complete.

A request the sandbox is answering when it is stopped still gets its whole answer; after the
stop, nothing answers on its port, not even over a connection a client kept open.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from line_exports.sandbox import Sandbox, SandboxServer
from line_exports.sandbox.core import Fault

MAAC_AUTH = {"Authorization": "Bearer sandbox-maac-token"}


def test_stop_lets_an_answer_in_progress_finish_then_refuses_connections() -> None:
    server = SandboxServer(Sandbox()).start()
    segments = f"{server.url}/openapi/v1/segment/"
    slow = server.sandbox.add_fault(Fault("/openapi/v1/segment/", delay=0.5))
    answers: list[requests.Response] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            answers.append(requests.get(segments, headers=MAAC_AUTH, timeout=10))
        except requests.RequestException as exc:
            errors.append(exc)

    asking = threading.Thread(target=ask)
    asking.start()
    deadline = time.monotonic() + 10
    while slow.hits == 0 and time.monotonic() < deadline:  # the sandbox is answering it
        time.sleep(0.005)
    assert slow.hits == 1
    server.stop()
    asking.join(timeout=10)
    assert errors == []
    assert [answer.status_code for answer in answers] == [200]
    assert answers[0].json() == {"results": [], "next": None}  # the whole answer
    logged = [(r.method, r.path, r.status) for r in server.sandbox.requests]
    assert logged == [("GET", "/openapi/v1/segment/", 200)]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/_sandbox/health", timeout=5)


def test_stop_closes_a_kept_alive_connection() -> None:
    server = SandboxServer(Sandbox()).start()
    with requests.Session() as session:
        assert session.get(f"{server.url}/_sandbox/health", timeout=5).json()["ok"] is True
        server.stop()
        with pytest.raises(requests.ConnectionError):
            session.get(f"{server.url}/_sandbox/health", timeout=5)
