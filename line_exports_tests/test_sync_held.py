"""``line-exports held EXPORT``: the export's sync stores matched exactly (case, ``_``, ``%``),
the same on the embedded SQLite ledger and on PostgreSQL; a name the ledger has no sync store
of is an error that says which exports hold rows (VERIFY-18d F2, F3).

Real ledgers (an SQLite file, a real PostgreSQL server) and the real CLI entry point; the
whole hold-then-release path over HTTP is in ``test_sync_settle``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from line_exports import sync_held
from line_exports.cli import main as line_exports_main
from line_exports.ledger import Ledger
from line_exports.sync_store import SyncStore
from line_exports_tests import postgres_server

STORES = (
    "daily/coupon",
    "daily/coupon#partition=2026-06-02",
    "daily/coupon@acct",
    "daily/Coupon#p1",  # another export: asset keys are case-sensitive
    "Daily/coupon@acct",
    "DAILY/COUPON",
    "daily/coupon2#p1",
    "daily/couponé",
    "a_b",
    "a_b#p1",
    "axb#p1",
    "a%b@x",
    "aXXXb#p1",
    "a_bc#p1",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, line_exports_home: object
) -> Iterator[Ledger]:
    """A ledger holding one row ``unknown`` in each of :data:`STORES` (the CLI opens the same
    one: ``LINE_EXPORTS_LEDGER_URL`` for PostgreSQL)."""
    if request.param == "postgresql":
        url = postgres_server.new_database(request.getfixturevalue("postgres_server_url"))
        monkeypatch.setenv("LINE_EXPORTS_LEDGER_URL", url)
    ledger = Ledger()
    try:
        for name in STORES:
            row = {"key": [f"{name}-k"], "hash": ["h"], "ident": [f'{{"id":"{name}"}}']}
            SyncStore(ledger, name).put(pa.table(row), "unknown")
        yield ledger
    finally:
        ledger.close()


def statuses(ledger: Ledger) -> dict[str, str]:
    return {n: SyncStore(ledger, n).load().column("status").to_pylist()[0] for n in STORES}


def test_held_matches_the_export_name_exactly_on_both_ledgers(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    """``held daily/coupon`` lists and releases its own 3 stores only: not ``daily/Coupon#p1``
    (SQL LIKE, case-insensitive in SQLite, took it), nor ``daily/coupon2``/``daily/couponé``;
    ``a_b``'s ``_`` and ``a%b``'s ``%`` match only themselves (VERIFY-18b N3)."""
    own = ["daily/coupon", "daily/coupon#partition=2026-06-02", "daily/coupon@acct"]
    assert sorted({s for s, *_ in sync_held.held(ledger, "daily/coupon")}) == own
    assert [s for s, *_ in sync_held.held(ledger, "daily/Coupon")] == ["daily/Coupon#p1"]
    assert [s for s, *_ in sync_held.held(ledger, "DAILY/COUPON")] == ["DAILY/COUPON"]
    assert sorted({s for s, *_ in sync_held.held(ledger, "a_b")}) == ["a_b", "a_b#p1"]
    assert [s for s, *_ in sync_held.held(ledger, "a%b")] == ["a%b@x"]

    assert line_exports_main(["held", "daily/coupon"]) == 0
    assert "daily/coupon: 3 rows held, delivery unknown" in capsys.readouterr().out
    assert line_exports_main(["held", "daily/coupon", "--delivered"]) == 0
    assert "daily/coupon: 3 held rows recorded delivered" in capsys.readouterr().out
    assert line_exports_main(["held", "a_b", "--resend"]) == 0
    assert "a_b: 2 held rows released" in capsys.readouterr().out
    after = statuses(ledger)
    assert {n for n, s in after.items() if s == "accepted"} == set(own)
    assert {n for n, s in after.items() if s == "pending"} == {"a_b", "a_b#p1"}
    assert {n for n, s in after.items() if s == "unknown"} == set(STORES) - set(own) - {
        "a_b",
        "a_b#p1",
    }


def test_held_of_a_name_with_no_sync_store_is_an_error_naming_the_exports_that_hold_rows(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo (the task without its workflow, a wrong case) or an empty name: exit 2, saying
    no sync store of that name exists, the closest names and the exports holding rows; nothing
    is released (it said '0 held rows recorded delivered', exit 0)."""
    for name in ("coupon", "", "daily/copon", "nonexistent"):
        assert line_exports_main(["held", name, "--delivered"]) == 2, name
        err = capsys.readouterr().err
        assert f"no sync store of an export named {name!r}" in err, err
        held = ", ".join(sorted({s.split("@")[0].split("#")[0] for s in STORES}))
        assert f"exports with held rows: {held}\n" in err, err
    assert line_exports_main(["held", "daily/copon"]) == 2
    assert "closest names: daily/coupon" in capsys.readouterr().err
    assert set(statuses(ledger).values()) == {"unknown"}


def test_delivered_after_resend_says_the_rows_were_already_released(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--resend`` then ``--delivered``: the rows wait for the next run's send; the second
    decision changes nothing and says so (exit 1); ``--resend`` again says the same (exit 0)."""
    assert line_exports_main(["held", "daily/coupon", "--resend"]) == 0
    assert "3 held rows released" in capsys.readouterr().out
    assert line_exports_main(["held", "daily/coupon", "--delivered"]) == 1
    out = capsys.readouterr().out
    assert "no rows held; 3 rows were already released for resend at " in out, out
    assert "(line-exports held daily/coupon --resend)" in out and "cannot be undone" in out
    assert line_exports_main(["held", "daily/coupon", "--resend"]) == 0
    assert "3 rows were already released for resend" in capsys.readouterr().out
    assert {n: s for n, s in statuses(ledger).items() if n.startswith("daily/coupon")} == {
        "daily/coupon": "pending",
        "daily/coupon#partition=2026-06-02": "pending",
        "daily/coupon@acct": "pending",
        "daily/coupon2#p1": "unknown",
        "daily/couponé": "unknown",
    }
    # Once a run sent them (accepted), nothing is held or waiting: a plain 'no rows held'.
    SyncStore(ledger, "daily/coupon").set_status(["daily/coupon-k"], "accepted")
    assert line_exports_main(["held", "daily/coupon", "--delivered"]) == 1
    assert "2 rows were already released" in capsys.readouterr().out
    for name in ("daily/coupon#partition=2026-06-02", "daily/coupon@acct"):
        SyncStore(ledger, name).set_status([f"{name}-k"], "accepted")
    assert line_exports_main(["held", "daily/coupon", "--delivered"]) == 0
    assert capsys.readouterr().out == "daily/coupon: no rows held: nothing to release\n"
