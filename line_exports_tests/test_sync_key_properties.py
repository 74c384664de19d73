"""Sync keys never collide for distinct rows, and every valid row has one (issue 18, M1).

For every destination that supports ``sync_mode: diff`` / ``mirror`` and every column subset its
rules accept: rows drawn from small pools of values (near-duplicates, other spellings of one
value, empty cells) are validated and de-duplicated by the export's own rules
(:meth:`~line_exports.destination.Destination.export_ruleset`), then planned by
:func:`line_exports.sync.plan` against an empty store in a real ledger. Each row that survives
must get a key no other surviving row has (two members never merge into one), none may be left
without a key, a row's key must not depend on the other rows or on the query's column order
(stable across runs), and a row dropped as a duplicate repeats the key of the row it repeats.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from line_exports.dedup import drop_duplicates
from line_exports.destinations import get_destination
from line_exports.export import Spool
from line_exports.ledger import Ledger
from line_exports.rules import ROW_NUMBER, validate
from line_exports.sync import plan
from line_exports.sync_store import SyncStore
from line_exports_tests.hypothesis_budget import examples

PROPERTY = settings(
    max_examples=examples(quick=12, thorough=30),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
UID = ["U" + "0" * 32, "U" + "ab" * 16, " U" + "0" * 32 + " "]
POOLS: dict[str, list[Any]] = {
    "email": ["ann@example.com", " ANN@example.com", "bo@example.com"],
    "google_aid": ["cdda802e-fb9c-47ad-9794-0794d394c912", "CDDA802E-FB9C-47AD-9794-0794D394C912"],
    "apple_idfa": ["EA7583CD-A667-48BC-B806-42ECB2B48606", "ea7583cd-a667-48bc-b806-42ecb2b48607"],
    "first_name": ["Ann", "ann", "Bo"],
    "last_name": ["Lee", "Li"],
    "company": ["Acme", "acme"],
    "title": ["Engineer", "Lead"],
    "country": ["US", "jp"],
    "company_name": ["Acme", "Acme Inc"],
    "company_website_domain": ["acme.com", "ACME.com", "b.example.com"],
    "company_email_domain": ["acme.com", "mail.acme.com"],
    "line_uid": UID,
    "id": UID,
    "mobile": ["+886912345678", "0912345678", "+886912345679"],
    "customer_id": ["c1", "c2", "C1"],
    "tags": ["t1", "t1,t2"],
    "event_name": ["purchase", "view"],
    "deduplication_key": ["k1", "k2", "K1"],
    "event_type": ["conversion", "page_view"],
    "source_type": ["web"],
    "event_timestamp": [1767225600, 1767225601],
    "name": ["Ann", "Bo"],
}
PUSH = json.dumps({"type": "text", "text": "Hi {{name}}"})
NO_ID = ("first_name", "last_name", "company", "title", "country")
"""A LinkedIn users query with no ID column: matched by name (the M1 regression)."""
SYNCED: dict[str, tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "linkedin_users": ("linkedin", {"ad_account_id": "1", "segment_name": "s"}),
    "linkedin_users_no_id": ("linkedin", {"ad_account_id": "1", "segment_name": "s"}, NO_ID),
    "linkedin_companies": (
        "linkedin",
        {"ad_account_id": "1", "segment_name": "s", "audience_type": "companies"},
    ),
    **{
        f"maac_members_{key}": (
            "maac",
            {"data_object": "members", "import_key": key, "tags": "vip"},
        )
        for key in ("line_uid", "email", "mobile", "customer_id")
    },
    "line_audience": ("line_messaging", {"target": "audience", "audience_name": "a"}),
    "line_push": ("line_messaging", {"target": "push_message", "template_message": PUSH}),
    "line_conversion": ("line_conversion", {}),
}


@st.composite
def frames(draw: st.DrawFn, names: list[str], required: set[str]) -> pd.DataFrame:
    """2-12 rows over the required columns and a random subset of the others, each cell from
    the column's pool or empty (an empty required cell is a reject, which is fine)."""
    n = draw(st.integers(min_value=2, max_value=12))
    chosen = [c for c in names if c in POOLS and (c in required or draw(st.booleans()))]
    data = {
        c: pd.Series(
            draw(st.lists(st.sampled_from([*POOLS[c], None]), min_size=n, max_size=n)),
            dtype=object,
        )
        for c in chosen
    }
    return pd.DataFrame(data, index=pd.RangeIndex(n))


def keys_of(frame: pd.DataFrame, dest: Any, config: Any, folder: Path) -> dict[int, str]:
    """Row number -> sync key, as a ``diff`` run plans the valid rows of ``frame`` against an
    empty store (rows with no key would be missing)."""
    values = config.model_dump()
    checked = validate(frame, dest.export_ruleset(config), values)
    spool = Spool(folder / "valid.parquet")
    spool.write(checked.valid)
    return planned_keys(spool.close(), dest, config, folder)


def planned_keys(rows: Any, dest: Any, config: Any, folder: Path) -> dict[int, str]:
    """Row number -> sync key of spooled rows, as a ``diff`` run plans them (empty store)."""
    ledger = Ledger()
    try:
        spec = dest.sync_spec(config)
        fixed = plan(SyncStore(ledger, "property"), spec, "diff", 0.2, rows, folder)
    finally:
        ledger.close()
    unkeyed = getattr(fixed, "unkeyed", None)  # (a plan that cannot tell has no such rows)
    assert unkeyed is None, unkeyed.to_dict("records")
    found = dict(
        zip(
            fixed.changed.column("rn").to_pylist(),
            fixed.changed.column("key").to_pylist(),
            strict=True,
        )
    )
    assert len(found) == rows.count
    return found


@pytest.mark.parametrize("name", list(SYNCED))
def test_sync_keys_never_collide_and_every_valid_row_has_one(name: str) -> None:
    type_name, values, *only = SYNCED[name]
    dest = get_destination(type_name)
    config = dest.settings_class(**values, sync_mode="diff")
    ruleset = dest.export_ruleset(config)
    names = [c.name for c in ruleset.columns if not only or c.name in only[0]]
    required = {c.name for c in ruleset.columns if c.is_required(config.model_dump())}

    @PROPERTY
    @given(frame=frames(names, required), order=st.randoms(use_true_random=False))
    def check(frame: pd.DataFrame, order: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            keys = keys_of(frame, dest, config, folder)
            # The rows the export sends: duplicates (the export's own rules) dropped.
            checked = validate(frame, ruleset, config.model_dump())
            spool = Spool(folder / "dedup.parquet")
            spool.write(checked.valid)
            kept, duplicates = drop_duplicates(spool.close(), ruleset, config.model_dump())
            sent = pd.read_parquet(kept.path)[ROW_NUMBER].tolist() if kept.count else []
            # Keyed as sent: a per-value rule (LinkedIn's userIds) may empty a repeated ID.
            as_sent = planned_keys(kept, dest, config, _sub(folder, "k")) if kept.count else {}
            shared = [as_sent[r] for r in sent]
            assert len(set(shared)) == len(shared), "two rows sent merge into one member"
            for row, message in zip(duplicates[ROW_NUMBER], duplicates["message"], strict=True):
                first = int(re.search(r"repeats row (\d+)", message).group(1))  # type: ignore[union-attr]
                if keys[int(row)] != as_sent.get(first, keys[first]):
                    # Another rule than the key's dropped it: the key still differs from all.
                    assert keys[int(row)] not in shared
            # Stable: the same row keyed alone, or with the columns reordered, keeps its key.
            columns = list(frame.columns)
            order.shuffle(columns)
            reordered = keys_of(frame[columns], dest, config, _sub(folder, "r"))
            assert reordered == keys
            if len(frame):
                alone = keys_of(frame.iloc[-1:], dest, config, _sub(folder, "a"))
                last = len(frame)
                assert alone.get(1) == keys.get(last)

    check()


def _sub(folder: Path, name: str) -> Path:
    path = folder / name
    path.mkdir(exist_ok=True)
    return path
