"""LinkedIn companies in ``mirror``: a company a current row still names is never REMOVEd
(VERIFY-13p P5, the part a1f06ee left), over loopback HTTP to the sandbox.

LinkedIn's DMP Segment Companies page matches a company by its name or a domain and does not
say what a REMOVE takes out. The safe reading, as for user IDs: a REMOVE of ``{Acme, acme.com}``
may take out ``{Acme Inc, acme.com}`` (same domain), so it is not sent while a current row shares
the name (compared as names) or any domain; the sandbox's REMOVE takes out every member alike
(one definition, :func:`line_exports.linkedin_ids.companies_alike`), so a wrong REMOVE shows.
"""

from __future__ import annotations

import time

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.linkedin import store_of
from line_exports_tests.test_linkedin import ACCOUNT, members, metadata, resource, run_export

FIRST = """
select * from (values
  ('Acme', 'acme.com', null::varchar), ('Beta', 'beta.com', null), ('Delta', 'delta.com', null),
  ('Gone', 'gone.com', null), ('Left', null, 'left.com')
) t(company_name, company_website_domain, company_email_domain)
"""
# Acme renamed, same domain; Beta lost its domain, same name; Delta's domain now its email
# domain; Gone and Left really left.
SECOND = """
select * from (values
  ('Acme Inc', 'acme.com', null::varchar), ('BETA ', null, null), ('Delta Corp', null, 'DELTA.com')
) t(company_name, company_website_domain, company_email_domain)
"""


def test_mirror_never_removes_a_company_a_current_row_names(
    sandbox_server: SandboxServer,
) -> None:
    res = resource(sandbox_server)
    settings = {"audience_type": "companies", "segment_name": "accounts", "sync_mode": "mirror"}
    assert run_export(res, FIRST, name="acc", **settings).success
    store = store_of(sandbox_server.sandbox)
    before = len(store.batches)
    result = run_export(res, SECOND, name="acc", max_remove_ratio=1.0, **settings)
    assert result.success
    meta = metadata(result, "acc")
    sent = [e for batch in store.batches[before:] for e in batch]
    removed = [e for e in sent if e["action"] == "REMOVE"]
    assert [e["companyName"] for e in removed] == ["Gone", "Left"], removed
    assert (meta["members_removed"], meta["members_still_current"]) == (2, 3), meta
    held = {m[1] for m in members(sandbox_server.sandbox, "accounts")}
    # every current row's company is still in the segment (the first spellings too: their
    # elements were never REMOVEd)
    assert {"Acme Inc", "BETA ", "Delta Corp", "Acme", "Beta", "Delta"} == held, held


def test_sandbox_remove_takes_out_every_company_named_alike(
    sandbox_server: SandboxServer,
) -> None:
    """The sandbox's model: a REMOVE takes out each member sharing its name (compared as names)
    or a domain, whichever domain field holds it; one sharing neither stays."""
    client = resource(sandbox_server).get_client()
    segment = client.create_segment(ACCOUNT, "alike", None, "COMPANY", "SANDBOX")
    time.sleep(store_of(sandbox_server.sandbox).not_found_seconds)
    adds = [
        {"action": "ADD", "companyName": "Acme", "companyWebsiteDomain": "acme.com"},
        {"action": "ADD", "companyName": "Acme Inc", "companyWebsiteDomain": "acme.com"},
        {"action": "ADD", "companyName": "Beta"},
        {"action": "ADD", "companyName": "Beta Labs", "companyEmailDomain": "beta.com"},
        {"action": "ADD", "companyName": "Other", "companyWebsiteDomain": "other.com"},
    ]
    assert {r["status"] for r in client.batch_create(segment, "companies", adds)} == {201}
    removes = [
        {"action": "REMOVE", "companyWebsiteDomain": "ACME.com"},
        {"action": "REMOVE", "companyName": " beta", "companyWebsiteDomain": "beta.com"},
    ]
    assert {r["status"] for r in client.batch_create(segment, "companies", removes)} == {201}
    held = [m[1] for m in members(sandbox_server.sandbox, "alike")]
    assert held == ["Other"]
