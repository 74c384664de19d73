"""What an earlier step attempt settled, counted when a step retry stops while it resends the
requests that attempt left pending (VERIFY-13m F4).

A step retry sends the earlier attempt's pending requests first (:func:`.sending.left_by_earlier`);
when one of them fails again the attempt stops before its main pass, which is what counts the
rows the earlier attempt got accepted (resumed) and the rows LINE refused to it (sent again and
refused again). Without it those rows would be counted never sent, although LINE took or refused
them. Here they are counted from the ledger alone, with no request: accepted as resumed, refused
with LINE's recorded answer.
"""

from __future__ import annotations

from typing import Any

from line_exports.destinations.line_messaging.sending import Tally, named_recipient, settled
from line_exports.http import RetrySettings

REFUSED_BEFORE = "refused (no answer recorded)"
"""The reason of a refusal the ledger holds without LINE's message (as the settle step says)."""


def refused_reason(state: dict[str, Any]) -> str:
    """LINE's answer to a refused request, as the ledger recorded it: the whole refusal
    (``reason``: message and details) when kept, else its ``message``."""
    return str(state.get("reason") or state.get("message") or "") or REFUSED_BEFORE


def count_request_before(
    state: dict[str, Any] | None,
    key: str,
    row_numbers: list[int],
    recipients: list[str],
    tally: Tally,
    retry: RetrySettings,
) -> None:
    """One request (``key`` to ``recipients``, carrying ``row_numbers``) of this run scope by its
    ledger ``state``: accepted -> resumed; refused -> refused with LINE's recorded answer; held
    past its resend window -> delivery unknown (:func:`.sending.settled`); else (never sent, or
    pending and not sent again) nothing: the caller counts it."""
    if state is not None and state.get("state") == "refused":
        tally.refuse(row_numbers, recipients, refused_reason(state))
        return
    settled(state, key, row_numbers, tally, retry)


def count_group_before(
    numbers: list[int],
    recipients: list[str],
    key_of: Any,
    ledger: Any,
    skip: bool,
    tally: Tally,
    retry: RetrySettings,
    pending: dict[str, list[int]],
) -> None:
    """One multicast group (and the groups it was split into to isolate a refusal) by the
    ledger, the way :func:`.multicast.deliver_multicast` sent them: a refused group of one
    recipient, or without ``skip``, or whose message LINE refused, is refused whole; else the
    recipient LINE named is refused and the others were sent as their own group, or the group
    was halved. Groups left pending go to ``pending`` ({retry key: rows}) for
    :func:`.sending.count_not_resent`; groups never sent stay uncounted (unsent)."""
    groups = [(numbers, recipients)]
    while groups:
        numbers, recipients = groups.pop()
        if not recipients:
            continue
        key = key_of(recipients)
        state = ledger.done(key)
        if state is None:
            continue
        if state.get("state") != "refused":
            if state.get("state") == "pending":
                pending[key] = numbers
            count_request_before(state, key, numbers, recipients, tally, retry)
            continue
        reason = refused_reason(state)
        if len(recipients) == 1 or not skip or "messages[" in reason:
            tally.refuse(numbers, recipients, reason)
            continue
        i = named_recipient(reason, len(recipients))
        if i is not None:
            tally.refuse([numbers[i]], [recipients[i]], reason)
            groups.append((numbers[:i] + numbers[i + 1 :], recipients[:i] + recipients[i + 1 :]))
        else:
            half = len(recipients) // 2
            groups.append((numbers[half:], recipients[half:]))
            groups.append((numbers[:half], recipients[:half]))
