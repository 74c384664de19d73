"""LinkedIn names as keys (issue 13, VERIFY-13n N2 and N3), over loopback HTTP.

* A company keyed by name: ``Acme``, ``Acme `` and ``ACME`` are one company, sent once (the first
  row's spelling), the others ``duplicate`` rejects; a name-only user likewise
  (``Dan Ng`` / ``dan ng ``). LinkedIn's reference is silent on how it matches names; the
  exporter compares them trimmed and lower-cased (:data:`line_exports.identities.NAME_MATCH`).
* The sandbox refuses a name-only user whose first or last name is only white space, and a
  company element whose every field is only white space, as the exporter's one-of rule does
  (one definition, :func:`line_exports.identities.blank`).
"""

from __future__ import annotations

import time

import pandas as pd

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.linkedin import store_of
from line_exports_tests.test_linkedin import ACCOUNT, metadata, resource, run_export

COMPANIES = """
select * from (values
  (1, 'Acme', null), (2, 'Acme ', null), (3, 'ACME', null), (4, '   ', null),
  (5, 'Beta', null), (6, ' acme', 'acme.example.com')
) t(n, company_name, company_website_domain) order by n
"""
USERS = """
select * from (values
  (1, 'Dan', 'Ng', null), (2, 'Dan', 'Ng ', null), (3, 'dan ', 'NG', null), (4, 'Dan', 'Ng', 'Acme'),
  (5, 'Dan', '  ', null)
) t(n, first_name, last_name, company) order by n
"""


def _rejects(meta: dict) -> list[tuple[int, str]]:
    frame = pd.read_csv(meta["rejects_file"], keep_default_na=False)
    return sorted(zip(frame["_row_number"], frame["rule"], strict=True))


def test_companies_named_alike_go_once(sandbox_server: SandboxServer) -> None:
    result = run_export(
        resource(sandbox_server),
        f"select company_name, company_website_domain from ({COMPANIES})",
        audience_type="companies",
        ignore_invalid_records=True,
    )
    assert result.success
    meta = metadata(result)
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (6, 3, 3), meta
    assert _rejects(meta) == [(2, "duplicate"), (3, "duplicate"), (4, "identifier")]
    [batch] = store_of(sandbox_server.sandbox).batches
    assert [e.get("companyName") for e in batch] == ["Acme", "Beta", " acme"]


def test_name_only_users_named_alike_go_once(sandbox_server: SandboxServer) -> None:
    result = run_export(
        resource(sandbox_server),
        f"select first_name, last_name, company from ({USERS})",
        ignore_invalid_records=True,
    )
    assert result.success
    meta = metadata(result)
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (5, 3, 2), meta
    assert _rejects(meta) == [(2, "duplicate"), (3, "duplicate"), (5, "identifier")]
    [batch] = store_of(sandbox_server.sandbox).batches
    names = [(e["firstName"], e["lastName"], e.get("company")) for e in batch]
    assert names == [("Dan", "Ng", None), ("Dan", "Ng", "Acme")]


def test_sandbox_refuses_blank_names_as_the_rules_do(sandbox_server: SandboxServer) -> None:
    client = resource(sandbox_server).get_client()
    users = client.create_segment(ACCOUNT, "blank_users", None, "USER", "SANDBOX")
    companies = client.create_segment(ACCOUNT, "blank_companies", None, "COMPANY", "SANDBOX")
    time.sleep(store_of(sandbox_server.sandbox).not_found_seconds)
    elements = [
        {"action": "ADD", "userIds": [], "firstName": "  ", "lastName": "  "},
        {"action": "ADD", "firstName": "Ann", "lastName": "\u3000"},
        {"action": "ADD", "firstName": "Ann", "lastName": "Lee"},
    ]
    statuses = [r["status"] for r in client.batch_create(users, "users", elements)]
    assert statuses == [400, 400, 201]
    elements = [
        {"action": "ADD", "companyName": "   "},
        {"action": "ADD", "companyName": "\t", "companyEmailDomain": ""},
        {"action": "ADD", "companyName": "  ", "companyWebsiteDomain": "acme.example.com"},
        {"action": "ADD", "companyName": "Acme"},
    ]
    statuses = [r["status"] for r in client.batch_create(companies, "companies", elements)]
    assert statuses == [400, 400, 201, 201]


def test_mirror_never_removes_a_member_a_current_row_names_alike(
    sandbox_server: SandboxServer,
) -> None:
    """A member a current row still names alike (names compared as the duplicate check compares
    them) is not removed by mirror: a company name re-spelt (``Acme`` then ``ACME ``), a
    name-only user re-spelt or who gained an email (``Dan Ng``). Their REMOVE could take the
    current row's member out (VERIFY-13p P5). A member that really left (``Gone``) is removed."""
    res = resource(sandbox_server)
    kinds = {
        "companies": (
            "select * from (values ('Acme', null::varchar), ('Beta', 'beta.com'), "
            "('Gone', null)) t(company_name, company_website_domain)",
            "select * from (values ('ACME ', null::varchar), ('beta', 'beta.com')) "
            "t(company_name, company_website_domain)",
            lambda e: e.get("companyName"),
        ),
        "users": (
            "select * from (values (null::varchar, 'Dan', 'Ng'), (null, 'Eve', 'Lo'), "
            "(null, 'Gone', 'Away')) t(email, first_name, last_name)",
            "select * from (values ('dan@example.com', 'Dan', 'Ng'), (null, 'EVE ', 'lo')) "
            "t(email, first_name, last_name)",
            lambda e: e.get("firstName"),
        ),
    }
    for kind, (first, second, named) in kinds.items():
        settings = {"audience_type": kind, "segment_name": f"mirror {kind}", "sync_mode": "mirror"}
        assert run_export(res, first, name=f"m_{kind}", **settings).success
        before = len(store_of(sandbox_server.sandbox).batches)
        result = run_export(res, second, name=f"m_{kind}", max_remove_ratio=1.0, **settings)
        assert result.success, kind
        meta = metadata(result, f"m_{kind}")
        sent = [e for b in store_of(sandbox_server.sandbox).batches[before:] for e in b]
        removed = [named(e) for e in sent if e.get("action") == "REMOVE"]
        assert removed == ["Gone"], (kind, removed, meta)
        # a re-spelt name is the same sync key (sync_names): unchanged, not even departed; the
        # user who gained an email is a new key whose old one a current row names alike
        still = {"companies": 0, "users": 1}[kind]
        assert meta.get("members_still_current", 0) == still, meta
        assert meta["rows_unchanged"] == 2 - still, meta


def test_a_name_of_only_white_space_python_knows_names_no_one(
    sandbox_server: SandboxServer,
) -> None:
    """A company name of only a vertical tab, U+001C-U+001F or NEL is white space to Python and
    to the duplicate check's trim: an ``identifier`` reject, not a company (VERIFY-13p P1)."""
    blanks = [11, 28, 31, 133]  # \v, U+001C, U+001F, NEL
    rows = ", ".join(f"({i}, chr({c}))" for i, c in enumerate(blanks, start=1))
    query = f"select name as company_name from (values {rows}, (9, 'Acme')) t(n, name) order by n"
    result = run_export(
        resource(sandbox_server), query, audience_type="companies", ignore_invalid_records=True
    )
    assert result.success
    meta = metadata(result)
    assert (meta["rows_rejected"], meta["rows_accepted"]) == (len(blanks), 1), meta
    assert {rule for _, rule in _rejects(meta)} == {"identifier"}
    [batch] = store_of(sandbox_server.sandbox).batches
    assert [e.get("companyName") for e in batch] == ["Acme"]
