"""The LINE ``coupon`` export of the push-stop tests (test_line_push_stop_answered,
test_line_push_stop_not_reached): ``ROWS`` users pushed one message each, or multicast ``GROUP``
users a request, with one HTTP retry after 1 s, run by Dagster with a step ``RetryPolicy``."""

from __future__ import annotations

from typing import Any

import dagster as dg

from line_exports import LineMessagingResource, SqlSource, build_export

ROWS = 6
GROUP = 2  # multicast recipients a request
TARGETS: dict[str, dict[str, Any]] = {
    "push_message": {"template_message": '{"type": "text", "text": "coupon {{code}}"}'},
    "multicast_message": {
        "template_message_multicast": '{"type": "text", "text": "coupon"}',
        "batch_size_multicast": GROUP,
    },
}
COUNTS = ("rows_refused_by_api", "rows_unsent", "rows_delivery_unknown", "rows_accepted")


def coupon_run(
    url: str, target: str, sync_mode: str, retry_policy: dg.RetryPolicy
) -> dg.ExecuteInProcessResult:
    """One run (its step retries included) of ``coupon`` against the LINE API at ``url``, one
    tick (2026-06-02T09:00Z); the run's failure is returned, not raised."""
    settings: dict[str, Any] = {
        "target": target,
        "sync_mode": sync_mode,
        "initial_retry_wait": 1,
        "max_retry": 1,
        "connection_timeout": 30,
        **TARGETS[target],
    }
    asset = build_export(
        "coupon",
        destination="line_messaging",
        query=(
            "select 'U' || lpad(printf('%x', range), 32, '0') as id, 'C' || range as code "
            f"from range({ROWS})"
        ),
        settings=settings,
        retry_policy=retry_policy,
    )
    return dg.materialize(
        [asset],
        resources={
            "line_messaging": LineMessagingResource(base_url=url, poll_seconds=0.05),
            "sql_source": SqlSource(),
        },
        tags={"dagster/scheduled_execution_time": "2026-06-02T09:00:00+00:00"},
        raise_on_error=False,
    )


def fates(meta: dict[str, Any]) -> dict[str, int]:
    """The run's rows by fate: refused, unsent, of unknown delivery, accepted."""
    return {name: meta[name] for name in COUNTS}


def expected(*, unsent: int = 0, unknown: int = 0, accepted: int = 0) -> dict[str, int]:
    """:func:`fates` as a test expects them (no row refused by LINE in these tests)."""
    return {
        "rows_refused_by_api": 0,
        "rows_unsent": unsent,
        "rows_delivery_unknown": unknown,
        "rows_accepted": accepted,
    }
