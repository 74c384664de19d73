"""The LinkedIn sandbox's REMOVE of a user with no ID takes out every name-only member it names
alike (names as the exporter's duplicate check and sync key compare them,
:func:`line_exports.identities.name_keys`), so the sandbox's model of a name-only member agrees
with the exporter's identity: a REMOVE the exporter should never send shows as a loss. Direct
HTTP to the sandbox."""

from __future__ import annotations

import time

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.linkedin import store_of
from line_exports_tests.test_linkedin import ACCOUNT, members, resource


def test_a_remove_takes_out_every_user_named_alike(sandbox_server: SandboxServer) -> None:
    client = resource(sandbox_server).get_client()
    segment = client.create_segment(ACCOUNT, "names", None, "USER", "SANDBOX")
    time.sleep(store_of(sandbox_server.sandbox).not_found_seconds)
    adds = [
        {"action": "ADD", "userIds": [], "firstName": "Dan", "lastName": "Ng"},
        {"action": "ADD", "userIds": [], "firstName": "Dan", "lastName": "Ng", "company": "Acme"},
        {"action": "ADD", "userIds": [], "firstName": "Eve", "lastName": "Lo", "country": "US"},
        {"action": "ADD", "userIds": [], "firstName": "Eve", "lastName": "Lo", "country": "JP"},
    ]
    assert {r["status"] for r in client.batch_create(segment, "users", adds)} == {201}
    removes = [
        {"action": "REMOVE", "userIds": [], "firstName": "dan ", "lastName": "NG"},
        {"action": "REMOVE", "userIds": [], "firstName": " EVE", "lastName": "lo", "country": "US"},
    ]
    assert {r["status"] for r in client.batch_create(segment, "users", removes)} == {201}
    held = {m[1:] for m in members(sandbox_server.sandbox, "names")}
    # another company or another country is another person: it stays
    assert held == {("Dan", "Ng", "Acme", None, None), ("Eve", "Lo", None, None, "JP")}, held
