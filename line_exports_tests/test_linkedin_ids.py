"""LinkedIn users: each userId (email, GOOGLE_AID, APPLE_IDFA) identifies a member on its own.

- A row repeating an earlier row's ID is sent with its other, new IDs (the repeated one went
  once, with the earlier row) and noted; a row with nothing new is a ``duplicate`` reject
  naming the rows (VERIFY-13g N7; issue 13: "never sent twice in one request or one import").
- mirror never REMOVEs an ID a current row carries, so a member is not taken out by the
  REMOVE of a departed row sharing its GOOGLE_AID (VERIFY-13g N8).

Real exports: DuckDB -> Dagster -> HTTP -> the LinkedIn sandbox, which removes each userId of
a REMOVE element from every member holding it (see ``sandbox.linkedin._remove_ids``).
"""

from __future__ import annotations

import csv
import hashlib
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from line_exports import SqlSource, build_export
from line_exports.dedup import SENT_EARLIER_RULE, deduplicate
from line_exports.destinations import get_destination
from line_exports.destinations.linkedin import USER_COLUMNS
from line_exports.export import Spool
from line_exports.linkedin_ids import ID_PATTERNS
from line_exports.rules import ROW_NUMBER, validate
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.linkedin import store_of
from line_exports_tests.test_linkedin import ACCOUNT, resource

AID_A = "cdda802e-fb9c-47ad-9794-0794d394c912"
AID_B = "0f0e0d0c-0b0a-4909-8807-060504030201"
IDFA = "ea7583cd-a667-48bc-b806-42ecb2b48606"


def sha(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


def run(
    server: SandboxServer,
    db: Path,
    rows: list[tuple[Any, ...]],
    mode: str,
    segment: str,
    **settings: Any,
) -> dg.ExecuteInProcessResult:
    """One export of ``rows`` (email, google_aid, apple_idfa) in table order."""
    with duckdb.connect(str(db)) as con:
        con.execute(
            "create or replace table t (i int, email text, google_aid text, apple_idfa text)"
        )
        if rows:
            con.executemany(
                "insert into t values (?, ?, ?, ?)",
                [(i, *r) for i, r in enumerate(rows, start=1)],
            )
    asset = build_export(
        "li_ids",
        destination="linkedin",
        query="select email, google_aid, apple_idfa from t order by i",
        settings={
            "ad_account_id": ACCOUNT,
            "segment_name": segment,
            "sync_mode": mode,
            "ignore_invalid_records": True,
            "initial_retry_wait": 1,
            **settings,
        },
        retry_policy=None,
    )
    return dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "linkedin": resource(server),
        },
        raise_on_error=False,
    )


def meta_of(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def segment_ids(server: SandboxServer, name: str) -> set[tuple[str, str]]:
    """Every userId the segment holds (whichever member holds it)."""
    store = store_of(server.sandbox)
    [segment] = [s for s in store.segments.values() if s.name == name]
    return {i for m in segment.members if m[0] == "ids" for i in m[1:]}


def sent_ids(server: SandboxServer, first_batch: int = 0) -> list[tuple[str, str, str]]:
    """(action, idType, idValue) of every userId in the BATCH_CREATEs since ``first_batch``."""
    return [
        (e["action"], u["idType"], u["idValue"])
        for batch in store_of(server.sandbox).batches[first_batch:]
        for e in batch
        for u in e["userIds"]
    ]


def read_csv(path: str) -> dict[int, list[dict[str, str]]]:
    out: dict[int, list[dict[str, str]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            out.setdefault(int(r["_row_number"]), []).append(r)
    return out


ROWS = [  # (email, google_aid, apple_idfa)
    ("ann@example.com", None, None),  # 1
    ("bob@example.com", AID_A, None),  # 2
    ("carl@example.com", f" {AID_A.upper()} ", None),  # 3: bob's AID (case, spaces): carl sent
    (" BOB@Example.com ", AID_B, None),  # 4: bob's email again, a new AID: AID_B sent
    ("ANN@example.com", AID_A, None),  # 5: nothing new: duplicate of rows 1 and 2
    ("dan@example.com", IDFA, IDFA.upper()),  # 6: one UUID as GOOGLE_AID and APPLE_IDFA
    (None, None, IDFA),  # 7: that APPLE_IDFA again (lower case): duplicate of row 6
]


@pytest.mark.parametrize("mode", ["append", "diff", "mirror"])
def test_a_row_repeating_one_id_is_sent_with_its_new_ids(
    sandbox_server: SandboxServer, tmp_path: Path, mode: str
) -> None:
    segment = f"ids {mode}"
    meta = meta_of(run(sandbox_server, tmp_path / "u.duckdb", ROWS, mode, segment, batch_size=2))
    # 7 read = 2 rejected (rows 5, 7) + 5 accepted; rows 3 and 4 are sent, not rejected.
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (7, 2, 5)
    assert meta["rows_refused_by_api"] + meta["rows_unsent"] + meta["rows_delivery_unknown"] == 0
    held = segment_ids(sandbox_server, segment)
    # Carl's email reached the segment (it was dropped with the row before), and Bob's AID_B.
    assert ("SHA256_EMAIL", sha("carl@example.com")) in held
    assert ("GOOGLE_AID", AID_B) in held
    assert {("GOOGLE_AID", AID_A), ("GOOGLE_AID", IDFA), ("APPLE_IDFA", IDFA.upper())} <= held
    # Every userId once in the whole export, whatever request it went in.
    sent = Counter(sent_ids(sandbox_server))
    assert sent and max(sent.values()) == 1, sent
    assert len(sent) == 8  # 4 emails, AID_A, AID_B, dan's UUID as GOOGLE_AID and APPLE_IDFA
    # Where the user sees what was left out: the rows sent without a repeated ID.
    assert meta["values_sent_with_earlier_rows"] == {"google_aid": 1, "email": 1}
    notes = read_csv(meta["values_sent_earlier_file"])
    assert sorted(notes) == [3, 4]
    assert "google_aid repeats row 2" in notes[3][0]["message"]
    assert "sent without it, with its email" in notes[3][0]["message"]
    assert "email repeats row 2" in notes[4][0]["message"]
    assert "with its google_aid" in notes[4][0]["message"]
    rejects = read_csv(meta["rejects_file"])
    assert sorted(rejects) == [5, 7]
    said = " ".join(r["message"] for r in rejects[5])
    assert "repeats row 1" in said and "repeats row 2" in said and "not sent" in said
    assert "apple_idfa repeats row 6" in rejects[7][0]["message"]
    assert "carl@example.com" not in str(notes) + str(rejects)  # emails masked
    if mode != "append":  # the same table again: it converges, nothing is sent
        before = len(store_of(sandbox_server.sandbox).batches)
        again = meta_of(run(sandbox_server, tmp_path / "u.duckdb", ROWS, mode, segment))
        assert (again["rows_unchanged"], again["rows_sent"]) == (5, 0), again
        assert len(store_of(sandbox_server.sandbox).batches) == before


def test_which_members_reach_the_segment_does_not_depend_on_row_order(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    run_a = run(sandbox_server, tmp_path / "a.duckdb", ROWS, "append", "order a")
    run_b = run(sandbox_server, tmp_path / "b.duckdb", ROWS[::-1], "append", "order b")
    meta_of(run_a), meta_of(run_b)
    emails = {
        name: {i for i in segment_ids(sandbox_server, name) if i[0] == "SHA256_EMAIL"}
        for name in ("order a", "order b")
    }
    assert emails["order a"] == emails["order b"]
    assert len(emails["order a"]) == 4  # ann, bob, carl, dan


def test_mirror_never_removes_an_id_a_current_row_carries(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """VERIFY-13g N8, over five ticks: run 1 ann, bob+A; run 2 adds carl+A; run 3 only carl+A
    (ann and bob depart); run 4 carl with AID_B (A departs); run 5 dan alone (carl departs)."""
    db, segment = tmp_path / "m.duckdb", "mirror ids"
    ann, bob, carl, dan = (
        ("SHA256_EMAIL", sha(f"{n}@example.com")) for n in ("ann", "bob", "carl", "dan")
    )
    aid_a, aid_b = ("GOOGLE_AID", AID_A), ("GOOGLE_AID", AID_B)
    ticks: list[tuple[list[tuple[Any, ...]], set[tuple[str, str]]]] = [
        ([("ann@example.com", None, None), ("bob@example.com", AID_A, None)], {ann, bob, aid_a}),
        (
            [
                ("ann@example.com", None, None),
                ("bob@example.com", AID_A, None),
                ("carl@example.com", AID_A.upper(), None),
            ],
            {ann, bob, aid_a, carl},
        ),
        ([("carl@example.com", AID_A, None)], {carl, aid_a}),
        ([("carl@example.com", AID_B, None)], {carl, aid_b}),
        ([("dan@example.com", None, None)], {dan}),
    ]
    for tick, (rows, expected) in enumerate(ticks, start=1):
        before = len(store_of(sandbox_server.sandbox).batches)
        meta = meta_of(run(sandbox_server, db, rows, "mirror", segment, max_remove_ratio=1.0))
        assert meta["rows_read"] == meta["rows_rejected"] + meta["rows_accepted"], meta
        assert segment_ids(sandbox_server, segment) == expected, f"tick {tick}"
        sent = sent_ids(sandbox_server, before)
        removed = {(t, v) for action, t, v in sent if action == "REMOVE"}
        current = {i for row in rows for i in _ids(row)}
        assert not removed & current, f"tick {tick}: REMOVE of a current ID {removed & current}"
        assert max(Counter((t, v) for _, t, v in sent).values(), default=1) == 1, sent
        if tick == 3:  # carl's key of tick 2 (his email alone: A went with bob) left, but
            # his email is current: forgotten, not removed; bob is removed by his email alone.
            assert meta["members_still_current"] == 1, meta
            assert removed == {bob, ann}, removed


def _ids(row: tuple[Any, ...]) -> set[tuple[str, str]]:
    email, aid, idfa = row
    out = set()
    if email:
        out.add(("SHA256_EMAIL", sha(email.strip().lower())))
    if aid:
        out.add(("GOOGLE_AID", aid.strip().lower()))
    if idfa:
        out.add(("APPLE_IDFA", idfa.strip().upper()))
    return out


def test_sandbox_refuses_the_id_forms_the_rules_refuse(sandbox_server: SandboxServer) -> None:
    """One definition: the rules' GOOGLE_AID / APPLE_IDFA patterns are the sandbox's; over
    HTTP the sandbox refuses an upper-case GOOGLE_AID and a lower-case APPLE_IDFA."""
    patterns = {c.name: c.pattern for c in USER_COLUMNS}
    assert patterns["google_aid"] == ID_PATTERNS["GOOGLE_AID"].pattern
    assert patterns["apple_idfa"] == ID_PATTERNS["APPLE_IDFA"].pattern
    client = resource(sandbox_server).get_client()
    segment_id = client.create_segment(ACCOUNT, "forms", None, "USER", "SANDBOX")
    elements = [
        {"action": "ADD", "userIds": [{"idType": "GOOGLE_AID", "idValue": AID_A.upper()}]},
        {"action": "ADD", "userIds": [{"idType": "APPLE_IDFA", "idValue": IDFA}]},
        {"action": "ADD", "userIds": [{"idType": "APPLE_IDFA", "idValue": IDFA.upper()}]},
    ]
    results = client.batch_create(segment_id, "users", elements)  # waits out the new 404
    assert [r["status"] for r in results] == [400, 400, 201]


POOL = {
    "email": ["ann@example.com", " ANN@example.com", "bo@example.com", None],
    "google_aid": [AID_A, f" {AID_A.upper()}", AID_B, None],
    "apple_idfa": [IDFA.upper(), IDFA, IDFA.replace("6", "7").upper(), None],
}


@pytest.mark.parametrize("mode", ["append", "diff"])
def test_every_valid_id_is_sent_exactly_once(tmp_path: Path, mode: str) -> None:
    """For random tables drawn from spellings of a few IDs: after the export's own rules,
    every ID of a valid row is in exactly one row still sent (none lost, none twice), every
    valid row is sent or a ``duplicate`` reject, and a row noted for a left-out ID is sent."""
    dest = get_destination("linkedin")
    config = dest.settings_class(ad_account_id="1", segment_name="s", sync_mode=mode)
    values = config.model_dump()
    ruleset = dest.export_ruleset(config)
    row = st.tuples(*(st.sampled_from(POOL[c]) for c in POOL))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=st.lists(row, min_size=1, max_size=12))
    def check(rows: list[tuple[Any, ...]]) -> None:
        frame = pd.DataFrame(rows, columns=list(POOL), dtype="object")
        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        checked = validate(frame, ruleset, values)
        spool = Spool(folder / "valid.parquet")
        spool.write(checked.valid)
        valid = spool.close()
        before = pd.read_parquet(valid.path) if valid.count else pd.DataFrame()
        done = deduplicate(valid, ruleset, values)
        after = pd.read_parquet(done.rows.path) if done.rows.count else pd.DataFrame()
        for column in POOL:
            wanted = set(before[column].dropna()) if len(before) else set()
            sent = list(after[column].dropna()) if len(after) else []
            assert sorted(sent) == sorted(wanted), column  # each once, none lost
        kept = set(after[ROW_NUMBER]) if len(after) else set()
        dropped = set(done.rejects[ROW_NUMBER])
        assert kept.isdisjoint(dropped)
        assert kept | dropped == (set(before[ROW_NUMBER]) if len(before) else set())
        assert set(done.rejects["rule"]) <= {"duplicate"}
        assert set(done.notes["rule"]) <= {SENT_EARLIER_RULE}
        assert set(done.notes[ROW_NUMBER]) <= kept

    check()
