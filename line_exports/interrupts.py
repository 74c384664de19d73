"""A run stopped by SIGINT or SIGTERM (Ctrl-C, Dagster's run termination): while it reads and
validates its rows, or mid-send.

Dagster turns either signal into a ``DagsterExecutionInterruptedError`` raised wherever the
step's code is at that moment (``dagster._core.errors.raise_execution_interrupts``, entered
around every step's compute; SIGTERM is mapped to SIGINT's handler by
``dagster._utils.interrupts.setup_interrupt_handlers``). Raised inside a request, it would
leave a request in flight whose answer nobody reads. While a destination delivers,
:func:`stop_between_requests` replaces that handler: the first signal asks the run to stop
after the request in flight (:meth:`~line_exports.destination.ExportRun.progress`, called by
every destination once a request's answer is counted, raises :class:`DeliveryInterrupted`);
a second signal stops at once, as Dagster would. The export then records its counts (accepted,
refused, of unknown delivery, never sent) and re-raises, so the run still ends interrupted.

Before delivery (reading the query, validating, the checks before the first request)
:func:`stop_at_once` raises :class:`SignalReceived` at once: nothing was sent, so every row
read so far is counted never sent but those rejected (their rejects file is kept).

The export ends an interrupted attempt with :class:`Stopped`, which Dagster records as an
interrupted step but never retries: a user's stop is not an error a retry can fix.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

import dagster as dg
from dagster import DagsterExecutionInterruptedError
from dagster._core.errors import DagsterError

STOPPED_BY = "stopped_by"
"""Metadata key of an interrupted run's counts (an ``AssetObservation``): the signal's name."""


class DeliveryInterrupted(DagsterExecutionInterruptedError):
    """Raised between two requests after SIGINT / SIGTERM: every request sent was answered and
    counted. A ``BaseException`` (as Dagster's interrupt), so no ``except Exception`` of a
    destination takes it for an API error."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"{signal_name} received: stopped after the request in flight")
        self.signal_name = signal_name


class SignalReceived(DagsterExecutionInterruptedError):
    """SIGINT / SIGTERM raised at once (:func:`stop_at_once`, or a second signal during
    delivery, ``again``): ``signal_name`` says which."""

    def __init__(self, signal_name: str, again: bool = False) -> None:
        super().__init__(f"{signal_name} received{' again' if again else ''}: stopped at once")
        self.signal_name = signal_name
        self.again = again


class Stopped(DagsterError, DagsterExecutionInterruptedError):
    """How an export ends an attempt a signal stopped: its message is the headline (the counts).

    Dagster retries an interrupted step when the step has a ``RetryPolicy``: its boundary
    around user code (``op_execution_error_boundary``, ``dagster/_core/execution/plan/
    utils.py``) turns ``DagsterExecutionInterruptedError`` / ``KeyboardInterrupt`` into
    ``RetryRequested`` ("respect retry policy when interrupts occur", dagster-io/dagster PR
    #5974). A user's Ctrl-C or a terminated run must not start again 30 s later. The same
    boundary re-raises a ``DagsterError`` untouched before it looks at the policy ("part of
    the user-framework contract"), and the step's event sequence
    (``dagster_event_sequence_for_step``, ``execute_plan.py``, case 4) records an
    interrupt as an interrupted step failure (``ErrorSource.INTERRUPT``) and re-raises it, so
    the run stops there as after any interrupt. Being both, this exception is an interrupt
    the retry policy does not see (``test_interrupt_retry_policy`` runs it). ``dg.Failure(
    allow_retries=False)`` would skip the retry too, but the run would go on with its next
    steps after the user's stop.

    ``metadata``: the counts the stop logged (its observation's, with ``stopped_by``), or empty
    (stopped before reading a row)."""

    def __init__(self, headline: str, metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(headline)
        self.metadata: dict[str, Any] = dict(metadata or {})


class StepStopped(dg.Failure):
    """How a step that runs in a process of its own (:func:`own_process`: the multiprocess
    executor's step process, a step-delegating executor's) ends an attempt a signal stopped:
    the :class:`Stopped` headline as its description, its counts as its metadata, never
    retried (``allow_retries=False``).

    The step's process gets its signal from the run worker, which stops starting steps and ends
    the run as interrupted (canceled when terminated) once its step processes end, so far as
    each ends as a step failure or with Dagster's own interrupt: the multiprocess executor
    names an interrupt by its class (``DagsterExecutionInterruptedError``, ``KeyboardInterrupt``;
    ``dagster/_core/executor/multiprocess.py``), and a :class:`Stopped` raised out of the step
    process made the run end "During multiprocess execution errors occurred in child processes"
    (a crash; "Run failed after it was requested to be terminated" when terminated)."""

    def __init__(self, stop: Stopped) -> None:
        super().__init__(description=str(stop), metadata=stop.metadata, allow_retries=False)


IN_PROCESS_EXECUTORS = frozenset({"in_process", "execute_in_process_executor"})
"""Dagster's executors that run every step in the run worker's process (``dg.
in_process_executor``; ``materialize`` and ``execute_in_process``'s)."""


def own_process(context: Any) -> bool:
    """Whether the step of ``context`` (an op or asset execution context) runs in a process of
    its own, not in the run worker's: any executor but Dagster's in-process ones, and Dagster's
    default one (``multi_or_in_process_executor``) unless its run config says ``in_process``.
    Read from the job's executor definition and run config, as the run worker that built the
    executor read them (the step's process builds none)."""
    step = getattr(context, "op_execution_context", context)
    step = getattr(step, "_step_execution_context", None)
    if step is None:
        return False
    name = step.job_def.executor_def.name
    if name in IN_PROCESS_EXECUTORS:
        return False
    if name == "multi_or_in_process_executor":
        return "in_process" not in step.resolved_run_config.execution.execution_engine_config
    return True


@contextmanager
def _handling(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """``handler`` answers SIGINT and SIGTERM in this block, the handlers before it after; only
    in the main thread, where Python delivers signals (elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signo in previous:
        signal.signal(signo, handler)
    try:
        yield
    finally:
        for signo, old in previous.items():
            signal.signal(signo, old)


@contextmanager
def stop_at_once() -> Iterator[None]:
    """While in this block, SIGINT / SIGTERM raise :class:`SignalReceived` naming the signal
    (Dagster's own handler raises an interrupt that does not say which); once one was raised,
    later ones are ignored while the block lasts: the run is stopping, and a second signal
    (Ctrl-C held down, or Ctrl-C then SIGTERM) raised before the stop is counted
    (:func:`stopping`) would lose its counts. Only in the main thread; elsewhere the block
    changes nothing."""
    raised: list[str] = []

    def handler(signo: int, _: FrameType | None) -> None:
        if raised:  # stopping already: a later signal must not cut the counting
            return
        raised.append(signal.Signals(signo).name)
        raise SignalReceived(raised[0])

    with _handling(handler):
        yield


@contextmanager
def signals_held() -> Iterator[None]:
    """A block a signal must not cut in two (a chunk's rejects counted and written): SIGINT /
    SIGTERM arriving in it are handed to the handler in force once it ends, so they stop the run
    as they would have, after the block. Only in the main thread; elsewhere it changes nothing."""
    held: list[int] = []
    with _handling(lambda signo, _: held.append(signo)):
        yield
    for signo in held:  # delivered again, to the handler restored above
        signal.raise_signal(signo)


@contextmanager
def stopping() -> Iterator[None]:
    """A block that counts a stop already under way (the run read, sent and stops now): SIGINT
    / SIGTERM arriving in it are ignored, since the run is stopping at once anyway, so Ctrl-C
    held down cannot cut the counting and leave a stop with no counts (VERIFY-13o G3). Only in
    the main thread; elsewhere it changes nothing."""
    with _handling(lambda signo, _: None):
        yield


def stop_of(exc: BaseException) -> Stopped | None:
    """The :class:`Stopped` ``exc`` is, or that was being raised when ``exc`` (a later signal)
    replaced it: the stop with its counts, or None."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, Stopped):
            return found
        seen.add(id(found))
        found = found.__context__
    return None


@contextmanager
def stop_between_requests(run: Any, log: Any = None) -> Iterator[None]:
    """While in this block, SIGINT / SIGTERM set ``run.interrupted`` (the signal's name) instead
    of raising; a second one raises ``DagsterExecutionInterruptedError`` at once; later ones
    (Ctrl-C held down) are ignored, so the requests cut off are counted (VERIFY-13o G3). Only
    in the main thread (Python delivers signals there); elsewhere the block changes nothing."""

    at_once: list[str] = []

    def handler(signo: int, _: FrameType | None) -> None:
        name = signal.Signals(signo).name
        if at_once:  # stopping at once already: a third signal must not cut the counting
            return
        if run.interrupted:
            at_once.append(name)
            raise SignalReceived(name, again=True)
        run.interrupted = name
        if log is not None:
            log.warning(
                f"{run.name}: {name} received: stopping after the request in flight "
                "(send it again to stop at once; its rows are then of unknown delivery)"
            )

    with _handling(handler):
        yield
