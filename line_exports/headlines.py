"""The headline of a failed export: the real cause, first, whatever Dagster did around it.

Two things used to hide it:

* Dagster's step retries. The export's ``RetryPolicy`` (:data:`line_exports.export.
  DEFAULT_RETRY_POLICY` unless ``retry_policy=`` or a ``.dig`` ``_retry`` says otherwise)
  re-runs a step whose error a retry may fix; once the retries are spent, Dagster's own
  headline was "Exceeded max_retries of 2", the cause one level down. On the step's last
  attempt (:func:`last_attempt`) the error becomes a ``dg.Failure`` that is not retried
  (:func:`final_failure`): its description, the cause with the attempts it took, is the
  headline, and its metadata (the run's counts) stay.
* An API that could not be reached (connection refused, a host name not resolved, a connect
  timeout) said only ``POST /path connection failed: NewConnectionError``. :func:`host_trouble`
  names the API and its host (``LinkedIn API at api.linkedin.com:443 could not be reached
  (connection refused)``): host and port only, never a path's query, a user or a token.

A run stopped during delivery gets one headline whatever the destination
(:func:`stop_headline`): the API is named (its answer, or that it could not be reached), and
when rows are of unknown delivery, why (e.g. no answer to an earlier step attempt, then a 503)
and what to do about them at that API (``Destination.delivery_advice``: LINE's retry key is
not MAAC's import key, CAPI's deduplication_key or LinkedIn's repeated ADD).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import dagster as dg

from line_exports.http import ApiError

if TYPE_CHECKING:
    from line_exports.destination import DeliveryReport

API_NAMES = {
    "maac": "MAAC API",
    "line_messaging": "LINE Messaging API",
    "line_conversion": "LINE Conversion API",
    "linkedin": "LinkedIn API",
}
"""The API behind each destination (``Destination.type_name``), as a headline names it."""

API_WORDS = {
    "maac": "MAAC",
    "line_messaging": "LINE",
    "line_conversion": "LINE Conversion API",
    "linkedin": "LinkedIn",
}
"""The word a message that names the API contains (``LINE push failed: ...`` names LINE's)."""

NOT_REACHED = ("connection refused", "host name not resolved", "connect timed out")
"""Connection failures that prove the request never reached the API."""
_CHAIN_LIMIT = 12


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during (``raise ... from None`` keeps
    ``__context__``), nearest first, each once."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < _CHAIN_LIMIT:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return seen


def _api_error(exc: BaseException) -> ApiError | None:
    return next((e for e in _chain(exc) if isinstance(e, ApiError)), None)


def _address(errors: list[BaseException]) -> str | None:
    """``host:port`` of the connection an error of the HTTP client (urllib3) or of the push
    loop (aiohttp) was about."""
    for error in errors:
        host = getattr(error, "host", None)  # aiohttp's ClientConnectorError
        port = getattr(error, "port", None)
        if host is None:
            holder = getattr(error, "conn", None) or getattr(error, "pool", None)  # urllib3
            host, port = getattr(holder, "host", None), getattr(holder, "port", None)
        if isinstance(host, str) and host:
            shown = f"[{host}]" if ":" in host else host
            return f"{shown}:{port}" if port else shown
    return None


def _why(errors: list[BaseException]) -> str:
    """What went wrong with the connection, in a few words."""
    for error in errors:
        name = type(error).__name__
        if isinstance(error, socket.gaierror) or name in (
            "NameResolutionError",
            "ClientConnectorDNSError",
        ):
            return "host name not resolved"
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, ConnectionResetError):
            return "connection reset"
    for error in errors:
        name = type(error).__name__
        if name == "ReadTimeoutError" or isinstance(error, TimeoutError):
            return "no answer in time"
        if name == "ConnectTimeoutError":
            return "connect timed out"
        if name in ("ProtocolError", "ServerDisconnectedError", "ClientPayloadError"):
            return "connection cut before its answer"
        if isinstance(error, OSError) and error.strerror:
            return error.strerror.lower()
    return "connection failed"


def host_trouble(exc: BaseException, api: str) -> str | None:
    """``"<api> at <host:port> could not be reached (connection refused)"`` when ``exc`` (or
    an error it was raised from) is an :class:`ApiError` that got no answer; ``did not answer``
    when the request may have reached it (a timeout after sending, a cut connection). None when
    the API answered, or no such error is in the chain. Host and port only: no path, query,
    user or secret."""
    error = _api_error(exc)
    if error is None or error.status is not None:
        return None
    chain = _chain(exc)
    below = chain[chain.index(error) + 1 :]
    if not below:
        return None  # no network error under it (e.g. a job that was not ready in time)
    where, why = _address(below), _why(below)
    at = f"{api} at {where}" if where else api
    never = any(isinstance(e, ApiError) and not e.reached for e in chain)
    if never or why in NOT_REACHED:
        return f"{at} could not be reached ({why})"
    return f"{at} did not answer ({why})"


def with_host(text: str, exc: BaseException, type_name: str) -> str:
    """``text`` (``"<export>: <message>"``) with :func:`host_trouble` put after the export's
    name when it applies."""
    trouble = host_trouble(exc, API_NAMES.get(type_name, type_name))
    if trouble is None:
        return text
    name, sep, rest = text.partition(": ")
    return f"{name}: {trouble}: {rest}" if sep else f"{trouble}: {text}"


def last_attempt(context: dg.AssetExecutionContext) -> tuple[bool, int]:
    """(whether this is the step's last attempt, its ``max_retries``) under the retry policy
    Dagster applies to it (the asset's, else the job's ``op_retry_policy``; none: 0)."""
    policy = context.job_def.get_retry_policy_for_handle(context.op_handle)
    retries = policy.max_retries if policy is not None else 0
    return context.retry_number >= retries, retries


def final_failure(name: str, exc: Exception, retries: int) -> dg.Failure:
    """On the last attempt: ``exc`` as a ``dg.Failure`` Dagster does not retry, so its
    description, with how many attempts it took, is the run's headline (metadata kept).

    A ``dg.Failure`` keeps its description; any other error is named with its type (its stack
    stays on the failure's cause)."""
    if isinstance(exc, dg.Failure):
        text, metadata = exc.description or f"{name}: failed", exc.metadata
    else:
        text, metadata = f"{name}: {type(exc).__name__}: {exc}", None
    if retries:
        text += (
            f" (gave up after {retries + 1} attempts of the step: its retry_policy allows "
            f"{retries} {'retry' if retries == 1 else 'retries'})"
        )
    return dg.Failure(description=text, metadata=metadata, allow_retries=False)


def _answered(exc: BaseException) -> ApiError | None:
    """The :class:`ApiError` in ``exc``'s chain when the API answered it (an HTTP status)."""
    error = _api_error(exc)
    return error if error is not None and error.status is not None else None


def unknown_reasons(report: DeliveryReport) -> list[str]:
    """Why rows of ``report`` are of unknown delivery: each distinct reason once, first first."""
    seen: dict[str, None] = {}
    for frame in report.unknown:
        seen.update(dict.fromkeys(str(m) for m in frame["message"].tolist()))
    return list(seen)


def stop_headline(
    text: str,
    exc: BaseException,
    type_name: str,
    report: DeliveryReport,
    unknown: int,
    advice: str,
) -> str:
    """The headline of a run ``exc`` stopped during delivery (``text``: ``"<export>:
    <message>"``; ``report``: what was done; ``unknown``: its rows of unknown delivery).

    * The API could not be reached, or did not answer: :func:`with_host` names it and its
      ``host:port``.
    * It answered, and the message does not name it (a destination that passed the API's
      error on as it came): ``<API> stopped the run:`` goes before the message.
    * Rows of unknown delivery: how many, why when the message does not say it already (the
      first reason, e.g. ``no answer to 1 earlier attempt(s), then LinkedIn answered 503 ...``),
      and ``advice``, what to do about them at this API (``Destination.delivery_advice``).
    """
    api = API_NAMES.get(type_name, type_name)
    said = with_host(text, exc, type_name)
    if said == text and _answered(exc) is not None:
        word = API_WORDS.get(type_name, api)
        name, sep, rest = text.partition(": ")
        if word not in (rest if sep else text):
            said = f"{name}: {api} stopped the run: {rest}" if sep else f"{api}: {text}"
    if unknown:
        reasons = unknown_reasons(report)
        # The message may say why already (MAAC, CAPI, LinkedIn stop with the request's reason).
        why = f" ({reasons[0]})" if reasons and not any(r in said for r in reasons) else ""
        said += f"; {unknown:,} rows of unknown delivery{why}: {advice}"
    return said
