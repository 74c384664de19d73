"""An upstream column whose dtype wraps its values' type is checked and sent as those values
(VERIFY-13p P7's kind).

A ``Sparse[datetime64]`` column crashed the run (pandas' ``.dt`` refuses a sparse column), as
did an Arrow ``run_end_encoded`` one (Arrow's kernels have none for it); a ``Sparse[int64]``
whose fill is missing went through a float (9007199254740993 became 9007199254740992). Now
each is its dense holder (``values.unwrapped``). A real Dagster run over HTTP to the CAPI
sandbox; the floats of such columns are in ``test_texts_float_holders``.
"""

from __future__ import annotations

import csv
import datetime as dt
import time
from zoneinfo import ZoneInfo

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from line_exports import LineConversionResource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import events_of
from line_exports_tests.test_outcomes import COUNTER, adds_up

ZONE = "Asia/Tokyo"


def test_sparse_and_run_end_encoded_columns_are_sent_as_their_values(
    sandbox_server: SandboxServer,
) -> None:
    now = int(time.time()) // 60 * 60
    walls = [dt.datetime.fromtimestamp(now - h * 3600, ZoneInfo(ZONE)) for h in (1, 2)]
    naive = [w.replace(tzinfo=None) for w in walls]
    stamps = np.array([naive[0], "NaT", naive[1], naive[1]], dtype="datetime64[ns]")
    frame = pd.DataFrame(
        {
            "deduplication_key": pd.Series(
                pd.arrays.ArrowExtensionArray(pc.run_end_encode(pa.array(["k0", "k1", "k2", "k3"])))
            ),
            "event_type": "conversion",
            "source_type": "web",
            "event_timestamp": pd.Series(pd.arrays.SparseArray(stamps)),
            "external_id": "x",
            "title": pd.Series(
                pd.arrays.SparseArray(["a ", None, "b", "c"], dtype=pd.SparseDtype(object, None))
            ),
            "event_name": pd.Series(
                pd.arrays.SparseArray.from_indices(
                    np.array([2**53 + 1, 7]), np.array([0, 3]), 4, fill_value=np.nan
                )
            ),
        }
    )
    tag = f"wrapped{next(COUNTER)}"

    @dg.asset(name=f"{tag}_rows")
    def upstream() -> pd.DataFrame:
        return frame

    export = build_export(
        tag,
        destination="line_conversion",
        upstream=f"{tag}_rows",
        timezone=ZONE,
        chunk_size=2,
        retry_policy=None,
    )
    result = dg.materialize(
        [upstream, export],
        resources={
            "line_conversion": LineConversionResource(line_tag_id=tag, base_url=sandbox_server.url)
        },
        raise_on_error=False,
    )
    assert result.success
    meta = {
        k: getattr(v, "value", v)
        for k, v in result.asset_materializations_for_node(tag)[0].metadata.items()
    }
    assert adds_up(meta) and meta["rows_accepted"] == 3, meta
    events = events_of(sandbox_server.sandbox, tag)
    got = {
        k: (e["event"]["event_timestamp"], e["web"].get("title"), e["event"].get("event_name"))
        for k, e in events.items()
    }
    assert got == {
        "k0": (now - 3600, "a ", "9007199254740993"),
        "k2": (now - 7200, "b", None),
        "k3": (now - 7200, "c", "7"),
    }, got
    with open(meta["rejects_file"], newline="", encoding="utf-8") as f:
        rejects = [(r["_row_number"], r["rule"]) for r in csv.DictReader(f)]
    assert rejects == [("2", "required")], rejects
