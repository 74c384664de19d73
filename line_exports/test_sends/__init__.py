"""Test sends: ``line-exports plan --test-send N --to ID[,ID...]``.

N rows are sampled from what the task's real query returns (row numbers as in the rejects
file, counted from 1 over the whole result); the real validation runs over the whole result (so
duplicates are found as a run finds them) and the sampled rows that a run would reject are
listed with their reasons. What the rest would get is then delivered to testers instead:

* LINE ``push_message``, ``narrowcast``, ``broadcast``: each sampled row's message, rendered by
  the export's own template code from the row's real values (``{{id}}`` included), is pushed to
  each tester: one push per (row, tester). A narrowcast or broadcast reaches an audience or
  every friend, never chosen users, so its rows' messages go to the testers as pushes.
* LINE ``multicast_message``: every recipient gets the same message (no placeholders), so one
  multicast request goes to the testers.
* LINE ``audience``, MAAC (members and segments), LinkedIn: these exports send members, not
  messages (the message is composed later in LINE, MAAC or Campaign Manager), so what there is
  to test is which members the rows make and whether the API takes them: a ``<name>__test``
  audience / segment holding the sampled rows' members is written (``--to`` is not used: a
  tester's LINE user ID means nothing to LinkedIn, and a LINE audience of a few testers cannot
  be narrowcast to, LINE wants 50 recipients). The previous test audience / segment of that
  name is replaced (LINE: deleted, then created; MAAC: ``update_segment``; LinkedIn: the
  members the previous test send added are removed), so it holds exactly this sample.
* Refused, saying why: LINE Conversion API events (LINE's Conversion API has no test mode; an
  event sent for a tester is a conversion in the tag's reports and in ad optimization) and
  ``rich_menu`` (a link is a user's state, not a message: each user holds one menu, so N rows
  cannot be shown to one tester, and a tester's own menu would be replaced).

Never a delivery: nothing goes through :mod:`line_exports.sync` (``sync_members`` untouched),
the ledger entries are under the export ``<export>__test`` and a scope of their own per
invocation (``test-send/<uuid>``: a following real run sends every row; within one invocation
each request is sent once, retries included), no Dagster materialization is written, and
``customAggregationUnits`` is left out of test messages (LINE's per-unit statistics would count
them). The LINE monthly quota is read first (``messaging-api.yml``: a test push counts one
message per tester) and a test send that does not fit is refused before anything is sent.
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from line_exports.destination import (
    Destination,
    ExportRun,
    ValidRows,
)
from line_exports.ledger import Ledger
from line_exports.rules import ROW_NUMBER

MAX_SAMPLE = 20
"""At most this many rows per test send: a test, not a campaign (20 rows x 10 testers = 200
pushes)."""
MAX_TESTERS = 10
TEST_SUFFIX = "__test"
TESTER_ID = re.compile(r"U[0-9a-f]{32}")  # a LINE user ID (messaging-api.yml: userId)
LOG = logging.getLogger("line_exports.test_sends")

MESSAGE_MODES = ("push", "multicast")
MEMBER_MODES = ("line_audience", "maac_segment", "linkedin_segment")


class TestSendError(ValueError):
    """A test send refused before anything is sent (the message says why and what to fix)."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class TestSendOptions:
    """What ``--test-send N --to ID,... [--seed S]`` asked for, checked."""

    __test__ = False

    count: int
    testers: tuple[str, ...]
    seed: int


def options(count: int, to: str | None, seed: int | None = None) -> TestSendOptions:
    """Check N and the tester IDs (``--to``: comma-separated LINE user IDs, ``U`` and 32
    lowercase hex digits). ``--to`` may be missing here: ``plan`` requires it when a task sends
    messages (:func:`mode_of` is in :data:`MESSAGE_MODES`)."""
    if count <= 0 or count > MAX_SAMPLE:
        raise TestSendError(
            f"--test-send takes 1 to {MAX_SAMPLE} rows (got {count}): a test send shows a few "
            "real rows' messages to testers"
        )
    testers: list[str] = []
    for raw in (to or "").split(","):
        tester = raw.strip()
        if not tester:
            continue
        if not TESTER_ID.fullmatch(tester):
            raise TestSendError(
                f"--to {tester!r} is not a LINE user ID (U and 32 lowercase hex digits, as "
                "webhook events and the LINE Developers console show it)"
            )
        if tester not in testers:
            testers.append(tester)
    if to is not None and not testers:
        raise TestSendError("--to names no tester: give LINE user IDs, comma-separated")
    if len(testers) > MAX_TESTERS:
        raise TestSendError(
            f"--to names {len(testers)} testers; a test send takes at most {MAX_TESTERS}"
        )
    return TestSendOptions(
        count, tuple(testers), random.SystemRandom().randrange(10**6) if seed is None else seed
    )


def mode_of(dest: Destination, settings: Any) -> str:
    """How this export is test-sent (``push``, ``multicast``, ``line_audience``,
    ``maac_segment``, ``linkedin_segment``); raises :class:`TestSendError` saying why not."""
    if dest.type_name == "line_messaging":
        target = settings.target
        if target in ("push_message", "narrowcast", "broadcast"):
            return "push"
        if target == "multicast_message":
            return "multicast"
        if target == "audience":
            return "line_audience"
        raise TestSendError(
            "a rich_menu export cannot be test-sent: linking is a user's state, not a message "
            "(each user holds one menu, so several rows cannot be shown to one tester, and a "
            "tester's own menu would be replaced)"
        )
    if dest.type_name == "maac":
        return "maac_segment"
    if dest.type_name == "linkedin":
        return "linkedin_segment"
    if dest.type_name == "line_conversion":
        raise TestSendError(
            "LINE Conversion API events cannot be test-sent: LINE's Conversion API has no test "
            "mode, and an event sent for a tester is a real conversion in the tag's reports and "
            "in ad optimization"
        )
    raise TestSendError(f"{dest.type_name} exports cannot be test-sent")


def target_name(name: str) -> str:
    """The ``<name>__test`` audience / segment a member export's test send writes."""
    return f"{name}{TEST_SUFFIX}"


@dataclass
class Sample:
    """The sampled rows: their numbers, the valid ones (spool columns) and the rejects
    (validation's reasons, from the rejects file)."""

    numbers: list[int]
    valid: pd.DataFrame
    rejects: pd.DataFrame


def sample(
    rows_read: int, valid: ValidRows, rejects_file: Path | None, count: int, seed: int
) -> Sample:
    """``count`` rows drawn at random (``seed``) from the ``rows_read`` rows of the result."""
    numbers = sorted(random.Random(seed).sample(range(1, rows_read + 1), min(count, rows_read)))
    frame = pd.DataFrame()
    if valid.count and numbers:
        table = pq.read_table(valid.path, filters=[(ROW_NUMBER, "in", numbers)])
        frame = table.to_pandas().sort_values(ROW_NUMBER).reset_index(drop=True)
    rejects = pd.DataFrame(columns=[ROW_NUMBER, "column", "rule", "message"])
    if rejects_file is not None and rejects_file.exists() and numbers:
        found = pd.read_csv(rejects_file, dtype=str, keep_default_na=False)
        found[ROW_NUMBER] = found[ROW_NUMBER].astype("int64")
        rejects = found[found[ROW_NUMBER].isin(numbers)].reset_index(drop=True)
    return Sample(numbers, frame, rejects)


@dataclass
class Outcome:
    """What a task's test send did: lines to print and counts for the summary."""

    lines: list[str] = field(default_factory=list)
    messages: int = 0
    written: list[str] = field(default_factory=list)
    failed: bool = False

    def say(self, line: str) -> None:
        self.lines.append(line)


def spool(frame: pd.DataFrame, path: Path) -> ValidRows:
    """A frame of sampled rows as a spool a destination's ``deliver`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return ValidRows(path, len(frame))


def reject_lines(frames: list[pd.DataFrame], outcome: Outcome) -> None:
    """``row 17: column name: message (rule)`` per reject, in row order."""
    parts = [f for f in frames if len(f)]
    if not parts:
        return
    for _, r in pd.concat(parts, ignore_index=True).sort_values(ROW_NUMBER).iterrows():
        outcome.say(
            f"    rejected row {int(r[ROW_NUMBER])}: {r['column']}: {r['message']} ({r['rule']})"
        )


def run_task(
    export: str,
    dest: Destination,
    resource: Any,
    settings: Any,
    found: Sample,
    opts: TestSendOptions,
    workdir: Path,
    ledger: Ledger | None = None,
) -> Outcome:
    """Test-send one task's sampled rows (see the module's docstring); nothing is recorded as
    a delivery of ``export``. Raises :class:`TestSendError` when it must not send."""
    mode = mode_of(dest, settings)
    outcome = Outcome()
    outcome.say(
        f"    test send: rows {', '.join(map(str, found.numbers)) or '(none read)'} sampled "
        f"(seed {opts.seed}); {len(found.valid)} valid, {found.rejects[ROW_NUMBER].nunique()} rejected"
    )
    reject_lines([found.rejects], outcome)
    if getattr(settings, "sync_mode", "append") != "append":
        outcome.say(
            f"    sync_mode {settings.sync_mode}: rows are test-sent whatever earlier runs "
            "delivered (plan without --test-send shows what a run would send)"
        )
    own = ledger is None
    ledger = ledger or Ledger()
    try:
        scope = ledger.scope(target_name(export), f"test-send/{uuid.uuid4()}")
        run = ExportRun(target_name(export), LOG, scope, len(found.valid))
        if mode in MESSAGE_MODES:
            from line_exports.test_sends.line import send_messages

            send_messages(mode, resource, settings, found, opts.testers, run, workdir, outcome)
        else:
            if opts.testers:
                outcome.say(
                    "    --to is not used here: this export sends members, not messages "
                    f"(its test target is a {TEST_SUFFIX} audience or segment of the sample)"
                )
            from line_exports.test_sends.members import write_members

            write_members(mode, export, dest, resource, settings, found, run, workdir, outcome)
    finally:
        if own:
            ledger.close()
    return outcome


def previous_members(ledger: Ledger, export: str) -> list[dict[str, Any]]:
    """The members the last test send of ``export`` wrote (LinkedIn: to remove them), kept in
    the ledger under ``<export>__test``, scope ``members``."""
    last = ledger.scope(target_name(export), "members").done("last")
    return list((last or {}).get("rows", []))


def remember_members(ledger: Ledger, export: str, rows: list[dict[str, Any]]) -> None:
    ledger.scope(target_name(export), "members").record("last", {"rows": rows})
