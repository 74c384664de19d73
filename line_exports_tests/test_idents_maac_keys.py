"""MAAC import keys matched as the exporter's identity rules say MAAC matches them (issue 13,
VERIFY-13n N1 and N3), over loopback HTTP to the sandbox and in real runs.

* The sandbox fails an import holding one email in two spellings (``Ann@Example.com``,
  `` ann@example.com``) or one customer_id with and without surrounding white space, as MAAC's
  ``duplicate_error``, and a customer_id of only white space as ``blank_error``: one definition
  with the exporter (:func:`line_exports.identities.maac_key`, the column path's kernels).
* A run by ``import_key: customer_id`` sends `` 123``, ``123 ``, ``123`` once, trimmed, the other
  two ``duplicate`` rejects, and a key of only white space is a ``required`` reject.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest
import requests

from line_exports import MaacResource, SqlSource, build_export
from line_exports.destinations import get_destination
from line_exports.destinations.maac import SANDBOX_TOKEN
from line_exports.rules import validate
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.maac import store_of


def uid(i: int) -> str:
    return f"U{i:032x}"


def _import(server: SandboxServer, key: str, values: list[str], start: int = 1) -> dict[str, Any]:
    """One import over HTTP, member i (LINE UID number start + i) keyed by values[i]; the done
    task's result."""
    auth = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
    data = [{"line_uid": uid(start + i), key: value} for i, value in enumerate(values)]
    answer = requests.post(
        f"{server.url}/openapi/v1/member/import/",
        json={"import_key": key, "data": data, "tags": ["t"]},
        headers=auth,
        timeout=10,
    )
    answer.raise_for_status()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        task = requests.get(
            f"{server.url}/openapi/v1/member/import/{answer.json()['id']}/",
            headers=auth,
            timeout=10,
        ).json()
        if task["status"] == "done":
            return task["result"]
        time.sleep(0.02)
    raise AssertionError("import task never done")


@pytest.mark.parametrize(
    ("key", "values", "error"),
    [
        ("email", ["Ann@Example.com", "ann@example.com"], "duplicate_error"),
        ("email", [" bob@example.com", "bob@example.com"], "duplicate_error"),
        ("customer_id", ["123", " 123"], "duplicate_error"),
        ("customer_id", ["123 ", "\u3000123"], "duplicate_error"),
        ("customer_id", ["   "], "blank_error"),
        ("customer_id", ["\t"], "blank_error"),
    ],
)
def test_sandbox_fails_an_import_whose_keys_match_as_one(
    sandbox_server: SandboxServer, key: str, values: list[str], error: str
) -> None:
    result = _import(sandbox_server, key, values)
    assert result["success"] is False and result[error] == 1, result
    assert store_of(sandbox_server.sandbox).members == {}  # a failed import creates no member


def test_sandbox_takes_distinct_keys() -> None:
    """The other side: two addresses, two ids (a check that can fail the other way)."""
    with SandboxServer() as server:
        assert _import(server, "email", ["ann@example.com", "bob@example.com"])["created_num"] == 2
        assert _import(server, "customer_id", ["123", "1234"], 3)["created_num"] == 2


def test_maac_key_is_the_column_paths_rule() -> None:
    """The sandbox's key (identities.maac_key) is what the exporter's rules send."""
    from line_exports.identities import maac_key  # here: the other tests run without it

    spellings = {
        "email": ["  Ann@Example.COM ", "\u3000BOB@example.com\t", "c.d@EXAMPLE.org", "e@x.jp"],
        "customer_id": ["\u3000c1\t", " 123", "123 ", "a b", "\u212aim"],
    }
    dest = get_destination("maac")
    for key, values in spellings.items():
        config = dest.settings_class(data_object="members", import_key=key, tags="t")
        frame = pd.DataFrame({key: values, "line_uid": [uid(i) for i in range(len(values))]})
        checked = validate(frame, dest.ruleset(config), config.model_dump(), timezone="UTC")
        sent = dict(zip(checked.valid["_row_number"] - 1, checked.valid[key], strict=True))
        for i, value in sent.items():
            assert maac_key(key, values[i]) == value, (key, values[i], value)
        assert len(sent) >= 4


def test_customer_id_keys_trimmed_blank_required_and_sent_once(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    db = tmp_path / "m.duckdb"
    keys = ["123", " 123", "123 ", "   ", "\t", "c2"]
    with duckdb.connect(str(db)) as con:
        con.execute("create table m (line_uid varchar, customer_id varchar)")
        con.executemany(
            "insert into m values (?, ?)", [(uid(i + 1), k) for i, k in enumerate(keys)]
        )
    export = build_export(
        "idents_cid",
        destination="maac",
        query="select * from m order by line_uid",
        settings={"data_object": "members", "import_key": "customer_id", "tags": "t"},
        retry_policy=None,
    )
    result = dg.materialize(
        [export],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "maac": MaacResource(base_url=sandbox_server.url, poll_seconds=0.05),
        },
        raise_on_error=False,
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("idents_cid")
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (6, 4, 2), meta
    rejects = pd.read_csv(meta["rejects_file"], keep_default_na=False)
    assert sorted(zip(rejects["_row_number"], rejects["rule"], strict=True)) == [
        (2, "duplicate"),
        (3, "duplicate"),
        (4, "required"),
        (5, "required"),
    ]
    sent = [m["customer_id"] for m in store_of(sandbox_server.sandbox).members.values()]
    assert sorted(sent) == ["123", "c2"]
