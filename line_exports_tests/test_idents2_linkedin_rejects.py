"""A LinkedIn name ``duplicate`` reject shows the key as normalized, the value compared
(README's rejects paragraph; VERIFY-13p P4): ``acme`` for ``ACME``, the masked lower-cased,
trimmed names of a name-only user (masked columns keep their mask rule). Real runs, loopback
HTTP to the sandbox."""

from __future__ import annotations

import pandas as pd

from line_exports.sandbox import SandboxServer
from line_exports_tests.test_linkedin import metadata, resource, run_export

COMPANIES = """
select company_name, company_website_domain from (values
  (1, 'Acme', null::varchar), (2, 'Acme ', null), (3, ' ACME', null), (4, 'Beta', 'Beta.com '),
  (5, 'BETA', 'beta.com')
) t(n, company_name, company_website_domain) order by n
"""
USERS = """
select first_name, last_name from (values
  (1, 'Daniel', 'Nguyen'), (2, ' DANIEL', 'nguyen '), (3, 'Daniel', 'NGUYEN')
) t(n, first_name, last_name) order by n
"""


def _duplicates(meta: dict) -> list[tuple[int, str]]:
    frame = pd.read_csv(meta["rejects_file"], keep_default_na=False)
    frame = frame[frame["rule"] == "duplicate"]
    return sorted(zip(frame["_row_number"], frame["value"], strict=True))


def test_name_duplicates_show_the_compared_key(sandbox_server: SandboxServer) -> None:
    res = resource(sandbox_server)
    result = run_export(
        res, COMPANIES, name="co", audience_type="companies", ignore_invalid_records=True
    )
    assert result.success
    meta = metadata(result, "co")
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (5, 3, 2), meta
    assert _duplicates(meta) == [(2, "acme"), (3, "acme"), (5, "beta; beta.com")]
    result = run_export(res, USERS, name="us", segment_name="us", ignore_invalid_records=True)
    assert result.success
    meta = metadata(result, "us")
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (3, 2, 1), meta
    # first_name and last_name are personal data: masked, first and last two kept
    assert _duplicates(meta) == [(2, "da**el; ng**en"), (3, "da**el; ng**en")]
