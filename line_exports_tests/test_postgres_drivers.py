"""PostgreSQL sources read through psycopg (3) only (``dbapi_values.postgres_url``).

psycopg2 clamps PostgreSQL's ``'infinity'`` dates to 9999-12-31 (and ``'-infinity'`` to
0001-01-01), so they would be sent as real dates; only psycopg's loaders make them the type
rejects they are. A bare ``postgresql://`` URL, which SQLAlchemy 2.0 gives to psycopg2 (2.1
gives it to psycopg), uses psycopg whichever is installed (as the ledger's URL does); ``postgresql+psycopg2://`` is refused, naming the reason and never
the URL, when the source is defined, or when a run makes it from the environment (a real
Dagster run: its resources fail to start, nothing is retried). On a real PostgreSQL server.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy.engine import make_url

from line_exports import LineConversionResource, SqlSource, build_export
from line_exports.dbapi_values import UnsupportedDriver
from line_exports.rules import ROW_NUMBER
from line_exports.sandbox import SandboxServer
from line_exports_tests.test_values import _type_rejects
from line_exports_tests.test_values_postgres import _pg_rows

PASSWORD = "pw-Never-Shown-99"


def test_a_bare_postgresql_url_reads_infinite_dates_as_type_rejects(postgres_url: str) -> None:
    bare = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    assert bare.startswith("postgresql://")
    sql = "select * from (values (0, 'infinity'::date), (1, '2026-01-02'::date)) v(n, v)"
    rejects = _type_rejects(_pg_rows(bare, sql), "line_conversion")
    assert rejects[ROW_NUMBER].tolist() == [1], rejects  # row numbers count from 1
    assert (
        rejects["message"].tolist()
        == _type_rejects(_pg_rows(postgres_url, sql), "line_conversion")["message"].tolist()
    )


@pytest.mark.parametrize("driver", ["psycopg2", "pg8000"])
def test_another_postgres_driver_is_refused_when_the_source_is_defined(driver: str) -> None:
    with pytest.raises(UnsupportedDriver) as refused:
        SqlSource(url=f"postgresql+{driver}://lx:{PASSWORD}@127.0.0.1:5432/db")
    said = str(refused.value)
    assert f"PostgreSQL through {driver} is not supported" in said
    assert "postgresql+psycopg://" in said and PASSWORD not in said, said


def test_a_psycopg2_url_from_the_environment_fails_the_run_before_a_query(
    postgres_url: str,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = make_url(postgres_url).set(drivername="postgresql+psycopg2", password=PASSWORD)
    monkeypatch.setenv("HEADLINES_PG_URL", url.render_as_string(False))
    asset = build_export(
        "pg2",
        destination="line_conversion",
        query="select 1 as n",
        retry_policy=dg.RetryPolicy(max_retries=2, delay=0),
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=dg.EnvVar("HEADLINES_PG_URL")),
            "line_conversion": LineConversionResource(
                line_tag_id="tag-o", base_url=sandbox_server.url
            ),
        },
        raise_on_error=False,
    )
    assert not result.success
    assert not any(e.event_type_value == "STEP_RESTARTED" for e in result.all_events)
    # The resource is made with the URL read from the environment: it refuses it at once.
    (failure,) = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    said = failure.event_specific_data.error.message  # type: ignore[union-attr]
    assert "SqlSource url: PostgreSQL through psycopg2 is not supported" in said, said
    assert PASSWORD not in said, said
