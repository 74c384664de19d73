"""The receiver over a real uvicorn server on loopback: who gets a 200 and what is kept."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import requests

from line_exports.webhook.landing import land_source
from line_exports.webhook.signature import sign, verify
from line_exports.webhook.spool import SpoolReader

try:  # works whether or not line_exports_tests becomes a package
    from line_exports_tests.webhook_helpers import (
        LINE_EXAMPLE_BODY,
        LINE_EXAMPLE_SECRET,
        LINE_EXAMPLE_SIGNATURE,
        base_event,
        body_of,
        make_source,
        running_server,
        signed_headers,
    )
except ImportError:
    from webhook_helpers import (
        LINE_EXAMPLE_BODY,
        LINE_EXAMPLE_SECRET,
        LINE_EXAMPLE_SIGNATURE,
        base_event,
        body_of,
        make_source,
        running_server,
        signed_headers,
    )

SECRET = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINE_EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LINE_CHANNEL_SECRET_SHOP_OA", SECRET)


def _kept(spool: Path, source_id: str) -> list:
    with SpoolReader(spool) as reader:
        return list(reader.iter_all(source_id))


def test_line_published_signature_example_is_accepted(tmp_path: Path, monkeypatch) -> None:
    assert sign(LINE_EXAMPLE_SECRET, LINE_EXAMPLE_BODY) == LINE_EXAMPLE_SIGNATURE
    assert verify(LINE_EXAMPLE_SECRET, LINE_EXAMPLE_BODY, LINE_EXAMPLE_SIGNATURE)
    assert not verify(LINE_EXAMPLE_SECRET, LINE_EXAMPLE_BODY + b" ", LINE_EXAMPLE_SIGNATURE)
    monkeypatch.setenv("LINE_CHANNEL_SECRET_EXAMPLE", LINE_EXAMPLE_SECRET)
    source = make_source("example")
    spool = tmp_path / "spool.sqlite3"
    with running_server([source], spool) as url:
        resp = requests.post(
            f"{url}/v1/task/{source.source_id}",
            data=LINE_EXAMPLE_BODY,
            headers={"X-Line-Signature": LINE_EXAMPLE_SIGNATURE},
            timeout=5,
        )
    assert resp.status_code == 200  # empty events array = the console's Verify button
    kept = _kept(spool, source.source_id)
    assert len(kept) == 1
    assert kept[0].body == LINE_EXAMPLE_BODY  # byte for byte as received
    assert kept[0].event_count == 0 and kept[0].parse_error is None


@pytest.mark.parametrize("header", ["x-line-signature", "X-Line-Signature", "X-LINE-SIGNATURE"])
def test_signature_header_name_is_case_insensitive(tmp_path: Path, header: str) -> None:
    source = make_source()
    body = body_of([base_event("follow", 1, follow={"isUnblocked": True})])
    spool = tmp_path / "spool.sqlite3"
    with running_server([source], spool) as url:
        resp = requests.post(
            f"{url}/v1/task/{source.source_id}",
            data=body,
            headers=signed_headers(SECRET, body, header),
            timeout=5,
        )
    assert resp.status_code == 200
    assert [r.body for r in _kept(spool, source.source_id)] == [body]


def test_tampered_and_missing_signatures_are_refused_and_nothing_stored(tmp_path: Path) -> None:
    source = make_source()
    body = body_of([base_event("message", 1, message={"id": "1", "type": "text", "text": "hi"})])
    good = sign(SECRET, body)
    flipped = ("A" if good[0] != "A" else "B") + good[1:]
    cases = [
        (body.replace(b'"hi"', b'"ho"'), {"x-line-signature": good}, 403),  # tampered body
        (body, {"x-line-signature": flipped}, 403),  # tampered signature
        (body, {"x-line-signature": sign("another-channel-secret", body)}, 403),
        (body, {"x-line-signature": "not base64 at all é"}, 403),
        (body, {}, 401),  # missing
        (body, {"x-line-signature": ""}, 401),
    ]
    spool = tmp_path / "spool.sqlite3"
    with running_server([source], spool) as url:
        for data, headers, expected in cases:
            resp = requests.post(
                f"{url}/v1/task/{source.source_id}", data=data, headers=headers, timeout=5
            )
            assert resp.status_code == expected, (headers, resp.text)
        time.sleep(1.3)  # reject counters are flushed by the writer within ~1s
    assert _kept(spool, source.source_id) == []
    result = land_source(source, spool_path=spool, target_url=f"sqlite:///{tmp_path / 'w.sqlite'}")
    assert result.requests_read == 0 and result.events_landed == 0
    assert result.bad_signatures == len(cases)
    assert result.rejects_by_reason == {
        "bad_signature": 3,  # read to the end, then the HMAC differs
        "malformed_signature": 1,  # refused before the body was read
        "missing_signature": 2,
    }


def test_unknown_source_is_404_and_nothing_stored(tmp_path: Path) -> None:
    source = make_source()
    body = body_of([base_event("unfollow", 1)])
    spool = tmp_path / "spool.sqlite3"
    with running_server([source], spool) as url:
        for path in (str(uuid.uuid4()), "not-a-uuid", source.source_id + "0"):
            resp = requests.post(
                f"{url}/v1/task/{path}", data=body, headers=signed_headers(SECRET, body), timeout=5
            )
            assert resp.status_code == 404
        assert requests.get(f"{url}/v1/task/{source.source_id}", timeout=5).status_code == 405
        # Upper-case UUID of a known source is the same source.
        resp = requests.post(
            f"{url}/v1/task/{source.source_id.upper()}",
            data=body,
            headers=signed_headers(SECRET, body),
            timeout=5,
        )
        assert resp.status_code == 200
    with SpoolReader(spool) as reader:
        rows = reader._conn.execute("SELECT source_id FROM requests").fetchall()
        rejects = reader._conn.execute("SELECT COUNT(*) FROM rejects").fetchone()[0]
    assert rows == [(source.source_id,)] and rejects == 0


def test_oversize_body_is_413_declared_or_chunked(tmp_path: Path) -> None:
    source = make_source()
    limit = 2048
    big = body_of(
        [base_event("message", 1, message={"id": "1", "type": "text", "text": "x" * 4000})]
    )
    assert len(big) > limit
    spool = tmp_path / "spool.sqlite3"
    with running_server([source], spool, max_body_bytes=limit) as url:
        target = f"{url}/v1/task/{source.source_id}"
        resp = requests.post(target, data=big, headers=signed_headers(SECRET, big), timeout=5)
        assert resp.status_code == 413
        chunks = (big[i : i + 512] for i in range(0, len(big), 512))  # no Content-Length
        resp = requests.post(target, data=chunks, headers=signed_headers(SECRET, big), timeout=5)
        assert resp.status_code == 413
        small = body_of(
            [base_event("message", 2, message={"id": "2", "type": "text", "text": "ok"})]
        )
        assert len(small) <= limit
        resp = requests.post(target, data=small, headers=signed_headers(SECRET, small), timeout=5)
        assert resp.status_code == 200
    assert [r.body for r in _kept(spool, source.source_id)] == [small]


def test_malformed_json_with_valid_signature_is_kept_with_error_flag(tmp_path: Path) -> None:
    source = make_source()
    bodies = [
        b'{"destination":"U1","events":[{"type":',
        b'{"destination":"U1","events":{}}',
        b"\xff\xfe",
    ]
    spool = tmp_path / "spool.sqlite3"
    with running_server([source], spool) as url:
        for body in bodies:
            resp = requests.post(
                f"{url}/v1/task/{source.source_id}",
                data=body,
                headers=signed_headers(SECRET, body),
                timeout=5,
            )
            assert resp.status_code == 200
    kept = _kept(spool, source.source_id)
    assert [k.body for k in kept] == bodies
    assert all(k.parse_error for k in kept)
    result = land_source(source, spool_path=spool, target_url=f"sqlite:///{tmp_path / 'w.sqlite'}")
    assert result.raw_rows_landed == 3 and result.parse_errors == 3 and result.events_landed == 0


def test_source_without_secret_in_env_is_503_not_stored(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LINE_CHANNEL_SECRET_SHOP_OA")
    source = make_source()
    body = body_of([])
    spool = tmp_path / "spool.sqlite3"
    with running_server([source], spool) as url:
        resp = requests.post(
            f"{url}/v1/task/{source.source_id}",
            data=body,
            headers=signed_headers(SECRET, body),
            timeout=5,
        )
        assert resp.status_code == 503
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    assert _kept(spool, source.source_id) == []


def test_spool_holding_raw_bodies_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """Spool, its WAL/SHM and the landing lock are 0600 in a 0700 folder under umask 022."""
    import os
    import stat

    from line_exports.webhook.spool import default_spool_path

    old = os.umask(0o022)
    try:
        source = make_source()
        spool = default_spool_path()  # <LINE_EXPORTS_HOME>/webhook/spool.sqlite3
        with running_server([source], spool) as url:
            body = body_of([base_event("follow", 1)])
            resp = requests.post(
                f"{url}/v1/task/{source.source_id}",
                data=body,
                headers=signed_headers(SECRET, body),
                timeout=5,
            )
            assert resp.status_code == 200
            land_source(source, spool_path=spool, target_url=f"sqlite:///{tmp_path / 'w.sqlite'}")
            files = [p for p in spool.parent.iterdir() if p.is_file()]
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    finally:
        os.umask(old)
    assert stat.S_IMODE(spool.parent.stat().st_mode) == 0o700
    assert {"spool.sqlite3", "spool.sqlite3-wal", f"land-{source.source_id}.lock"} <= set(modes)
    assert set(modes.values()) == {0o600}, modes
