"""LinkedIn name-only users (no ID), over loopback HTTP to the sandbox (VERIFY-13r R1, R2).

* A company or title of only white space names nothing: ``Dan Ng`` with company NULL, ``""``,
  ``"  "`` or ``"\\t"`` is one user, sent once; the others are ``duplicate`` rejects
  (:func:`line_exports.identities.name_keys`, the duplicate check's and mirror's comparison).
* mirror never REMOVEs a departed name-only user whose first and last name a current row
  holds (names compared as the duplicate check compares them), whatever title, company or
  country that row adds or changes: the REMOVE could take the current row's member out (the
  safe reading the README takes for IDs). A user who really left is removed.
"""

from __future__ import annotations

import pandas as pd

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.linkedin import store_of
from line_exports_tests.test_linkedin import metadata, resource, run_export


def test_blank_company_or_title_is_no_company_or_title(sandbox_server: SandboxServer) -> None:
    query = """
    select * from (values
      (1, 'Dan', 'Ng', null, null), (2, 'Dan', 'Ng', '', null), (3, 'Dan', 'Ng', '  ', ''),
      (4, 'Dan', 'Ng', chr(9), ' '), (5, 'Dan', 'Ng', 'Acme', ' '), (6, 'Dan', 'Ng', 'acme ', null)
    ) t(n, first_name, last_name, company, title) order by n
    """
    result = run_export(
        resource(sandbox_server),
        f"select first_name, last_name, company, title from ({query})",
        ignore_invalid_records=True,
    )
    assert result.success
    meta = metadata(result)
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (6, 4, 2), meta
    frame = pd.read_csv(meta["rejects_file"], keep_default_na=False)
    assert sorted(zip(frame["_row_number"], frame["rule"], strict=True)) == [
        (2, "duplicate"),
        (3, "duplicate"),
        (4, "duplicate"),
        (6, "duplicate"),
    ]
    [batch] = store_of(sandbox_server.sandbox).batches
    sent = [(e["firstName"], e["lastName"], e.get("company"), e.get("title")) for e in batch]
    assert sent == [("Dan", "Ng", None, None), ("Dan", "Ng", "Acme", None)]


def test_mirror_never_removes_a_name_only_user_a_current_row_names(
    sandbox_server: SandboxServer,
) -> None:
    res = resource(sandbox_server)
    first = (
        "select * from (values ('Dan', 'Ng', null::varchar, null::varchar), "
        "('Eve', 'Lo', 'Acme', null), ('Kim', 'Oh', null, 'CTO'), ('Gone', 'Away', null, null)) "
        "t(first_name, last_name, company, title)"
    )
    second = (
        "select * from (values ('Dan', 'Ng', null::varchar, 'CEO'), ('eve ', 'LO', 'Beta', null), "
        "('Kim', 'Oh', '  ', null)) t(first_name, last_name, company, title)"
    )
    settings = {"segment_name": "mirror name-only", "sync_mode": "mirror"}
    assert run_export(res, first, name="m_names", **settings).success
    before = len(store_of(sandbox_server.sandbox).batches)
    result = run_export(res, second, name="m_names", max_remove_ratio=1.0, **settings)
    assert result.success
    meta = metadata(result, "m_names")
    sent = [e for b in store_of(sandbox_server.sandbox).batches[before:] for e in b]
    removed = [(e["firstName"], e["lastName"]) for e in sent if e["action"] == "REMOVE"]
    assert removed == [("Gone", "Away")], (removed, meta)
    assert meta["members_still_current"] == 3, meta


def test_a_blank_name_company_or_title_is_never_sent(sandbox_server: SandboxServer) -> None:
    """A field that is none is not sent and has no length (VERIFY-13s S2, S9): a blank title or
    company (even 60 characters of white space) is left out of the element, and so is a blank
    company name beside a domain, or a blank first name beside an email."""
    users = """
    select * from (values
      (1, null, 'B1', 'Ko', repeat(' ', 60), repeat(chr(12288), 60)),
      (2, null, 'Eve', 'Lo', chr(133), chr(11)),
      (3, 'ann@example.com', '  ', 'Lee', null, null)
    ) t(n, email, first_name, last_name, title, company) order by n
    """
    result = run_export(
        resource(sandbox_server),
        f"select email, first_name, last_name, title, company from ({users})",
        segment_name="blank fields",
    )
    assert result.success
    meta = metadata(result)
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (3, 0, 3), meta
    [batch] = store_of(sandbox_server.sandbox).batches
    assert [sorted(k for k in e if k not in ("action", "userIds")) for e in batch] == [
        ["firstName", "lastName"],
        ["firstName", "lastName"],
        ["lastName"],
    ]
    companies = """
    select * from (values (1, '  ', 'acme.com'), (2, chr(12288), 'beta.com'), (3, 'Gamma', null))
    t(n, company_name, company_website_domain) order by n
    """
    result = run_export(
        resource(sandbox_server),
        f"select company_name, company_website_domain from ({companies})",
        audience_type="companies",
        segment_name="blank company names",
        name="li_companies",
    )
    assert result.success
    meta = metadata(result, "li_companies")
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (3, 0, 3), meta
    batch = store_of(sandbox_server.sandbox).batches[-1]
    assert [{k: v for k, v in e.items() if k != "action"} for e in batch] == [
        {"companyWebsiteDomain": "acme.com"},
        {"companyWebsiteDomain": "beta.com"},
        {"companyName": "Gamma"},
    ]
