"""What to do about rows of unknown delivery to the LINE Messaging API, per target.

Quoted by the failure's headline, the ``delivery_unknown_advice`` metadata and the CLI's
warning (``Destination.delivery_advice``); the README quotes each, word for word.

* Messages (push, multicast, narrowcast, broadcast) go out with an ``X-Line-Retry-Key``
  (``messaging-api.yml``, the header of each send endpoint; LINE's "Retry failed API
  requests", developers.line.biz/en/docs/messaging-api/retrying-api-request: a request with a
  key LINE already accepted is executed once, every later one is answered 409). A re-execution
  resends under the same key only within the resend window (:func:`.sending.resend_window`,
  inside the key's 24 hours), so a resent message is never delivered twice.
* An audience upload (``manage-audience.yml``) has no retry key: a re-execution finds the
  audience by its name (never a second one) and uploads the IDs again; LINE counts an
  audience's users (``audienceCount``), so an ID uploaded twice adds no one.
* A rich menu link (``POST /v2/bot/user/{userId}/richmenu/{richMenuId}``, ``POST
  /v2/bot/richmenu/bulk/link``, ``/bulk/unlink``) sets which menu a user has, or none: making
  the same link or unlink again leaves the user as the first one did.
"""

from __future__ import annotations

MESSAGES = (
    "to settle them, re-execute the same run (same tick or partition) within the resend window "
    "(23 h 10 min at the default connection_timeout, less at a longer one): it resends them "
    "under the same X-Line-Retry-Key, and LINE answers 409 to a key it already took instead "
    "of sending again, so none is delivered twice; rows held longer are settled by hand: check "
    "whether the recipients got them (a sync_mode diff push or multicast lists them: "
    "`line-exports held EXPORT`), then `line-exports held EXPORT --resend` or `--delivered`"
)
"""Push, multicast, narrowcast and broadcast: the retry key, its 409 and the resend window."""

AUDIENCE = (
    "to settle them, re-execute the same run (same tick or partition): it finds the audience "
    "by its name (it never makes a second one) and uploads those IDs to it again, and an ID "
    "the audience already holds adds no one to its audienceCount"
)
"""An upload audience: the IDs again, to the same audience."""

RICH_MENU = (
    "to settle them, re-execute the same run (same tick or partition): it makes the same rich "
    "menu links and unlinks again, and each sets which menu a user has, so a user LINE already "
    "linked (or unlinked) stays as it is"
)
"""Rich menu links: linking (or unlinking) again sets the same menu."""

BY_TARGET = {
    "push_message": MESSAGES,
    "multicast_message": MESSAGES,
    "narrowcast": MESSAGES,
    "broadcast": MESSAGES,
    "audience": AUDIENCE,
    "rich_menu": RICH_MENU,
}
"""The advice of each ``target`` of a LINE Messaging export."""
