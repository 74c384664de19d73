"""The seam every destination plugs into: settings, rules, and a ``deliver`` step.

An export reads rows, validates them against the destination's :class:`~line_exports.rules.RuleSet`,
spools the valid ones, then hands them to :meth:`Destination.deliver`, which batches them,
talks to the API through its resource's client, and reports what happened. Nothing flows back
up: ``deliver`` never re-validates, and the rules never speak HTTP.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, ValidationInfo, field_validator

from line_exports.http import RetrySettings
from line_exports.ledger import LedgerScope
from line_exports.rules import ROW_NUMBER, RuleSet, reject

if TYPE_CHECKING:
    from line_exports.sync import RemovalReport, SyncSpec


class ExportSettings(dg.Config):
    """Settings every export shares: the reference's retry and timeout knobs (seconds)."""

    max_retry: int = Field(
        8, ge=1, le=10, description="Maximum number of retries when a request fails"
    )
    initial_retry_wait: float = Field(15, ge=1, le=30, description="Seconds before the first retry")
    max_retry_wait: float = Field(
        3600, ge=100, le=7200, description="Longest wait between retries, seconds"
    )
    connection_timeout: float = Field(
        300, ge=10, le=600, description="HTTP timeout per request, seconds"
    )
    min_accepted_ratio: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "The run fails when the API accepts fewer than this share of the valid rows "
            "(0..1); it always fails when the API accepts none of them"
        ),
    )
    unknown_columns: Literal["warn", "fail"] = Field(
        "warn",
        description="A query column the destination does not know: warn (it is not sent) or fail",
    )
    sync_mode: Literal["append", "diff", "mirror"] = Field(
        "append",
        description="append: send every row (TD's behaviour); diff: send only rows new or "
        "changed since the last run, and rows not accepted then; mirror: diff, and remove "
        "members this export delivered that left the result",
    )
    max_remove_ratio: float = Field(
        0.2,
        ge=0,
        le=1,
        description="mirror: a run that would remove more than this share of the members "
        "removes nothing and fails its sync_removals check",
    )
    output_mapping: dict[str, Any] | None = Field(
        None,
        description="Audience Studio's Output Mapping: export_all_columns, columns "
        "([{source, output}]), strings ([{output, parts: [{string: x}, timestamp, segment_id, "
        "segment_name, audience_id]}]), segment ({id, name, audience_id}); applied before "
        "validation (line_exports.output_mapping)",
    )
    empty_result: Literal["auto", "skip", "fail"] = Field(
        "auto",
        description="No valid rows to send: skip (warning) or fail; auto skips, but fails an "
        "export that replaces the target's contents (MAAC update_segment)",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _within_range(cls, value: Any, info: ValidationInfo) -> Any:
        """Name the whole range in the message (pydantic names only the bound crossed)."""
        field = cls.model_fields.get(info.field_name or "")
        bounds = (
            [(getattr(m, "ge", None), getattr(m, "le", None)) for m in field.metadata]
            if field
            else []
        )
        low = next((lo for lo, _ in bounds if lo is not None), None)
        high = next((hi for _, hi in bounds if hi is not None), None)
        if (low is None and high is None) or isinstance(value, bool):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            return value  # the type check says what is wrong
        if (low is not None and number < low) or (high is not None and number > high):
            span = (
                f"between {low:,} and {high:,}"
                if low is not None and high is not None
                else (f"at least {low:,}" if low is not None else f"at most {high:,}")
            )
            raise ValueError(f"{info.field_name} must be {span} (got {value})")
        return value

    @field_validator("output_mapping")
    @classmethod
    def _output_mapping(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from line_exports.output_mapping import parse_output_mapping

        parsed = parse_output_mapping(value)
        return None if parsed is None else parsed.model_dump(mode="json")

    def retry_settings(self) -> RetrySettings:
        return RetrySettings(
            max_retry=self.max_retry,
            initial_retry_wait=self.initial_retry_wait,
            max_retry_wait=self.max_retry_wait,
            connection_timeout=self.connection_timeout,
        )


def release_arrow_memory() -> None:
    """Hand the memory Arrow has freed back to the OS.

    Arrow's default allocator (mimalloc) keeps freed pages for reuse, and pandas' Arrow-backed
    strings churn through it, so after each chunk or upload file the process held tens of MB
    it no longer used (1M LINE IDs: peak 342 -> 322 MB). Cheap: nothing is copied.
    """
    pa.default_memory_pool().release_unused()


class ValidRows:
    """The validated rows of one run, spooled to a Parquet file and read back in batches."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.count = count

    def record_batches(
        self, columns: list[str] | None = None, size: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """Rows in order as Arrow record batches of at most ``size`` rows.

        Read one row group at a time (one validated chunk each) on this thread, without
        ``pre_buffer``: with it, Arrow kept the raw column chunks of every row group read so
        far until the reader was done (10M LINE IDs: 307 MB held by the end), and its batch
        reader's scratch kept ~45 MB more than reading row groups.
        """
        if self.count == 0:
            return
        spool = pq.ParquetFile(self.path, pre_buffer=False)
        for group in range(spool.num_row_groups):
            table = spool.read_row_group(group, columns=columns, use_threads=False)
            yield from table.to_batches(max_chunksize=size)

    def batches(self, size: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """Rows in order, exactly ``size`` per batch (the last may be smaller)."""
        # Convert many rows at once (small conversions cost more than their rows) and cut
        # them into batches of exactly ``size``.
        pending: list[pa.RecordBatch] = []
        held = 0
        for batch in self.record_batches(columns):
            pending.append(batch)
            held += batch.num_rows
            if held < size:
                continue
            table = pa.Table.from_batches(pending)
            whole = held - held % size
            frame = table.slice(0, whole).to_pandas()
            for start in range(0, whole, size):
                yield frame.iloc[start : start + size].reset_index(drop=True)
            rest = table.slice(whole)
            pending, held = rest.to_batches(), rest.num_rows
        if held:
            yield pa.Table.from_batches(pending).to_pandas()


@dataclass
class DeliveryReport:
    """What ``deliver`` did with the rows validation passed to it, in counts that add up.

    Every such row ends in exactly one of five places, and the export checks that they do
    (rows given = rejected before sending + refused + unsent + delivery unknown + accepted;
    the destination's rejects then count in ``rows_rejected``, not in ``rows_valid``):

    * ``rejected``: rows the destination did not send because a rule says the API would refuse
      them, known before sending (e.g. a CAPI event outside LINE's time window, a message over
      a limit): reject tables (:func:`~line_exports.rules.reject`) naming the rule.
    * ``refused``: rows sent and refused by the API, with its answer in ``message`` (a request
      that failed for good is counted by :func:`~line_exports.outcomes.count_failed_request`,
      the one rule for every destination); rows the
      API refused only as a count, without naming them (MAAC's ``mismatch_num``), go in
      ``refused_unnamed``.
    * ``unknown``: rows sent whose fate nobody can tell (:func:`~line_exports.outcomes.fate_of`):
      the request went out and no answer came, or the API answered a 5xx once the retries were
      spent (it may have acted, in whole or part), or an earlier attempt got one of those and a
      later one a 429 (which undoes nothing); or its answer was lost and it can no longer be
      asked again safely (LINE forgets a retry key after 24 hours, so a resend could deliver
      twice). Reject tables with rule ``delivery_unknown``.
    * ``accepted_rows``: rows the API accepted (a resumed batch's rows count as accepted).
    * unsent: the rest, rows never sent because the run stopped (counted by the export as
      valid - rejected - ``sent_rows``).

    ``sent_rows`` counts every row handed to a request (accepted + refused + unknown).
    ``rejects`` is the former name of ``refused``.
    """

    sent_rows: int = 0
    accepted_rows: int = 0
    refused: list[pd.DataFrame] = field(default_factory=list)
    refused_unnamed: int = 0
    refused_unnamed_answers: dict[str, int] = field(default_factory=dict)
    """The API's answer for the rows in ``refused_unnamed`` (answer -> rows), e.g. MAAC's
    ``mismatch_num`` of an import task: counted in ``refusals_by_answer`` like named rows."""
    rejected: list[pd.DataFrame] = field(default_factory=list)
    unknown: list[pd.DataFrame] = field(default_factory=list)
    unsettled: list[pd.Series] = field(default_factory=list)
    """Row numbers sent whose fate per row the API did not tell (a MAAC import task that
    counts mismatched members without naming them): counted as the API said
    (``accepted_rows``, ``refused_unnamed``), but ``diff`` / ``mirror`` keep them pending, so
    a later run sends them again instead of recording a refused row as delivered."""
    answered: list[pd.Series] = field(default_factory=list)
    """Row numbers of requests the API answered (or an earlier step attempt got answered:
    resumed), where the destination names them (LINE Conversion API, MAAC members, LinkedIn):
    each such row is accepted unless also named in ``refused``, ``unknown``, ``rejected`` or
    ``unsettled``. ``diff`` / ``mirror`` record those accepted when the run then fails or
    stops (:func:`line_exports.sync.deliver`), so the next run does not send them again."""
    job_ids: list[str] = field(default_factory=list)
    requests: int = 0
    resumed_rows: int = 0
    unchanged_rows: int = 0
    """sync_mode diff / mirror: valid rows not sent because an earlier run settled them as
    they are: delivered (counted in ``accepted_rows``) or refused for good (listed in
    ``refused`` with the API's answer); never in ``sent_rows``."""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def rejects(self) -> list[pd.DataFrame]:
        """Former name of :attr:`refused` (rows the API refused)."""
        return self.refused

    @property
    def refused_rows(self) -> int:
        """Rows the API refused: distinct rows named in ``refused`` plus ``refused_unnamed``."""
        return _distinct_rows(self.refused) + self.refused_unnamed

    @property
    def rejected_rows(self) -> int:
        """Rows rejected by the destination before sending (distinct)."""
        return _distinct_rows(self.rejected)

    @property
    def unknown_rows(self) -> int:
        """Rows sent whose delivery nobody can tell (distinct)."""
        return _distinct_rows(self.unknown)


def _distinct_rows(frames: list[pd.DataFrame]) -> int:
    numbers = [f[ROW_NUMBER].to_numpy() for f in frames if len(f)]
    return int(len(np.unique(np.concatenate(numbers)))) if numbers else 0


class DeliveryFailed(Exception):
    """The run stops mid-delivery (the API refused rows and the invalid-record policy says
    stop, or the requests themselves are wrong): the run fails, and what happened so far
    (``report``: refused, rejected, accepted, and so the rows left unsent) still reaches the
    rejects file and the metadata."""

    def __init__(self, message: str, report: DeliveryReport, retryable: bool = False) -> None:
        super().__init__(message)
        self.report = report
        self.retryable = retryable
        """True when a retry of the run may succeed (the run's RetryPolicy applies)."""


def stopped_report(exc: BaseException, run: ExportRun) -> DeliveryReport | None:
    """The report a stopped delivery leaves, to count its requests in: a
    :class:`DeliveryFailed`'s own, else (an interrupt between requests) the run's
    :attr:`ExportRun.report` (None if the delivery made none)."""
    return exc.report if isinstance(exc, DeliveryFailed) else run.report


class NothingSent(DeliveryFailed):
    """The run stops before any request carried a row (a setting, the target or the resource
    is wrong): every valid row is counted unsent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, DeliveryReport())


class ExportRun:
    """What a destination sees of the run: its name, log, ledger scope and a progress line."""

    def __init__(
        self, name: str, log: Any, ledger: LedgerScope, total_rows: int, progress_every: float = 5.0
    ) -> None:
        self.name = name
        self.log = log
        self.ledger = ledger
        self.total_rows = total_rows
        self._progress_every = progress_every
        self._last_progress = time.monotonic()
        self.report: DeliveryReport | None = None
        """The report a destination is filling (:meth:`new_report`): what a run that stops on
        an unexpected error had done so far (None: the destination had not started sending)."""
        self.sync_account = ""
        """``sync_mode`` diff / mirror: the destination account of this run
        (:meth:`Destination.sync_account`), set by :func:`line_exports.sync.deliver` (MAAC's
        tag records are kept per account: :class:`~line_exports.destinations.maac_tags.Tagged`)."""
        self.keep_requests: Callable[[list[tuple[str, str, str, list[str]]]], None] | None = None
        """Set by ``sync_mode`` diff for destinations with a ``SyncSpec.settle_window``: the
        destination calls it with (retry key, kind, exact body, recipients) of the requests it
        is about to send, before sending them (:mod:`line_exports.sync_settle`)."""
        self.stop = threading.Event()
        """Set when the run is asked to stop (:attr:`interrupted`): a retry's wait ends and no
        retry is sent (:func:`line_exports.http.stoppable_waits`)."""
        self._interrupted = ""
        self.sent_before = ""
        """What this run sent before its delivery planned anything (an earlier run's requests
        sent again: :meth:`line_exports.sync_settle.Settled.sent_text`), for a failure text
        that would otherwise say nothing was sent; '' when nothing was."""

    @property
    def run_id(self) -> str:
        """The Dagster run this is (its ledger claim's owner), '' before the scope is claimed: a
        ledger record of a refusal names it, so a step retry tells an earlier attempt of this
        run from an earlier run (:class:`~line_exports.sync_settle.Settled`)."""
        claimed = self.ledger.claimed
        return claimed.owner.run_id if claimed is not None else ""

    @property
    def interrupted(self) -> str:
        """The name of the signal (SIGINT, SIGTERM) that asked this run to stop after the
        request in flight (:func:`line_exports.interrupts.stop_between_requests`); '' if none.
        Setting it sets :attr:`stop`."""
        return self._interrupted

    @interrupted.setter
    def interrupted(self, name: str) -> None:
        self._interrupted = name
        if name:
            self.stop.set()

    @contextmanager
    def sending(
        self,
        rows: Sequence[int] | pd.Series,
        column: str,
        api: str,
        stats: Any = None,
        earlier: Any = None,
        not_started: Callable[[], None] | None = None,
    ) -> Iterator[None]:
        """Around one request carrying ``rows`` (row numbers; ``column`` names what they
        carry, ``api`` the API): when a second signal stops the run at once inside it
        (:func:`line_exports.interrupts.stop_between_requests`), before its answer is counted,
        its rows are counted by :func:`~line_exports.outcomes.fate_of` into :attr:`report`:
        once an attempt of it went out (``stats``, the client's
        :class:`~line_exports.http.CallStats`, counted a request; None: it did) it may have
        reached the API: delivery unknown, never unsent; else it never left: unsent. Its
        ledger record stays pending, so a re-run sends it again under its idempotency key.
        ``earlier``: what earlier step attempts of it got
        (:class:`~line_exports.outcomes.Earlier`; unknown even if this one never left when
        one may have acted). ``not_started``: called when it never left, to put its ledger
        record back as it was before this attempt recorded it pending
        (:meth:`~line_exports.ledger_request.LedgerRequest.not_started`): a record written
        before a request was started is never evidence of sending (VERIFY-13o G2)."""
        made = stats.requests if stats is not None else -1
        try:
            yield
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt) as exc:
            from line_exports.http import ApiError
            from line_exports.interrupts import DeliveryInterrupted
            from line_exports.outcomes import NotSent, count_failed_request

            if self.report is not None and not isinstance(exc, DeliveryInterrupted):
                name = getattr(exc, "signal_name", "") or "an interrupt"
                reached = stats is None or stats.requests != made
                why = f"the run was stopped at once by {name}"
                cut = ApiError(why, reached=True) if reached else NotSent(why)
                try:
                    count_failed_request(self.report, rows, column, cut, api, earlier=earlier)
                    if not reached and not_started is not None:
                        not_started()
                except Exception as error:  # never turn the stop into an error a retry repeats
                    self.log.error(f"{self.name}: the request cut off was not counted: {error!r}")
            raise

    @contextmanager
    def taken(
        self,
        rows: Sequence[int] | pd.Series | Callable[[], Sequence[int]],
        column: str,
        reason: str,
        sent: int = 0,
    ) -> Iterator[None]:
        """Around a wait for an API's job after the API took the request carrying ``rows``
        (row numbers, or a function giving them, called only on a stop): an import task, a
        segment, an audience being made READY. A signal inside it (the first:
        :class:`~line_exports.interrupts.DeliveryInterrupted` from :meth:`progress`, which the
        wait calls before each look; a second, at once) counts the rows of unknown delivery
        with ``reason`` (the API has them; whether its job ends well is not known), adds
        ``sent`` to :attr:`DeliveryReport.sent_rows` (rows not yet counted sent), and the stop
        goes on. Nothing is counted if the run has no :attr:`report`."""
        try:
            yield
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            from line_exports.outcomes import DELIVERY_UNKNOWN

            if self.report is not None:
                numbers = rows() if callable(rows) else rows
                self.report.unknown.append(reject(numbers, column, DELIVERY_UNKNOWN, reason))
                self.report.sent_rows += sent
            raise

    def new_report(self) -> DeliveryReport:
        """A new report for this run's delivery, kept as :attr:`report`."""
        self.report = DeliveryReport()
        return self.report

    def progress(self, sent_rows: int, force: bool = False) -> None:
        """Log rows sent so far, at most every few seconds, so long runs show they move.

        Destinations call it once a request's answer is counted: a run asked to stop
        (:attr:`interrupted`) stops here, between two requests
        (:class:`~line_exports.interrupts.DeliveryInterrupted`)."""
        if self.interrupted and not force:
            from line_exports.interrupts import DeliveryInterrupted

            raise DeliveryInterrupted(self.interrupted)
        now = time.monotonic()
        if force or now - self._last_progress >= self._progress_every:
            self._last_progress = now
            # the rows that passed validation: a destination may reject some of them itself
            self.log.info(f"{self.name}: sent {sent_rows:,} of {self.total_rows:,} rows")


def not_isolated(run: ExportRun) -> str:
    """Why rows of a refused request (a 400) that a run stopped by a signal never isolated are
    counted refused: the request that carried them was answered 400, so the API processed
    none of it (:func:`line_exports.outcomes.fate_of`: a 4xx is refused, with its answer), and
    the run sends no new request after the signal to find which row it refused."""
    return (
        f"not isolated: the run was stopped by {run.interrupted} before the refused row was "
        "found, so this row was not sent again"
    )


def content_key(*parts: Any) -> str:
    """A stable key for a request, derived from what it carries (never random)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, pd.DataFrame):
            # Arrow buffers, not Python objects: hashing 1.5M IDs must not hold 1.5M str objects.
            # The IPC stream holds exactly the rows' values, whatever slice they come from.
            table = pa.Table.from_pandas(part, preserve_index=False).combine_chunks()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            digest.update(sink.getvalue())
        elif isinstance(part, bytes):
            digest.update(part)
        elif isinstance(part, str):
            digest.update(json.dumps(part).encode())  # same text as below, on the C fast path
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x1f")
    return digest.hexdigest()


class Destination(ABC):
    """One API to export to. Subclasses read like the reference: settings, rules, delivery."""

    type_name: ClassVar[str]
    """The ``type`` of a ``result_connection`` / TD CLI ``--result`` JSON (e.g. ``maac``)."""
    settings_class: ClassVar[type[ExportSettings]]
    resource_class: ClassVar[type[dg.ConfigurableResource]]
    pool: ClassVar[str]
    """Dagster concurrency pool: exports to the same API share its rate limit across runs."""
    kind: ClassVar[str]
    """The kind shown on the asset in the UI (e.g. ``line``, ``linkedin``)."""
    invalid_policy_setting: ClassVar[str]
    """The setting that chooses between skipping invalid rows and failing (reference name)."""
    auth_fields: ClassVar[tuple[str, ...]] = ()
    """``result_settings`` names that are credentials and belong on the resource, not config."""
    unknown_delivery_advice: ClassVar[str]
    """What to do about rows of unknown delivery (``outcomes.DELIVERY_UNKNOWN``) at this API:
    what re-executing the same run does with them there, true to the API's own documented
    handling of a request sent twice. One sentence, no trailing period."""

    @abstractmethod
    def ruleset(self, settings: Any) -> RuleSet:
        """The column rules for these settings (e.g. which key column is required)."""

    def export_ruleset(self, settings: Any) -> RuleSet:
        """:meth:`ruleset`, and in ``sync_mode`` diff / mirror the sync key
        (:attr:`SyncSpec.key_columns`) unique across the export: the sync store holds one hash
        per key, so a second row of a key would differ from it, run after run, and be sent
        again each time. The first row of a key is kept; the others are ``duplicate`` rejects
        naming its row (:func:`line_exports.dedup.drop_duplicates`), as in append for the keys
        the API itself takes once."""
        rules = self.ruleset(settings)
        spec = self.sync_spec(settings) if settings.sync_mode != "append" else None
        if spec is None:  # append, or a mode this destination refuses (sync.check_mode)
            return rules
        return rules.keyed(spec.key_columns, settings.model_dump(), spec.fallback_key)

    def invalid_policy(self, settings: Any) -> tuple[str, bool]:
        """(setting name, skip?): True reports invalid rows and sends the rest; False fails
        the run before anything is sent."""
        return self.invalid_policy_setting, bool(getattr(settings, self.invalid_policy_setting))

    def delivery_advice(self, settings: Any) -> str:
        """The advice for rows of unknown delivery of an export with ``settings`` (its
        :attr:`unknown_delivery_advice`; a destination whose targets differ overrides this).
        The failure's headline, the ``delivery_unknown_advice`` metadata and the CLI's warning
        all quote it."""
        return self.unknown_delivery_advice

    def replaces_target(self, settings: Any) -> bool:
        """True when a run replaces what the target holds (so an empty run would empty it)."""
        return False

    def check_total(self, settings: Any, valid_rows: int) -> None:  # noqa: B027 - optional hook
        """Refuse, before anything is sent, a run the API cannot take whole (e.g. too large)."""

    def plan_capacity(  # noqa: B027 - optional hook
        self, resource: Any, settings: Any, rows: ValidRows
    ) -> tuple[list[str], str, int | None]:
        """For ``line-exports plan``: what the API can take of these valid rows, read from the
        API without sending (e.g. a monthly quota): (lines to show, ``would fail: ...`` or
        '', the most rows a run would send or None for all)."""
        return [], "", None

    @abstractmethod
    def deliver(
        self, resource: Any, settings: Any, rows: ValidRows, run: ExportRun
    ) -> DeliveryReport:
        """Send the valid rows; report per request what the API accepted and refused."""

    def sync_spec(self, settings: Any) -> SyncSpec | None:
        """How members are keyed for ``sync_mode`` diff / mirror (None: append only)."""
        return None

    def sync_account(self, resource: Any, settings: Any, fingerprint: Callable[[str], str]) -> str:
        """``sync_mode`` diff / mirror: the destination account behind ``resource`` (a LINE
        channel, a MAAC account), part of the sync store's name so another account starts
        empty and gets every row. An identity the API gives or a non-secret setting; never a
        secret (``fingerprint`` gives a keyed fingerprint of one, when nothing else tells
        accounts apart). '' when :meth:`sync_spec`'s target names the account already."""
        return ""

    def refusal_is_transient(self, rule: str, message: str) -> bool:
        """sync_mode diff / mirror: whether a row the API refused (a ``refused`` reject with
        this rule and message) was refused for a transient reason (a rate limit, a server
        error, no answer for it, a quota that renews): it is sent again next run. False, a
        permanent reason (an unknown user, a malformed value): it is not sent again until its
        sent fields change. By default every refusal is transient (sent again each run)."""
        return True

    def resend(
        self, resource: Any, settings: Any, kind: str, body: bytes, key: str, age: float = 0.0
    ) -> tuple[str, dict[str, Any]]:
        """``SyncSpec.settle_window``: send an earlier run's request, first sent ``age`` seconds
        ago, again: the same body under the same idempotency key
        (:mod:`line_exports.sync_settle`). Returns ('accepted', {status, request_id}) when the
        API has it (now or already), ('refused', {message}) for a permanent refusal,
        ('not_delivered', {message}) when it delivered nothing and the rows may be planned
        again, or ('expired', {}) when the key would expire before a resend surely ends (not
        sent); raises for a transient failure."""
        raise NotImplementedError(f"{self.type_name} cannot resend a recorded request")

    def remove(
        self, resource: Any, settings: Any, departed: pd.DataFrame, run: ExportRun
    ) -> RemovalReport:
        """mirror: remove the ``departed`` members (``key`` and the key columns) from the
        target; report the keys removed. Only destinations whose spec has mirror override it."""
        raise NotImplementedError(f"{self.type_name} cannot remove members")

    def rebuild_reason(self, resource: Any, settings: Any, run: ExportRun) -> str:
        """mirror with ``SyncSpec.rebuild``: why the target must be rebuilt although no member
        left (e.g. it expires soon), or ''."""
        return ""

    def rebuild(
        self,
        resource: Any,
        settings: Any,
        rows: ValidRows,
        departed: pd.DataFrame,
        run: ExportRun,
        reason: str,
    ) -> tuple[DeliveryReport, RemovalReport]:
        """mirror with ``SyncSpec.rebuild``: send every current row to a new target that
        replaces the old one; report the delivery and the departed keys now gone."""
        raise NotImplementedError(f"{self.type_name} cannot rebuild its target")

    def target_label(self, settings: Any) -> str:
        """A short name of what the export writes to, for descriptions and metadata."""
        return self.type_name
