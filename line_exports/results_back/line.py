"""LINE Messaging: per-unit statistics, the account's delivery counts, an audience's state.

Sources (LINE's ``insight.yml`` and ``manage-audience.yml``; "Get statistics of sent messages"):

* ``GET /v2/bot/insight/message/event/aggregation?customAggregationUnit=&from=&to=``: how users
  interacted with pushes and multicasts sent with the export's ``custom_aggregation_units``
  (``overview.uniqueImpression``/``uniqueClick``, ``messages[].impression`` per bubble,
  ``clicks[]`` per URL). Dates are yyyyMMdd in UTC+9, ``to`` at most 30 days after ``from``;
  a figure under 20 (or from under 20 users) is ``null``; figures change for 14 days after a
  send. LINE grants this API per account, so it is pulled only when asked (``line_statistics``).
* ``GET /v2/bot/insight/message/delivery?date=``: messages the whole account sent that day
  (``apiPush``, ``apiMulticast``, ...), ``status`` ``unready`` until LINE has counted them.
* ``GET /v2/bot/audienceGroup/{id}``: an audience export's ``status`` and ``audienceCount``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg

from line_exports.destinations.line_messaging.client import LineMessagingResource, explain
from line_exports.http import ApiError
from line_exports.results_back.observed import RETRY, Observed, SentExport

JST = timezone(timedelta(hours=9))
MAX_PERIOD_DAYS = 30
DELIVERY_FIELDS = {  # getNumberOfMessageDeliveries field -> observation metadata
    "apiPush": "account_push_messages",
    "apiMulticast": "account_multicast_messages",
    "apiNarrowcast": "account_narrowcast_messages",
    "apiBroadcast": "account_broadcast_messages",
}


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, JST).strftime("%Y%m%d")


def observe(
    resource: LineMessagingResource, sent: SentExport, now: float, statistics: bool
) -> Observed:
    """Pull what LINE reports about ``sent`` as of ``now`` (epoch seconds)."""
    observed = Observed()
    client = resource.get_client(RETRY)
    client.begin_run()
    http = client.http
    unit = sent.get("custom_aggregation_units")
    audience_id = sent.get("audience_id")
    if audience_id is not None:
        try:
            group = client.audience(int(audience_id)).get("audienceGroup", {})
            observed.metadata.update(
                {
                    "audience_status": str(group.get("status")),
                    "audience_count": dg.MetadataValue.int(int(group.get("audienceCount") or 0)),
                }
            )
        except ApiError as exc:
            observed.problems.append(f"audience {audience_id}: {explain(exc)}")
        return observed
    sent_day = _day(sent.sent_at)
    try:
        counts = http.request(
            "GET", "/v2/bot/insight/message/delivery", endpoint="insight", params={"date": sent_day}
        ).json()
        observed.metadata["account_deliveries_date"] = sent_day
        observed.metadata["account_deliveries_status"] = str(counts.get("status"))
        for name, key in DELIVERY_FIELDS.items():
            if counts.get(name) is not None:
                observed.metadata[key] = dg.MetadataValue.int(int(counts[name]))
    except ApiError as exc:
        observed.problems.append(f"delivery counts for {sent_day}: {explain(exc)}")
    if statistics and unit:
        last = min(
            datetime.fromtimestamp(now, JST).date(),
            datetime.fromtimestamp(sent.sent_at, JST).date() + timedelta(days=MAX_PERIOD_DAYS),
        ).strftime("%Y%m%d")
        params = {"customAggregationUnit": unit, "from": sent_day, "to": last}
        try:
            stats = http.request(
                "GET",
                "/v2/bot/insight/message/event/aggregation",
                endpoint="insight",
                params=params,
            ).json()
            observed.metadata.update(unit_metadata(unit, sent_day, last, stats))
        except ApiError as exc:
            observed.problems.append(
                f"statistics of unit {unit!r}: {explain(exc)} (LINE grants per-unit "
                "statistics per account; set line_statistics=False if this one has none)"
            )
    return observed


def unit_metadata(unit: str, first: str, last: str, stats: dict[str, Any]) -> dict[str, Any]:
    """Observation metadata from a getStatisticsPerUnit answer: integers become plots; a
    figure LINE withholds (``null``: under 20) is left out and named in ``withheld``."""
    overview = stats.get("overview") or {}
    messages = stats.get("messages") or []
    clicks = stats.get("clicks") or []
    meta: dict[str, Any] = {
        "unit": unit,
        "unit_period": f"{first}-{last}",
    }
    withheld: list[str] = []

    def put(key: str, value: Any, what: str) -> None:
        if value is None:
            withheld.append(what)
        else:
            meta[key] = dg.MetadataValue.int(int(value))

    put("unique_impressions", overview.get("uniqueImpression"), "uniqueImpression")
    put("unique_clicks", overview.get("uniqueClick"), "uniqueClick")
    put("unique_media_played", overview.get("uniqueMediaPlayed"), "uniqueMediaPlayed")
    impressions = [m.get("impression") for m in messages]
    if impressions and all(v is not None for v in impressions):
        meta["impressions"] = dg.MetadataValue.int(sum(int(v) for v in impressions))
    elif impressions:
        withheld.append("messages[].impression")
    taps = [c.get("click") for c in clicks]
    if taps and all(v is not None for v in taps):
        meta["clicks"] = dg.MetadataValue.int(sum(int(v) for v in taps))
    elif taps:
        withheld.append("clicks[].click")
    if clicks:
        rows = [
            dg.TableRecord(
                {
                    "seq": int(c.get("seq") or 0),
                    "url": str(c.get("url")),
                    "click": c.get("click"),
                    "uniqueClick": c.get("uniqueClick"),
                    "uniqueClickOfRequest": c.get("uniqueClickOfRequest"),
                }
            )
            for c in clicks
        ]
        meta["clicks_by_url"] = dg.MetadataValue.table(
            rows,
            schema=dg.TableSchema(
                columns=[
                    dg.TableColumn("seq", "int"),
                    dg.TableColumn("url", "string"),
                    dg.TableColumn("click", "int"),
                    dg.TableColumn("uniqueClick", "int"),
                    dg.TableColumn("uniqueClickOfRequest", "int"),
                ]
            ),
        )
    if withheld:
        meta["withheld"] = dg.MetadataValue.json(
            {"fields": withheld, "why": "LINE answers null for a figure under 20 (privacy)"}
        )
    return meta
