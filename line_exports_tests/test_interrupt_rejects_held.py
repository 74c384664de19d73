"""A signal that arrives while a chunk's rejects are counted and written stops the run after
both, never between them: a run stopped while validating had a rejects file 5,000 rows short of
the count its headline gave (VERIFY-13k F2). A real signal to this process, sent while the rejects
file is written, under the handler a run has before delivery (``interrupts.stop_at_once``)."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from line_exports import interrupts
from line_exports.export import ValidationSummary
from line_exports.rules import ROW_NUMBER


def _rejects(start: int, rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            ROW_NUMBER: range(start, start + rows),
            "column": "email",
            "rule": "pattern",
            "message": "email is not an email address",
            "value": "x",
        }
    )


def test_a_signal_while_rejects_are_written_stops_after_they_are_counted_and_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = ValidationSummary(rejects_path=tmp_path / "rejects.csv")
    summary.add_rejects(_rejects(1, 5000))
    to_csv = pd.DataFrame.to_csv

    def signalled_midway(frame: pd.DataFrame, *args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)  # as a user's `kill` lands mid-write
        return to_csv(frame, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", signalled_midway)
    with pytest.raises(interrupts.SignalReceived), interrupts.stop_at_once():
        summary.add_rejects(_rejects(5001, 5000))
    monkeypatch.undo()
    with open(summary.rejects_path, newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert summary.rejected_rows == len(written) == 10_000
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored
