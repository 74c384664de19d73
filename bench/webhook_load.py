"""Load test: signed LINE webhook traffic from concurrent clients while the receiver is SIGKILLed.

What it proves: every event that got a 200 ends up in the events table exactly once, even when
the receiver process group is killed with SIGKILL mid-way and restarted. Clients behave like
LINE: a failed delivery (connection error, 5xx) is retried with ``isRedelivery: true``, and a
few requests are delivered twice on purpose. Afterwards the spool is landed into a DuckDB file
and checked. Loopback only; every loop is bounded; the script stops by itself.

    .venv/bin/python bench/webhook_load.py --events 12000 --clients 32 --workers 2

``--receivers 2 --spool postgres`` runs two receivers (each ``--workers`` processes) on one
PostgreSQL spool, as on two machines behind a load balancer: clients alternate between them,
the first is SIGKILLed mid-way and restarted while the other takes its traffic. ``--spool
postgres`` starts a throw-away PostgreSQL server on loopback with ``fsync`` on (Debian's
``postgresql`` package); ``--spool-url`` uses a server of your own instead.

    .venv/bin/python bench/webhook_load.py --events 12000 --clients 32 --workers 1 \
        --receivers 2 --spool postgres

``--attack slow`` measures something else: real signed LINE traffic while slow and hostile
clients (``bench/webhook_attack.py``: 3,000 connections trickling headers and 300 streaming
1 MiB bodies under a wrong signature) attack the same receiver, run with ``ulimit -n 1024``
as in the security review. It prints events/s and latency (p50/p99/max) of the real traffic,
first without and then during the attack, against LINE's webhook timeout of 2 s
(``request_timeout`` in https://developers.line.biz/en/docs/messaging-api/check-webhook-error-statistics/),
and checks that every acknowledged event lands exactly once.

    .venv/bin/python bench/webhook_load.py --attack slow --workers 2 --attack-seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from line_exports.webhook.config import WebhookSource
from line_exports.webhook.landing import LandingResult, land_source
from line_exports.webhook.signature import sign

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine  # noqa: E402

SECRET = "bench-secret-" + "0" * 19
DESTINATION = "U" + "0" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_source(work: Path) -> tuple[WebhookSource, Path]:
    """The benchmark's source and a sources file naming it."""
    source = WebhookSource(
        name="bench_oa",
        source_id=str(uuid.uuid4()),
        channel_secret_env="LINE_CHANNEL_SECRET_BENCH_OA",
    )
    sources_file = work / "sources.yaml"
    sources_file.write_text(f"sources:\n  - name: bench_oa\n    source_id: {source.source_id}\n")
    return source, sources_file


def land_and_count(
    source: WebhookSource, spool: str | Path, work: Path
) -> tuple[dict[str, int], LandingResult, float]:
    """Land the spool into a fresh DuckDB file: (webhookEventId -> rows, result, seconds)."""
    started = time.monotonic()
    target = f"duckdb:///{work / 'warehouse.duckdb'}"
    result = land_source(source, spool_path=spool, target_url=target)
    seconds = time.monotonic() - started
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        landed = dict(
            conn.execute(
                sa.text(
                    f"SELECT event_webhookeventid, COUNT(*) FROM {source.events_table} GROUP BY 1"
                )
            ).all()
        )
    engine.dispose()
    return landed, result, seconds


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


class Receiver:
    """The receiver as its own process group, so SIGKILL takes master and workers at once."""

    def __init__(
        self,
        port: int,
        home: Path,
        sources: Path,
        workers: int,
        nofile: int | None = None,
        spool_url: str | None = None,
    ) -> None:
        self.port, self.home, self.sources, self.workers = port, home, sources, workers
        self.nofile, self.spool_url = nofile, spool_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        env = {**os.environ, "LINE_CHANNEL_SECRET_BENCH_OA": SECRET}
        cmd = [
            sys.executable, "-m", "line_exports.webhook.cli", "webhook", "serve",
            "--port", str(self.port), "--workers", str(self.workers),
            "--data-dir", str(self.home), "--sources", str(self.sources),
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        if self.spool_url:
            cmd += ["--spool-url", self.spool_url]
        if self.nofile:  # soft and hard limit, as on a host with `ulimit -n 1024`
            cmd = ["sh", "-c", f'ulimit -n {self.nofile} && exec "$@"', "serve", *cmd]
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=0.5).ok:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError("receiver did not come up")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def make_requests(total: int, rng: random.Random) -> list[list[dict[str, Any]]]:
    """Unique events grouped 1-5 per request, as LINE batches them."""
    kinds = ["message", "follow", "postback", "unfollow", "beacon", "memberJoined"]
    out: list[list[dict[str, Any]]] = []
    n = 0
    while n < total:
        size = min(rng.randint(1, 5), total - n)
        batch = []
        for _ in range(size):
            kind = rng.choice(kinds)
            event: dict[str, Any] = {
                "type": kind,
                "mode": "active",
                "timestamp": int(time.time() * 1000),
                "source": {"type": "user", "userId": f"U{n:032x}"},
                "webhookEventId": f"01LOAD{n:020d}",
                "deliveryContext": {"isRedelivery": False},
                "replyToken": uuid.uuid4().hex,
            }
            if kind == "message":
                event["message"] = {"id": str(n), "type": "text", "text": f"load {n}"}
            elif kind == "postback":
                event["postback"] = {"data": f"n={n}"}
            elif kind == "beacon":
                event["beacon"] = {"hwid": "d41d8cd98f", "type": "enter"}
            elif kind == "memberJoined":
                event["joined"] = {"members": [{"type": "user", "userId": f"U{n:032x}"}]}
            batch.append(event)
            n += 1
        out.append(batch)
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _group_pids(pid: int) -> list[int]:
    """The receiver's processes: the main one and its workers."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _peak_rss_mib(pids: list[int]) -> dict[int, float]:
    peaks = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return peaks


def _real_traffic(
    url: str, clients: int, seconds: float, first: int
) -> tuple[list[float], dict[str, int], Counter[str], float]:
    """LINE-shaped signed requests from ``clients`` threads for ``seconds``.

    Returns (latencies of 200s, webhookEventId -> acks, failures by kind, elapsed seconds).
    Like LINE, a client waits at most 2 s for an answer; a failed request is not retried here
    (its events simply do not count as acknowledged).
    """
    lock = threading.Lock()
    latencies: list[float] = []
    acked: dict[str, int] = {}
    failures: Counter[str] = Counter()
    counter = [first]
    deadline = time.monotonic() + seconds

    def client() -> None:
        http = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                n = counter[0]
                counter[0] += 5
            events = make_requests(5, random.Random(n))[0]
            for i, e in enumerate(events):
                e["webhookEventId"] = f"01ATK{n + i:021d}"
            body = json.dumps(
                {"destination": DESTINATION, "events": events}, separators=(",", ":")
            ).encode()
            headers = {"x-line-signature": sign(SECRET, body), "content-type": "application/json"}
            started = time.perf_counter()
            try:
                resp = http.post(url, data=body, headers=headers, timeout=2.0)
                kind = "" if resp.status_code == 200 else f"http_{resp.status_code}"
            except requests.Timeout:
                kind = "timeout_2s"
            except requests.RequestException:
                kind = "connection"
                http.close()
                http = requests.Session()
            elapsed = time.perf_counter() - started
            with lock:
                if kind:
                    failures[kind] += 1
                else:
                    latencies.append(elapsed)
                    for e in events:
                        acked[e["webhookEventId"]] = acked.get(e["webhookEventId"], 0) + 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 30)
    return latencies, acked, failures, time.monotonic() - started


def run_attack(args: argparse.Namespace) -> int:
    """Real LINE traffic without, then during, a slow-client attack on the same receiver."""
    work = Path(tempfile.mkdtemp(prefix="line-oa-attack-"))
    home = work / "home"
    source, sources_file = bench_source(work)
    port = free_port()
    path = f"/v1/task/{source.source_id}"
    url = f"http://127.0.0.1:{port}{path}"
    receiver = Receiver(port, home, sources_file, args.workers, nofile=args.nofile)
    receiver.start()
    assert receiver.proc is not None
    phases: dict[str, tuple[list[float], dict[str, int], Counter[str], float]] = {}
    attacker_stats: dict[str, int] = {}
    try:
        phases["without attack"] = _real_traffic(url, args.clients, args.attack_seconds / 2, 0)
        before = _peak_rss_mib(_group_pids(receiver.proc.pid))
        attack_total = args.attack_seconds + 8.0
        attacker = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("webhook_attack.py")),
             "--port", str(port), "--path", path, "--tricklers", str(args.tricklers),
             "--junk", str(args.junk), "--seconds", str(attack_total)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(5.0)  # let every attacking connection open
        phases["during attack"] = _real_traffic(url, args.clients, args.attack_seconds, 10_000_000)
        pids = _group_pids(receiver.proc.pid)
        open_files = {p: len(os.listdir(f"/proc/{p}/fd")) for p in pids}
        peaks = _peak_rss_mib(pids)
        out, _ = attacker.communicate(timeout=attack_total + 120)
        attacker_stats = json.loads(out.strip().splitlines()[-1])
    finally:
        receiver.kill()

    landed, _, _ = land_and_count(source, home / "webhook" / "spool.sqlite3", work)
    acked_all = {e for _, acked, _, _ in phases.values() for e in acked}
    missing = [e for e in acked_all if e not in landed]
    doubled = [e for e, n in landed.items() if n != 1]

    print(f"machine:              {machine()}")
    print(
        f"receiver:             webhook serve, {args.workers} workers, ulimit -n {args.nofile},"
        " defaults (header 5 s, body 10 s, cap = half the file handles, 16 MiB body budget)"
    )
    print(
        f"attack:               {args.tricklers} connections trickling headers + {args.junk}"
        " streaming 1 MiB under a wrong signature, each reconnecting when dropped"
    )
    print(f"attacker saw:         {attacker_stats}")
    print(f"real traffic:         {args.clients} LINE-like clients, 5 events/request, 2 s timeout")
    ok = True
    for name, (lat, acked, failures, seconds) in phases.items():
        events = len(acked)
        p50, p99 = _percentile(lat, 0.50) * 1000, _percentile(lat, 0.99) * 1000
        worst = max(lat) * 1000 if lat else float("nan")
        print(
            f"{name + ':':<22}{events / seconds:,.0f} events/s, {len(lat) / seconds:,.0f}"
            f" requests/s; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms;"
            f" failed {dict(failures) or 0}"
        )
        ok = ok and not failures and p99 < 2000
    print(f"receiver open files:  {open_files} (limit {args.nofile})")
    print(
        "receiver peak RSS:    "
        + ", ".join(
            f"pid {p}: {before.get(p, float('nan')):.0f} -> {m:.0f} MiB" for p, m in peaks.items()
        )
        + " (before -> after the attack; an idle worker holds the whole line_exports import)"
    )
    print(f"acked, not landed:    {len(missing)}; landed more than once: {len(doubled)}")
    ok = ok and not missing and not doubled
    print(
        "RESULT:               "
        + ("PASS" if ok else "FAIL")
        + " (every real request 200, p99 < 2 s)"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def run_load(args: argparse.Namespace, spool_url: str | None) -> int:
    """``--receivers`` receivers on one spool, clients alternating, the first SIGKILLed mid-way."""
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="line-oa-load-"))
    source, sources_file = bench_source(work)
    receivers = [
        Receiver(free_port(), work / f"home{i}", sources_file, args.workers, spool_url=spool_url)
        for i in range(args.receivers)
    ]
    urls = [f"http://127.0.0.1:{r.port}/v1/task/{source.source_id}" for r in receivers]
    batches = make_requests(args.events, rng)

    todo: queue.Queue[tuple[int, int]] = queue.Queue()  # (batch index, attempt)
    for i in range(len(batches)):
        todo.put((i, 0))
    lock = threading.Lock()
    acked: dict[str, int] = {}  # webhookEventId -> times acknowledged
    latencies: list[float] = []
    failures = {"connection": 0, "http": 0}
    outstanding = [len(batches)]
    given_up: list[int] = []
    deadline = time.monotonic() + args.deadline
    kill_after = int(args.events * args.kill_at)
    killed = threading.Event()
    downtime = [0.0]
    at_kill = [0.0, 0]  # seconds since the start, events acknowledged: the steady-state figure

    def client() -> None:
        http = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                if outstanding[0] == 0:
                    return
            try:
                index, attempt = todo.get(timeout=0.2)
            except queue.Empty:
                continue
            events = batches[index]
            if attempt:  # LINE marks redeliveries
                events = [{**e, "deliveryContext": {"isRedelivery": True}} for e in events]
            body = json.dumps(
                {"destination": DESTINATION, "events": events}, separators=(",", ":")
            ).encode()
            headers = {"x-line-signature": sign(SECRET, body), "content-type": "application/json"}
            # The load balancer: requests alternate; a retry goes to the next receiver.
            url = urls[(index + max(attempt, 0)) % len(urls)]
            started = time.perf_counter()
            try:
                resp = http.post(url, data=body, headers=headers, timeout=10)
                ok = resp.status_code == 200
                if not ok:
                    with lock:
                        failures["http"] += 1
            except requests.RequestException:
                ok = False
                with lock:
                    failures["connection"] += 1
                http.close()
                http = requests.Session()
            elapsed = time.perf_counter() - started
            if ok:
                with lock:
                    latencies.append(elapsed)
                    for e in events:
                        acked[e["webhookEventId"]] = acked.get(e["webhookEventId"], 0) + 1
                    if rng.random() < args.duplicate_rate and attempt >= 0:
                        todo.put((index, -1))  # deliver once more, unflagged, on purpose
                        outstanding[0] += 1
                    outstanding[0] -= 1
            elif attempt < 100:
                time.sleep(min(0.05 * (attempt + 1), 0.5))
                todo.put((index, max(attempt, 0) + 1))
            else:
                with lock:
                    given_up.append(index)
                    outstanding[0] -= 1

    def killer() -> None:
        while time.monotonic() < deadline:
            with lock:
                if len(acked) >= kill_after or outstanding[0] == 0:
                    break
            time.sleep(0.005)
        with lock:
            at_kill[:] = [time.monotonic() - started, len(acked)]
        receivers[0].kill()
        killed.set()
        down = time.monotonic()
        time.sleep(0.5)
        receivers[0].start()
        downtime[0] = time.monotonic() - down

    for receiver in receivers:
        receiver.start()
    load_before = load_average()
    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    kill_thread = threading.Thread(target=killer, daemon=True)
    kill_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic() + 5))
    send_seconds = time.monotonic() - started
    load_during = load_average()
    kill_thread.join(timeout=60)
    for receiver in receivers:
        receiver.kill()

    spool: str | Path = spool_url or work / "home0" / "webhook" / "spool.sqlite3"
    landed, result, land_seconds = land_and_count(source, spool, work)
    missing = [e for e in acked if e not in landed]
    doubled = [e for e, n in landed.items() if n != 1]
    sent_ids = {e["webhookEventId"] for b in batches for e in b}
    p50, p99 = _percentile(latencies, 0.50) * 1000, _percentile(latencies, 0.99) * 1000
    spool_kind = (
        "PostgreSQL (one shared spool, synchronous_commit=on, fsync on)"
        if spool_url
        else "SQLite WAL synchronous=FULL"
    )
    print(f"machine:              {machine()}")
    print(f"machine load:         before {load_before}; at the end {load_during}")
    print(
        f"receivers:            {args.receivers} x webhook serve --workers {args.workers},"
        f" spool {spool_kind}"
    )
    print(f"clients:              {args.clients} threads, keep-alive, 1-5 events per request")
    print(f"events sent (unique): {len(sent_ids)} in {len(batches)} requests")
    print(
        f"SIGKILL + restart:    receiver 1 after {kill_after} acked events; down"
        f" {downtime[0]:.2f}s; killed={killed.is_set()}"
    )
    print(
        f"failed deliveries:    {failures['connection']} connection errors, {failures['http']}"
        " non-200 (retried as redeliveries on the next receiver)"
    )
    print(
        f"acknowledged (200):   {len(acked)} unique events, {sum(acked.values())}"
        f" acknowledgements, {len(given_up)} requests given up"
    )
    print(
        f"throughput:           {len(acked) / send_seconds:.0f} events/s,"
        f" {len(latencies) / send_seconds:.0f} requests/s over {send_seconds:.1f}s"
    )
    if at_kill[0]:
        print(
            f"before the SIGKILL:   {at_kill[1] / at_kill[0]:.0f} events/s (all receivers up,"
            f" {at_kill[1]} events in {at_kill[0]:.1f}s)"
        )
    print(f"latency of 200s:      p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(
        f"landed:               {len(landed)} events in {land_seconds:.1f}s"
        f" ({result.duplicates_dropped} duplicates dropped)"
    )
    print(f"acked but missing:    {len(missing)}")
    print(f"landed more than once:{len(doubled):>2}")
    ok = (
        not missing
        and not doubled
        and killed.is_set()
        and len(acked) == len(sent_ids)
        and len(sent_ids) >= min(args.events, 10_000)
    )
    print("RESULT:               " + ("PASS" if ok else "FAIL"))
    if args.keep:
        print(f"data kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=12_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per receiver")
    parser.add_argument("--receivers", type=int, default=1, help="receivers sharing the spool")
    parser.add_argument(
        "--spool",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="sqlite: the embedded file (one receiver); postgres: a local PostgreSQL server",
    )
    parser.add_argument("--spool-url", help="a PostgreSQL spool of your own (SQLAlchemy URL)")
    parser.add_argument("--kill-at", type=float, default=0.4, help="fraction acked before SIGKILL")
    parser.add_argument("--duplicate-rate", type=float, default=0.03)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds before giving up")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temp data folder")
    parser.add_argument(
        "--attack", choices=["slow"], help="real traffic under a slow-client attack"
    )
    parser.add_argument("--attack-seconds", type=float, default=20.0)
    parser.add_argument("--tricklers", type=int, default=3000)
    parser.add_argument("--junk", type=int, default=300)
    parser.add_argument("--nofile", type=int, default=1024, help="receiver's ulimit -n (attack)")
    args = parser.parse_args(argv)
    if args.attack == "slow":
        if args.clients == 32:
            args.clients = 8
        return run_attack(args)
    if args.events < 10_000:
        print("note: the acceptance run uses at least 10,000 events", file=sys.stderr)
    if args.spool_url:
        return run_load(args, args.spool_url)
    if args.spool == "sqlite":
        if args.receivers != 1:
            parser.error("receivers on several machines need a PostgreSQL spool (--spool postgres)")
        return run_load(args, None)
    sys.path.insert(0, str(ROOT))
    from line_exports_tests import postgres_server

    reason = postgres_server.why_unavailable()
    if reason:
        print(f"cannot start PostgreSQL: {reason}", file=sys.stderr)
        return 2
    with postgres_server.postgres_server(fsync=True) as server:
        return run_load(args, postgres_server.new_database(server))


if __name__ == "__main__":
    raise SystemExit(main())
