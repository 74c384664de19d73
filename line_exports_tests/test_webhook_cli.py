"""``webhook new-source | serve | land`` and the sources file, incl. a SIGKILL of a served receiver."""

from __future__ import annotations

import argparse
import json
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from line_exports.webhook.cli import main, register
from line_exports.webhook.config import SourceConfigError, load_sources, parse_sources

try:  # works whether or not line_exports_tests becomes a package
    from line_exports_tests.receiver_process import (
        kill,
        start_receiver,
        wait_healthy,
        write_sources,
    )
    from line_exports_tests.webhook_helpers import base_event, body_of, free_port, signed_headers
except ImportError:
    from receiver_process import kill, start_receiver, wait_healthy, write_sources
    from webhook_helpers import base_event, body_of, free_port, signed_headers

SECRET = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LINE_EXPORTS_HOME", str(home))
    monkeypatch.delenv("LINE_EXPORTS_WEBHOOK_SOURCES", raising=False)
    monkeypatch.delenv("LINE_EXPORTS_WEBHOOK_SPOOL", raising=False)
    return home


def test_register_adds_webhook_commands() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["webhook", "serve", "--port", "9000", "--workers", "3"])
    assert args.port == 9000 and args.workers == 3 and callable(args.func)
    args = parser.parse_args(["webhook", "new-source", "--name", "x_oa"])
    assert args.func.__name__ == "_new_source"


def test_new_source_prints_uuid4_and_url_and_writes_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = [
        "webhook",
        "new-source",
        "--name",
        "shop_oa",
        "--base-url",
        "https://hooks.example.com/",
    ]
    assert main([*argv, "--write", "--timezone", "Asia/Tokyo", "--schedule", "@daily"]) == 0
    out = capsys.readouterr().out
    source_id = out.split("source_id:")[1].split()[0]
    assert uuid.UUID(source_id).version == 4
    assert f"https://hooks.example.com/v1/task/{source_id}" in out
    assert "LINE_CHANNEL_SECRET_SHOP_OA" in out
    (source,) = load_sources()
    assert (source.source_id, source.timezone, source.schedule) == (
        source_id,
        "Asia/Tokyo",
        "@daily",
    )
    assert main(argv) == 2  # name taken
    assert main(["webhook", "new-source", "--name", "cafe_oa", "--write"]) == 0
    assert [s.name for s in load_sources()] == ["shop_oa", "cafe_oa"]


def test_sources_file_refuses_secrets_and_bad_ids() -> None:
    good = str(uuid.uuid4())
    with pytest.raises(SourceConfigError, match="environment"):
        parse_sources({"sources": [{"name": "a", "source_id": good, "channel_secret": "s"}]})
    with pytest.raises(SourceConfigError, match="v4"):
        parse_sources({"sources": [{"name": "a", "source_id": str(uuid.uuid1())}]})
    with pytest.raises(SourceConfigError, match="mode"):
        parse_sources({"sources": [{"name": "a", "source_id": good, "mode": "upsert"}]})
    with pytest.raises(SourceConfigError, match="unique"):
        parse_sources(
            {"sources": [{"name": "a", "source_id": good}, {"name": "b", "source_id": good}]}
        )
    (s,) = parse_sources({"sources": [{"name": "a", "source_id": good}]})
    assert s.channel_secret_env == "LINE_CHANNEL_SECRET_A" and s.mode == "append"


def _start(port: int, home: Path, sources: Path) -> subprocess.Popen[bytes]:
    proc = start_receiver(port, home, sources, SECRET, workers=2)
    if not wait_healthy(port, proc):
        kill(proc)
        raise RuntimeError("receiver did not come up")
    return proc


def test_served_receiver_survives_sigkill_without_losing_acknowledged_events(
    tmp_path: Path, _home: Path
) -> None:
    source_id = str(uuid.uuid4())
    sources = write_sources(tmp_path / "sources.yaml", source_id)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/task/{source_id}"

    def send(n: int) -> list[str]:
        events = [
            base_event("message", n * 10 + i, message={"id": str(n), "type": "text", "text": "x"})
            for i in range(10)
        ]
        body = body_of(events)
        resp = requests.post(url, data=body, headers=signed_headers(SECRET, body), timeout=5)
        return [e["webhookEventId"] for e in events] if resp.status_code == 200 else []

    proc = _start(port, _home, sources)
    try:
        with ThreadPoolExecutor(8) as pool:
            acked = [i for ids in pool.map(send, range(40)) for i in ids]
        kill(proc)  # SIGKILL, workers too: no graceful shutdown, no flush
        proc = _start(port, _home, sources)
        acked += send(1000)
    finally:
        kill(proc)
    assert len(acked) == 410

    target = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    argv = [
        "webhook",
        "land",
        "--target-url",
        target,
        "--data-dir",
        str(_home),
        "--sources",
        str(sources),
    ]
    assert main(argv) == 0
    assert main(argv) == 0  # second landing adds nothing
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT event_webhookeventid, COUNT(*) FROM line_oa_events_shop_oa GROUP BY 1")
        ).all()
    engine.dispose()
    counts = dict(rows)
    assert set(acked) <= set(counts) and set(counts.values()) == {1}


def test_land_prints_json_per_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - name: shop_oa\n    source_id: {uuid.uuid4()}\n")
    target = f"sqlite:///{tmp_path / 'w.sqlite'}"
    assert main(["webhook", "land", "--sources", str(sources), "--target-url", target]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert result["source"] == "shop_oa" and result["events_landed"] == 0
    assert main(["webhook", "land", "--sources", str(sources), "--source", "nope"]) == 2
