"""A second Ctrl-C (or SIGTERM) stops a run at once, and the request it cuts off in flight is of
unknown delivery, never "never sent": it may have reached the API (here it did: the sandbox acts
on a slow request after its client is gone). The real ``line-exports run`` in a child process
with a RetryPolicy (``_retry: 2``), over HTTP to the sandbox, for CAPI, MAAC, LinkedIn, LINE
push and LINE rich menus: the first requests are answered at once, the next one is slow; the first signal asks the
run to stop after it, the second stops the run at once. Also: a single signal mid-send with a
RetryPolicy ends the run (Dagster would retry the step)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from line_exports.sandbox import Fault, Sandbox, SandboxServer
from line_exports.sandbox.line_conversion import store_of as capi_store
from line_exports.sandbox.line_messaging import store_of as line_store
from line_exports.sandbox.line_messaging.narrowcast import CampaignStore
from line_exports.sandbox.line_messaging.rich_menu import store_of as rich_menu_store
from line_exports.sandbox.linkedin import store_of as linkedin_store
from line_exports.sandbox.maac import store_of as maac_store
from line_exports_tests.test_interrupt_reading import (
    OUTCOMES,
    exports,
    run_and_signal,
    table_row,
    workflow,
)
from line_exports_tests.test_line_rich_menu import setup_menus
from line_exports_tests.test_stop_counts_interrupt import (
    CAMPAIGNS,
    RECIPIENTS,
    _audience_workflow,
    _campaign_workflow,
)

SLOW = 30.0  # seconds the cut-off request waits for its answer
ROWS = 6000


def _held(kind: str, sandbox: Sandbox) -> int:
    """Rows the sandbox acted on (events kept, members imported, segment members, pushes)."""
    if kind == "capi":
        return sum(len(v) for v in capi_store(sandbox).events.values())
    if kind == "maac":
        return len(maac_store(sandbox).members)
    if kind == "maac_segment":
        return sum(len(s.uids) for s in maac_store(sandbox).segments.values())
    if kind == "linkedin":
        return sum(len(s.members) for s in linkedin_store(sandbox).segments.values())
    if kind == "rich_menu":
        return rich_menu_store(sandbox).users_in_requests
    return sum(len(v) for v in line_store(sandbox).inbox.values())


# destination: (POST path of the requests carrying rows, rows per request (0: every valid row
# in one), requests answered fast)
SENDS: dict[str, tuple[str, int, int]] = {
    "capi": ("/v1/", 1000, 2),
    "maac": ("/openapi/v1/member/import/", 500, 3),
    "maac_segment": ("/openapi/v1/custom_segment/", 0, 0),
    "linkedin": ("/rest/dmpSegments/", 500, 3),
    "push": ("/v2/bot/message/push", 1, 120),
    "rich_menu": ("/v2/bot/richmenu/bulk/link", 500, 3),
}


@pytest.mark.parametrize(
    ("kind", "second"),
    [
        ("capi", signal.SIGINT),
        ("maac", signal.SIGTERM),
        ("maac_segment", signal.SIGINT),
        ("linkedin", signal.SIGINT),
        ("push", signal.SIGINT),
        ("push", signal.SIGTERM),
        ("rich_menu", signal.SIGINT),
    ],
)
def test_second_signal_stops_at_once_and_the_request_in_flight_is_of_unknown_delivery(
    sandbox_server: SandboxServer, tmp_path: Path, kind: str, second: signal.Signals
) -> None:
    sandbox = sandbox_server.sandbox
    path, size, fast = SENDS[kind]
    folder = tmp_path / "wf"
    task = f"{kind}_twice"
    workflow(folder, task, exports(sandbox_server.url)[kind], rows=ROWS)
    if kind == "rich_menu":
        setup_menus(sandbox_server)
    quick = Fault(path=path, method="POST", delay=0.2, times=fast)
    if fast:
        sandbox.add_fault(quick)
    slow = sandbox.add_fault(Fault(path=path, method="POST", delay=SLOW, times=-1))
    in_flight: Callable[[str], bool] = lambda _: slow.hits >= 1  # noqa: E731
    ran = run_and_signal(task, folder, in_flight, [signal.SIGINT, second], gap=0.5)
    assert ran.code != 0, ran.text
    assert ran.seconds < SLOW - 8, (ran.seconds, ran.text)  # at once, not after the answer
    counts = table_row(ran.out, task)
    assert counts["read"] == ROWS == sum(counts[c] for c in OUTCOMES), ran.out
    assert counts["refused"] == 0, ran.out
    size = size or counts["read"] - counts["rejected"]
    assert counts["accepted"] == fast * size, (counts, ran.text)
    # The request cut off in flight (for push, every push in flight) may have reached the API.
    assert counts["unknown"] == slow.hits * size > 0, (counts, slow.hits, ran.text)
    assert counts["sent"] == counts["accepted"] + counts["unknown"], ran.out
    valid = counts["read"] - counts["rejected"]
    assert counts["unsent"] == valid - counts["sent"] >= 0, ran.out
    assert counts["requests"] >= quick.hits + slow.hits, (counts, quick.hits, slow.hits)
    assert f"stopped by {second.name} at once" in ran.text, ran.text
    assert "may or may not have reached it" in ran.text, ran.text  # the unknown rows' reason
    # It did reach the API: the sandbox acts on the slow request(s) once their delay is over.
    deadline = time.monotonic() + SLOW + 30
    while _held(kind, sandbox) < counts["sent"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _held(kind, sandbox) == counts["sent"], (_held(kind, sandbox), counts)


def test_one_signal_mid_send_with_a_retry_policy_ends_the_run(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """``_retry: 2``: Dagster turns an interrupt into a step retry; a user's stop is not one."""
    sandbox = sandbox_server.sandbox
    folder = tmp_path / "wf"
    workflow(folder, "capi_once", exports(sandbox_server.url)["capi"], rows=ROWS)
    fault = sandbox.add_fault(Fault(path="/v1/", method="POST", delay=0.4, times=-1))
    ran = run_and_signal(
        "capi_once", folder, lambda _: fault.hits >= 2, [signal.SIGTERM], timeout=60
    )
    assert ran.code != 0, ran.text
    counts = table_row(ran.out, "capi_once")
    assert counts["read"] == ROWS == sum(counts[c] for c in OUTCOMES), ran.out
    assert counts["accepted"] == _held("capi", sandbox) == fault.hits * 1000 < ROWS, ran.out
    assert counts["requests"] == fault.hits and counts["unknown"] == 0, ran.out
    assert "stopped by SIGTERM after the request in flight" in ran.text, ran.text
    time.sleep(3)  # a retry (1 s apart) would send the rest
    assert _held("capi", sandbox) == counts["accepted"], ran.text


@pytest.mark.parametrize("target", ["narrowcast", "broadcast"])
def test_second_signal_during_a_campaign_request_counts_it_of_unknown_delivery(
    sandbox_server: SandboxServer, tmp_path: Path, target: str
) -> None:
    """A narrowcast or broadcast cut off in flight by a second signal may have reached LINE
    (here it did): of unknown delivery, and the campaigns LINE took before it accepted (it
    counted every row never sent: 0 accepted, 0 unknown)."""
    sandbox = sandbox_server.sandbox
    folder = tmp_path / "wf"
    _campaign_workflow(folder, sandbox_server.url, target)
    path = f"/v2/bot/message/{target}"
    quick = sandbox.add_fault(Fault(path=path, method="POST", delay=0.2, times=2))
    slow = sandbox.add_fault(Fault(path=path, method="POST", delay=SLOW, times=-1))
    ran = run_and_signal(
        "campaign_stop", folder, lambda _: slow.hits >= 1, [signal.SIGINT, signal.SIGTERM], 0.5
    )
    assert ran.code != 0, ran.text
    assert ran.seconds < SLOW - 8, (ran.seconds, ran.text)  # at once, not after the answer
    counts = table_row(ran.out, "campaign_stop")
    assert counts["read"] == CAMPAIGNS == sum(counts[c] for c in OUTCOMES), ran.out
    assert counts["accepted"] == quick.hits == 2 and counts["refused"] == 0, (counts, ran.text)
    assert counts["unknown"] == slow.hits == 1, (counts, ran.text)
    assert counts["unsent"] == CAMPAIGNS - 3, ran.out
    assert "stopped by SIGTERM at once" in ran.text, ran.text
    # It did reach LINE: the sandbox makes the campaign once the request's delay is over.
    campaigns = sandbox.store("line_messaging_campaigns", CampaignStore)

    def made() -> int:
        return len(campaigns.narrowcasts) if target == "narrowcast" else campaigns.broadcasts

    deadline = time.monotonic() + SLOW + 30
    while made() < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert made() == 3, made()


def test_second_signal_during_an_audience_upload_counts_its_ids_of_unknown_delivery(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """A LINE audience upload cut off in flight by a second signal may have reached LINE (here
    it did: the audience holds every ID once the request's delay is over): its IDs are of
    unknown delivery (they were counted never sent)."""
    sandbox = sandbox_server.sandbox
    folder = tmp_path / "wf"
    _audience_workflow(folder, sandbox_server.url, "cutaud")
    path = "/v2/bot/audienceGroup/upload"
    slow = sandbox.add_fault(Fault(path=path, method="POST", delay=SLOW, times=-1))
    ran = run_and_signal(
        "push_stop", folder, lambda _: slow.hits >= 1, [signal.SIGINT, signal.SIGTERM], 0.5
    )
    assert ran.code != 0, ran.text
    assert ran.seconds < SLOW - 8, (ran.seconds, ran.text)  # at once, not after the answer
    counts = table_row(ran.out, "push_stop")
    assert counts["read"] == RECIPIENTS == sum(counts[c] for c in OUTCOMES), ran.out
    assert counts["unknown"] == counts["sent"] == RECIPIENTS, (counts, ran.text)
    assert counts["unsent"] == counts["accepted"] == counts["refused"] == 0, ran.out
    assert "stopped by SIGTERM at once" in ran.text, ran.text

    def held() -> list[int]:
        audiences = line_store(sandbox).audiences.values()
        return [sum(j.count for j in a.jobs) for a in audiences if a.description == "cutaud"]

    deadline = time.monotonic() + SLOW + 30
    while held() != [RECIPIENTS] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert held() == [RECIPIENTS], held()
