"""Realistic sample tables for every destination, with some invalid rows on purpose.

The embedded DuckDB file is filled with these on first use so a newcomer can run every export
with no account anywhere. Generation is seeded (the same rows every time) and vectorized, so the
benchmarks can ask for millions of rows of the same shape.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

SAMPLE_ROWS = 3000
INVALID_EVERY = 100  # one row in 100 carries each deliberate mistake

FIRST_NAMES = np.array(
    ["Yuki", "Haruto", "Mei", "Wei", "Ploy", "Somchai", "Aiko", "Chen", "Niran", "Sakura"]
)
LAST_NAMES = np.array(
    [
        "Sato",
        "Suzuki",
        "Takahashi",
        "Lin",
        "Chang",
        "Srisai",
        "Wong",
        "Tanaka",
        "Huang",
        "Kaewmanee",
    ]
)
TITLES = np.array(["Data Engineer", "Marketing Manager", "CRM Lead", "Analyst", "Product Owner"])
COMPANIES = np.array(
    ["Sakura Foods", "Taipei Tech", "Bangkok Retail", "Osaka Motors", "Kaohsiung Labs"]
)
COUNTRIES = np.array(["jp", "tw", "th", "us", "sg"])
TAGS = np.array(["vip", "newsletter", "apple product interested", "", "coupon_2026"])
DOMAINS = np.array(["example.jp", "example.com.tw", "example.co.th", "example.com"])


def _hex_ids(rng: np.random.Generator, n: int, nbytes: int = 16) -> list[str]:
    blob = rng.bytes(nbytes * n).hex()
    width = nbytes * 2
    return [blob[i * width : (i + 1) * width] for i in range(n)]


def line_uids(n: int, seed: int = 1) -> np.ndarray:
    """LINE user IDs: ``U`` and 32 lowercase hex digits."""
    rng = np.random.default_rng(seed)
    return np.array(["U" + h for h in _hex_ids(rng, n)], dtype=object)


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    out = []
    for h in _hex_ids(rng, n):
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}")
    return np.array(out, dtype=object)


def _invalid_mask(n: int, phase: int) -> np.ndarray:
    return (np.arange(n) % INVALID_EVERY) == phase


def members(n: int = SAMPLE_ROWS, seed: int = 1) -> pd.DataFrame:
    """MAAC members, with the example query's columns (``display_name`` for the LINE name)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    uids = line_uids(n, seed)
    first = FIRST_NAMES[idx % len(FIRST_NAMES)]
    birthdays = pd.Timestamp("1970-01-01") + pd.to_timedelta(rng.integers(0, 18000, n), unit="D")
    frame = pd.DataFrame(
        {
            "line_uid": uids,
            "customer_id": np.char.add("C", np.char.zfill(idx.astype(str), 7)).astype(object),
            "display_name": first.astype(object),
            "gender": np.where(idx % 3 == 0, "male", np.where(idx % 3 == 1, "female", None)),
            "email": np.char.add(
                np.char.add(np.char.lower(first.astype(str)), idx.astype(str)), "@example.jp"
            ).astype(object),
            "mobile": np.char.add("+81901", np.char.zfill((idx % 10**7).astype(str), 7)).astype(
                object
            ),
            "tags": TAGS[idx % len(TAGS)].astype(object),
            "birthday": birthdays.strftime("%Y-%m-%d").to_numpy(dtype=object),
        }
    )
    frame.loc[_invalid_mask(n, 3), "line_uid"] = "not-a-line-uid"
    frame.loc[_invalid_mask(n, 11), "birthday"] = "1985/04/06"
    frame.loc[_invalid_mask(n, 17), "gender"] = "unknown"
    frame.loc[_invalid_mask(n, 29), "email"] = "broken-email"
    return frame


def segment_users(n: int = SAMPLE_ROWS, seed: int = 2) -> pd.DataFrame:
    """LINE UIDs for a MAAC segment or a LINE audience, a few malformed."""
    frame = pd.DataFrame({"line_uid": line_uids(n, seed)})
    frame.loc[_invalid_mask(n, 5), "line_uid"] = "U123"
    return frame


def conversion_events(n: int = SAMPLE_ROWS, seed: int = 3) -> pd.DataFrame:
    """LINE Conversion API events with the reference's 17 columns, raw email and phone."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    # LINE takes events from the last 90 days: date them within the 28 days before today.
    today = int(time.time()) // 86_400 * 86_400
    base = today - 28 * 86_400
    frame = pd.DataFrame(
        {
            "deduplication_key": np.char.add("evt-", idx.astype(str)).astype(object),
            "event_type": np.where(idx % 4 == 0, "page_view", "conversion").astype(object),
            "event_name": np.where(idx % 4 == 0, None, "purchase"),
            "source_type": "web",
            "event_timestamp": (base + (idx * 37) % (27 * 86_400)).astype("int64"),
            "url": np.char.add("https://shop.example.jp/item/", idx.astype(str)).astype(object),
            "referrer": "https://www.google.com/",
            "title": "Example shop",
            "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
            "ip_address": np.char.add("203.0.113.", (idx % 250).astype(str)).astype(object),
            "browser_id": _uuids(rng, n),
            "ifa": _uuids(rng, n),
            "click_id": np.char.add("click", idx.astype(str)).astype(object),
            "external_id": np.char.add("ext", idx.astype(str)).astype(object),
            "line_uid": line_uids(n, seed),
            "phone": np.char.add("+8180", np.char.zfill((idx % 10**8).astype(str), 8)).astype(
                object
            ),
            "email": np.char.add(np.char.add(" User", idx.astype(str)), "@Example.JP ").astype(
                object
            ),
        }
    )
    frame.loc[_invalid_mask(n, 7), "event_type"] = "purchase"
    frame.loc[_invalid_mask(n, 19), "url"] = "ftp://example.jp/"
    frame.loc[_invalid_mask(n, 23), "deduplication_key"] = "bad key with spaces"
    return frame


def linkedin_contacts(n: int = SAMPLE_ROWS, seed: int = 4) -> pd.DataFrame:
    """LinkedIn contacts: raw emails, device IDs, names, a few with no identifier at all."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    first = FIRST_NAMES[idx % len(FIRST_NAMES)].astype(object)
    last = LAST_NAMES[(idx // 3) % len(LAST_NAMES)].astype(object)
    frame = pd.DataFrame(
        {
            "email": np.char.add(np.char.add("Contact", idx.astype(str)), "@Example.com").astype(
                object
            ),
            "google_aid": np.where(idx % 5 == 0, _uuids(rng, n), None),
            "apple_idfa": np.where(idx % 7 == 0, np.char.lower(_uuids(rng, n).astype(str)), None),
            "first_name": first,
            "last_name": last,
            "title": TITLES[idx % len(TITLES)].astype(object),
            "company": COMPANIES[idx % len(COMPANIES)].astype(object),
            "country": COUNTRIES[idx % len(COUNTRIES)].astype(object),
        }
    )
    no_id = _invalid_mask(n, 9)
    frame.loc[no_id, ["email", "google_aid", "apple_idfa", "last_name"]] = None
    frame.loc[_invalid_mask(n, 21), "country"] = "JPN"
    return frame


def linkedin_companies(n: int = SAMPLE_ROWS, seed: int = 5) -> pd.DataFrame:
    """LinkedIn companies by name and domains, a few with none of them."""
    idx = np.arange(n)
    names = np.char.add(COMPANIES[idx % len(COMPANIES)], np.char.add(" ", idx.astype(str))).astype(
        object
    )
    domain = np.char.add(np.char.add("company", idx.astype(str)), ".").astype(str)
    frame = pd.DataFrame(
        {
            "company_name": names,
            "company_website_domain": np.char.add(domain, DOMAINS[idx % len(DOMAINS)]).astype(
                object
            ),
            "company_email_domain": np.char.add(domain, DOMAINS[idx % len(DOMAINS)]).astype(object),
        }
    )
    frame.loc[
        _invalid_mask(n, 13), ["company_name", "company_website_domain", "company_email_domain"]
    ] = None
    return frame


def line_recipients(n: int = SAMPLE_ROWS, seed: int = 6) -> pd.DataFrame:
    """LINE Messaging recipients with columns a push template can use."""
    idx = np.arange(n)
    frame = pd.DataFrame(
        {
            "user_id": line_uids(n, seed),
            "display_name": FIRST_NAMES[idx % len(FIRST_NAMES)].astype(object),
            "points": (idx * 7 % 1000).astype("int64"),
            "coupon_code": np.char.add("CP", np.char.zfill(idx.astype(str), 6)).astype(object),
        }
    )
    frame.loc[_invalid_mask(n, 15), "user_id"] = "Uzzzz"
    return frame


SAMPLE_TABLES = {
    "line_members": members,
    "segment_users": segment_users,
    "conversion_events": conversion_events,
    "linkedin_contacts": linkedin_contacts,
    "linkedin_companies": linkedin_companies,
    "line_recipients": line_recipients,
}
