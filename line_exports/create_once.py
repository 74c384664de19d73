"""Creating something at an API once, over the retries of one call.

A create is not idempotent: resending one whose answer was lost (a timeout, a dropped
connection) or answered 429/5xx may make a second segment of the same name. So the create is
sent without the HTTP layer's retries, and before each resend :func:`create_once` looks for
what the failed attempt may have made (LinkedIn's DMP segment by name and type, MAAC's custom
segment by name among those not there before).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from line_exports.http import ApiError, HttpClient, backoff, may_have_acted

T = TypeVar("T")


def create_once(
    http: HttpClient,
    create: Callable[[], T],
    made: Callable[[], T | None],
    sleep: Callable[[float], None],
) -> T:
    """``create()`` (one attempt, no HTTP retries), retried as ``http``'s settings say; after a
    retryable failure and the pause, ``made()`` looks for what that attempt created, returned
    instead of creating again (None: nothing found, send again).

    Raises the last attempt's :class:`ApiError`, whose ``unanswered`` and ``server_errors``
    count the earlier attempts that may have reached the API unanswered and those it answered
    a 5xx (:func:`~line_exports.outcomes.fate_of`); ``made()`` found nothing after each of them,
    which rules none of them out (the API may still act on it). When
    ``made()`` itself fails, the create's error is raised (whether it took is not known).
    """
    retry = http.retry
    unanswered = server_errors = 0
    for attempt in range(retry.max_retry + 1):
        try:
            return create()
        except ApiError as exc:
            exc.unanswered, exc.server_errors = unanswered, server_errors
            if not exc.retryable or attempt == retry.max_retry:
                raise
            unanswered += exc.status is None and exc.reached
            server_errors += exc.status is not None and may_have_acted(exc.status)
            http.stats.retries += 1
            wait = (
                exc.retry_after
                if exc.retry_after is not None
                else retry.initial_retry_wait * 2**attempt
            )
            backoff(min(wait, retry.max_retry_wait), exc, sleep)  # a stop: raises exc
            try:
                found = made()
            except ApiError:
                raise exc from None
            if found is not None:
                return found
    raise AssertionError("unreachable")
