"""A run stopped by SIGINT or SIGTERM (Ctrl-C, Dagster's run termination) mid-send.

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
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from dagster import DagsterExecutionInterruptedError

STOPPED_BY = "stopped_by"
"""Metadata key of an interrupted run's counts (an ``AssetObservation``): the signal's name."""


class DeliveryInterrupted(DagsterExecutionInterruptedError):
    """Raised between two requests after SIGINT / SIGTERM: every request sent was answered and
    counted. A ``BaseException`` (as Dagster's interrupt), so no ``except Exception`` of a
    destination takes it for an API error."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"{signal_name} received: stopped after the request in flight")
        self.signal_name = signal_name


@contextmanager
def stop_between_requests(run: Any, log: Any = None) -> Iterator[None]:
    """While in this block, SIGINT / SIGTERM set ``run.interrupted`` (the signal's name) instead
    of raising; a second one raises ``DagsterExecutionInterruptedError`` at once. Only in the
    main thread (Python delivers signals there); elsewhere the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signo: int, _: FrameType | None) -> None:
        name = signal.Signals(signo).name
        if run.interrupted:
            raise DagsterExecutionInterruptedError(f"{name} received again: stopped at once")
        run.interrupted = name
        if log is not None:
            log.warning(
                f"{run.name}: {name} received: stopping after the request in flight "
                "(send it again to stop at once; its rows are then of unknown delivery)"
            )

    for signo in previous:
        signal.signal(signo, handler)
    try:
        yield
    finally:
        for signo, old in previous.items():
            signal.signal(signo, old)
