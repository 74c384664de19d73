"""What the fake LINE channel holds, and LINE's published limits the sandbox enforces."""

from __future__ import annotations

import re
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from line_exports.sandbox.core import Sandbox

CLIENTS = {"1650000001": "sandbox-line-channel-secret"}  # channel ID -> channel secret
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024
TOKEN_SECONDS = 30 * 24 * 3600
TOKENS_PER_CHANNEL = 30
STATELESS_SECONDS = 899  # the spec's example answer; 15 minutes
RETRY_KEY_SECONDS = 24 * 3600
AUDIENCE_JSON_MAX = 10_000
AUDIENCE_FILE_MAX = 1_500_000
AUDIENCE_MAX = 1_000
AUDIENCE_CONCURRENT_JOBS = 10
AUDIENCE_RETENTION_SECONDS = 180 * 24 * 3600
USER_ID = re.compile(r"U[0-9a-f]{32}")
PUSH_TO = re.compile(r"[UCR][0-9a-f]{32}")
IFA = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
UNIT = re.compile(r"[a-zA-Z0-9_]{1,30}")
LIMITS = {  # key -> (requests, per seconds), as LINE publishes them
    "push": (2000, 1.0),
    "multicast": (200, 1.0),
    "audience": (60, 60.0),
    "token": (370, 1.0),
    "validate": (2000, 1.0),
}


@dataclass
class Job:
    id: int
    audience_id: int
    description: str
    created: float
    finish_at: float
    count: int
    ids: list[str] | None
    failed_type: str | None = None
    """``AudienceGroupJobFailedType`` of a job that ends FAILED (``manage-audience.yml``:
    jobStatus QUEUED / WORKING / FINISHED / FAILED); its IDs never join the audience."""

    def status(self, now: float) -> str:
        if now >= self.finish_at:
            return "FAILED" if self.failed_type else "FINISHED"
        return "QUEUED" if now < self.created + (self.finish_at - self.created) / 3 else "WORKING"


@dataclass
class Audience:
    id: int
    description: str
    is_ifa: bool
    created: int
    ids: set[str] = field(default_factory=set)
    jobs: list[Job] = field(default_factory=list)
    permission: str | None = "READ_WRITE"  # optional in manage-audience.yml: None omits it

    def settle(self, now: float) -> None:
        """Apply finished jobs (LINE adds IDs asynchronously)."""
        for job in self.jobs:
            if job.ids is not None and now >= job.finish_at:
                if not job.failed_type:
                    self.ids.update(job.ids)
                job.ids = None

    def view(self, now: float) -> dict[str, Any]:
        self.settle(now)
        ready = any(j.ids is None and j.count > 0 and not j.failed_type for j in self.jobs)
        # every job ended FAILED: so has the audience (AudienceGroupStatus FAILED, failedType)
        failed = [j for j in self.jobs if j.ids is None and j.failed_type]
        if failed and len(failed) == len(self.jobs):
            return {**self._view(now, "FAILED"), "failedType": failed[-1].failed_type}
        return self._view(now, "READY" if ready else "IN_PROGRESS")

    def _view(self, now: float, status: str) -> dict[str, Any]:
        return {
            "audienceGroupId": self.id,
            "createRoute": "MESSAGING_API",
            "type": "UPLOAD",
            "description": self.description,
            "status": status,
            "audienceCount": len(self.ids),
            "created": self.created,
            **({"permission": self.permission} if self.permission is not None else {}),
            "isIfaAudience": self.is_ifa,
            "expireTimestamp": self.created + AUDIENCE_RETENTION_SECONDS,
        }


@dataclass
class LineStore:
    """What the fake LINE channel holds."""

    clients: dict[str, str] = field(default_factory=lambda: dict(CLIENTS))
    issued: dict[str, float] = field(default_factory=dict)  # short-lived token -> expires (epoch)
    issued_by_client: dict[str, deque[str]] = field(default_factory=dict)
    stateless: dict[str, float] = field(default_factory=dict)  # stateless token -> expires
    stateless_issued: int = 0
    retry_keys: dict[str, tuple[float, str, list[dict[str, Any]]]] = field(default_factory=dict)
    """Accepted retry keys: (accepted at, request ID, push's ``sentMessages``)."""
    retry_key_first_seen: dict[str, float] = field(default_factory=dict)
    """When each retry key was first sent (the sandbox clock): its 24 hours start there."""
    inbox: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)  # 200, but nothing arrives (LINE's rule)
    unknown_users: set[str] = field(default_factory=set)  # not in this channel: 400
    multicast_error_names_index: bool = True  # LINE names the bad ``to[i]`` in its message
    audiences: dict[int, Audience] = field(default_factory=dict)
    audience_permission: str | None = "READ_WRITE"  # what new audiences answer (None: omitted)
    failing_upload_jobs: list[str] = field(default_factory=list)
    """``AudienceGroupJobFailedType`` of the next upload jobs, one each: they end FAILED
    (``PUT /_sandbox/line_messaging/audience_job_failures``)."""
    quota_limit: int | None = None  # the month's target limit (None: type "none", no limit)
    quota_used: int = 0  # messages sent this month (one per recipient)
    pushes: int = 0
    multicasts: int = 0
    conflicts: int = 0
    tokens_issued: int = 0
    next_id: int = 1_000_000_000_000
    bot_user_id: str = field(default_factory=lambda: "U" + secrets.token_hex(16))
    """The channel's bot ``userId`` (``GET /v2/bot/info``): each sandbox is another channel."""

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def accepted_key(self, key: str, now: float) -> tuple[float, str, list[dict[str, Any]]] | None:
        """The accepted request of retry ``key`` while LINE still honours it, else None (and
        the key starts anew). LINE, "Retry failed API requests": the key is valid for 24 hours
        from the first request that carried it; a key it accepted answers 409 within them.
        ``now`` is the sandbox clock (``/_sandbox/clock`` moves it); call under its lock."""
        first = self.retry_key_first_seen.setdefault(key, now)
        if now - first >= RETRY_KEY_SECONDS:
            self.retry_key_first_seen[key] = now
            self.retry_keys.pop(key, None)
            return None
        return self.retry_keys.get(key)

    def received(self, recipient: str) -> list[list[dict[str, Any]]]:
        """Every ``messages`` array that reached ``recipient``, in order."""
        return self.inbox.get(recipient, [])

    def expire_stateless(self) -> None:
        """Let every stateless token run out (as 15 minutes later; they cannot be revoked)."""
        for token in self.stateless:
            self.stateless[token] = 0.0

    def revoke_issued(self) -> None:
        """Revoke every short-lived token (as if they expired or were revoked)."""
        self.issued.clear()
        self.issued_by_client.clear()


def store_of(sandbox: Sandbox) -> LineStore:
    return sandbox.store("line_messaging", LineStore)
