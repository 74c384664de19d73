"""The wait before a step's next attempt, taken inside the step so Ctrl-C / SIGTERM stops it.

An export's ``RetryPolicy`` (:data:`line_exports.export.DEFAULT_RETRY_POLICY`: 30 s, then
90 s) makes Dagster wait between step attempts. Dagster waits in its own loop, outside the
step (``ActiveExecution.sleep_til_ready``, ``dagster/_core/execution/plan/active.py``), where
a signal is only noted (``dagster._utils.interrupts.capture_interrupts``); the note is raised
as a bare ``DagsterExecutionInterruptedError`` when the next attempt enters its user-code
boundary (``raise_execution_interrupts`` in ``op_execution_error_boundary``), before any of
the export's code runs. So a Ctrl-C waited the delay out, started the step again, and the run
ended with no counts and no word of the signal (VERIFY-13k F6).

Here the failed attempt waits the policy's delay itself (:func:`wait`, Dagster's own
``RetryPolicy.calculate_delay``), while :func:`line_exports.interrupts.stop_at_once` is in
force: a signal ends the wait at once as :class:`~line_exports.interrupts.SignalReceived`, and
the export ends the run as :class:`~line_exports.interrupts.Stopped` with the failed attempt's
counts. After the wait the step asks Dagster for its retry with no further delay
(:func:`retry_requested`: the exception Dagster's boundary raises for a policy, so hooks see
the failed attempt's error as ``op_exception``). Unlike Dagster's wait, the step holds its
concurrency pool slot while it waits.

Under the multiprocess executor the step runs in a process of its own, with retries
``deferred``: the run worker starts the next attempt in a new process, after the seconds the
retry asks for, and waits them in its own loop, where a termination ended the run with no word
of the failed attempt's counts. The step waits there too; terminating the run (the run worker
hands the interrupt on to the step's process as SIGINT) stops the wait as above, and the step
ends as :class:`~line_exports.interrupts.StepStopped`.
"""

from __future__ import annotations

import time
from typing import Any

import dagster as dg
from dagster._core.errors import DagsterError
from dagster._core.execution.plan.utils import RetryRequestedFromPolicy


def retrying_policy(context: dg.AssetExecutionContext, error: Exception) -> dg.RetryPolicy | None:
    """The retry policy Dagster applies to this step (the asset's, else the job's
    ``op_retry_policy``) when it will start another attempt after this one fails with
    ``error``: None on the last attempt, with no policy, for a ``DagsterError`` (Dagster's
    boundary re-raises it, never retried), or when the run's retries are disabled (Dagster
    starts no attempt in this run). Retries are ``deferred`` in a step that runs in a process
    of its own (the multiprocess executor's step process, a step-delegating executor's
    ``dagster api execute_step``): the executor that started it starts the next attempt, after
    the seconds the step's retry asks for, so this step waits them too."""
    if isinstance(error, DagsterError):
        return None
    policy = context.job_def.get_retry_policy_for_handle(context.op_handle)
    if policy is None or context.retry_number >= policy.max_retries:
        return None
    step = getattr(context.op_execution_context, "_step_execution_context", None)
    mode = getattr(step, "retry_mode", None)
    if mode is not None and mode.disabled:
        return None
    return policy


def wait(context: dg.AssetExecutionContext, name: str, policy: dg.RetryPolicy, cause: str) -> float:
    """Sleep the seconds ``policy`` puts before the next attempt (logged first, with
    ``cause``, the failed attempt's headline); the seconds. A signal handler that raises
    (:func:`line_exports.interrupts.stop_at_once`) ends the sleep at once."""
    seconds = float(policy.calculate_delay(context.retry_number + 1))
    if seconds > 0:
        attempt, attempts = context.retry_number + 1, policy.max_retries + 1
        context.log.warning(
            f"{name}: step attempt {attempt} of {attempts} failed ({cause}); the next starts in "
            f"{seconds:.0f} s (retry_policy). Ctrl-C or SIGTERM now stops the run with this "
            "attempt's counts"
        )
        time.sleep(seconds)
    return seconds


def retry_requested(policy: dg.RetryPolicy) -> Any:
    """What the step raises (``from`` the failed attempt's error) once it has waited: Dagster's
    retry for ``policy``, started with no further wait."""
    return RetryRequestedFromPolicy(max_retries=policy.max_retries, seconds_to_wait=None)
