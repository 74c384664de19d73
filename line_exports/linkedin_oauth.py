"""LinkedIn's OAuth 2.0 endpoints and token exchange, with no Dagster or pandas: shared by the
LinkedIn destination (refreshing an access token) and ``line-exports linkedin-auth`` (the
three-legged flow), which loads only this.

Source: learn.microsoft.com, LinkedIn Authorization Code Flow (3-legged OAuth) and
Programmatic Refresh Tokens; Marketing API versioning (``LinkedIn-Version: YYYYMM``).
"""

from __future__ import annotations

import re
from typing import Any

from line_exports.http import ApiError, HttpClient

API_URL = "https://api.linkedin.com"
OAUTH_URL = "https://www.linkedin.com"
TOKEN_PATH = "/oauth/v2/accessToken"
AUTHORIZE_PATH = "/oauth/v2/authorization"
DEFAULT_VERSION = "202610"
"""A recent monthly Marketing API version; LinkedIn sunsets each about a year after release."""
RESTLI_PROTOCOL = "2.0.0"
SCOPES = ("rw_dmp_segments", "r_ads")
AUTH_COMMAND = "line-exports linkedin-auth"


class LinkedInAuthError(ApiError):
    """The credentials cannot give an access token; the message says what to do."""


def exchange_token(http: HttpClient, form: dict[str, str]) -> dict[str, Any]:
    """POST the token endpoint (form-encoded, as LinkedIn requires); explain ``invalid_grant``."""
    try:
        return http.request(
            "POST",
            TOKEN_PATH,
            endpoint="oauth_token",
            data=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).json()
    except ApiError as exc:
        error = _oauth_error(exc.body)
        if error == "invalid_grant":
            what = (
                "refresh token"
                if form.get("grant_type") == "refresh_token"
                else "authorization code"
            )
            raise LinkedInAuthError(
                f"LinkedIn refused the {what} (invalid_grant: it expired, was revoked, or was issued to another "
                f"app). Authorize again: run `{AUTH_COMMAND}` and store the new LINKEDIN_REFRESH_TOKEN.",
                status=exc.status,
                body=exc.body,
            ) from None
        if error == "invalid_client":
            raise LinkedInAuthError(
                "LinkedIn refused the client credentials (invalid_client): check LINKEDIN_CLIENT_ID and "
                "LINKEDIN_CLIENT_SECRET.",
                status=exc.status,
                body=exc.body,
            ) from None
        raise


def _oauth_error(body: str) -> str | None:
    match = re.search(r'"error"\s*:\s*"([a-z_]+)"', body or "")
    return match.group(1) if match else None
