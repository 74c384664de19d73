"""Upstream date-times pandas or numpy hold beyond what a field carries are ``type`` rejects
with a true reason, never sent in another form (NOTE-upstream "Left"):

* a ``pd.Timestamp`` held in year 10000 or 0 (a ``datetime64[s]`` value) in an object column was
  read by Arrow as a 1972 date and sent (``10000-01-01 05:00`` -> ``1972-01-01T05:00:00+09:00``);
* an ``np.datetime64`` finer than nanoseconds (``ps``, ``fs``, ``as``) was floored to ns and sent
  (an ``as`` value failed the run with an OverflowError); exact at ns, it is still sent;
* a naive ``datetime64[s]`` ``10000-01-01 00:30`` in Asia/Tokyo (instant in 9999) was refused
  "whose instant is in year 10000 UTC": the reason now names the year it is held in.

Real Dagster runs of an upstream asset and its CAPI export over HTTP to the sandbox.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from line_exports.sandbox import SandboxServer
from line_exports_tests.test_upstream_values import _run

TOKYO = "Asia/Tokyo"
HELD_10000 = pd.Timestamp(np.datetime64("10000-01-01T05:00:00", "s"))
HELD_0 = pd.Timestamp(np.datetime64("0000-06-01T00:00:00", "s"))


def test_a_pandas_timestamp_held_outside_years_1_9999_is_a_type_reject(
    sandbox_server: SandboxServer,
) -> None:
    for tag, column in (
        ("mixed", [HELD_10000, "x", 5, dt.datetime(2026, 1, 1), HELD_0]),
        ("datetimes", [HELD_10000, dt.datetime(2026, 1, 1), HELD_0.tz_localize("UTC")]),
        # an IANA zone (ZoneInfo): pandas cannot write it in year 0 (VERIFY-13p P2: a crash)
        ("zoned", [HELD_10000, dt.datetime(2026, 1, 1), HELD_0.tz_localize(TOKYO)]),
    ):
        sent, rejects, meta = _run(
            sandbox_server, f"held_{tag}", pd.Series(column, dtype=object), TOKYO
        )
        refused = {n: (r["message"], r["value"]) for n, r in rejects.items()}
        assert set(refused) == {1, len(column)}, refused
        assert "TIMESTAMP in year 10000" in refused[1][0], refused
        assert refused[1][1] == "10000-01-01T05:00:00"
        assert "TIMESTAMP in year 1 BC" in refused[len(column)][0], refused
        assert not any(v.startswith("1972") for v in sent.values() if v), sent
        assert "k3" in sent and sent["k3"] == "2026-01-01T00:00:00+09:00" or tag != "mixed"
        assert meta["rows_rejected"] == 2 and meta["rows_accepted"] == len(column) - 2


def test_a_numpy_time_finer_than_nanoseconds_is_a_type_reject_unless_exact_at_ns(
    sandbox_server: SandboxServer,
) -> None:
    column = pd.Series(
        [
            np.datetime64("1970-01-02T00:00:00.000000000001", "ps"),
            np.datetime64("1970-01-02T00:00:00.000000001000", "ps"),  # exactly 1 ns
            np.datetime64("1970-01-01T00:00:00.000000000000000001", "as"),
            "x",
        ],
        dtype=object,
    )
    sent, rejects, meta = _run(sandbox_server, "finer", column, TOKYO)
    assert sorted(rejects) == [1, 3], rejects
    for n, text in (
        (1, "1970-01-02T00:00:00.000000000001"),
        (3, "1970-01-01T00:00:00.000000000000000001"),
    ):
        assert "finer than a nanosecond" in rejects[n]["message"] and rejects[n]["value"] == text
    assert sent == {"k1": "1970-01-02T00:00:00.000000001+09:00", "k3": "x"}


def test_a_naive_time_held_in_year_10000_names_that_year_not_its_instant(
    sandbox_server: SandboxServer,
) -> None:
    column = pd.Series(
        np.array(
            ["10000-01-01T00:30:00", "9999-12-31T23:30:00", "2026-01-01T00:00:00"], "datetime64[s]"
        )
    )
    for zone, reasons in (
        (TOKYO, {1: "TIMESTAMP in year 10000:"}),
        (
            "America/New_York",
            {1: "TIMESTAMP in year 10000:", 2: "whose instant is in year 10000 UTC"},
        ),
    ):
        sent, rejects, meta = _run(sandbox_server, f"y10000_{len(reasons)}", column, zone)
        assert {n: r["value"] for n, r in rejects.items()} == {
            1: "10000-01-01T00:30:00",
            **({2: "9999-12-31T23:30:00"} if 2 in reasons else {}),
        }
        for n, words in reasons.items():
            assert words in rejects[n]["message"], rejects[n]
            assert "instant" not in rejects[n]["message"] or n == 2
        assert len(sent) == 3 - len(reasons)
