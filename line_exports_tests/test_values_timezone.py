"""An export's ``timezone`` is checked when the export is defined (issue 13, Values; verifier
13c F11): ``build_export(timezone="JST")`` was accepted, then every run crashed in the step with a
raw ``ZoneInfoNotFoundError``. The Python API and the ``.dig`` loader now share one rule and one
message (:func:`line_exports.values.check_timezone`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from line_exports import build_export
from line_exports.workflows.errors import WorkflowErrors
from line_exports.workflows.loader import load_workflows

QUERY = "select 'k' as deduplication_key"


@pytest.mark.parametrize("zone", ["JST", "PST", "UTC+9", "Asia/Tokio", ""])
def test_an_unknown_timezone_is_refused_where_the_export_is_defined(
    tmp_path: Path, zone: str
) -> None:
    expected = f"unknown timezone {zone!r} (use an IANA name such as Asia/Tokyo)"
    with pytest.raises(ValueError) as refused:
        build_export("tz", destination="line_conversion", query=QUERY, timezone=zone)
    assert str(refused.value) == f"export 'tz': setting timezone: {expected}"
    if not zone:
        return  # a .dig without a timezone is UTC
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "tz.dig").write_text(f"timezone: {zone}\n+t:\n  echo>: hi\n")
    with pytest.raises(WorkflowErrors) as loaded:
        load_workflows(folder, strict=True)
    assert expected in str(loaded.value)


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "UTC", "EST", "America/New_York"])
def test_an_iana_timezone_defines_the_export(zone: str) -> None:
    asset = build_export("tz", destination="line_conversion", query=QUERY, timezone=zone)
    assert asset.key.path[-1] == "tz"
