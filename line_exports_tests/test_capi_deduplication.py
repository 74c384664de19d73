"""The CAPI sandbox keeps an event once per (event_name, deduplication_key), as LINE documents
and as the exporter's own rule sends it (VERIFY-13c F5): one definition,
``destinations.line_conversion.DEDUPLICATION``. Real HTTP to the sandbox."""

from __future__ import annotations

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import store_of
from line_exports_tests.test_line_conversion_sandbox import event, post


def test_one_key_under_two_event_names_is_two_events(sandbox_server: SandboxServer) -> None:
    url, box = sandbox_server.url, sandbox_server.sandbox
    first = [event("k1"), event("k1", event__event_name="Purchase")]
    assert post(url, first, tag="tag-dd").status_code == 202
    assert set(store_of(box).events["tag-dd"]) == {("Conversion", "k1"), ("Purchase", "k1")}


def test_the_same_name_and_key_is_kept_once(sandbox_server: SandboxServer) -> None:
    url, box = sandbox_server.url, sandbox_server.sandbox
    again = event("k2", event__event_timestamp=event("k2")["event"]["event_timestamp"] - 5)
    assert post(url, [event("k2")], tag="tag-dd2").status_code == 202
    assert post(url, [again, event("k2", event__event_name=None)], tag="tag-dd2").status_code == 202
    kept = store_of(box).events["tag-dd2"]
    assert set(kept) == {("Conversion", "k2"), (None, "k2")}
    assert kept[("Conversion", "k2")] == event("k2")  # the first one kept
