"""Slow and hostile webhook clients, as their own process (loopback only, bounded in time).

Two kinds of attacker, each a real TCP connection that reconnects as soon as it is dropped:

* ``--tricklers N``: send a request line, then one header line every 0.5 s, never the blank
  line that ends the headers (slowloris);
* ``--junk N``: send headers with a well-formed but wrong ``x-line-signature`` and stream a
  ``--body-bytes`` body in 64 KiB pieces spread over ``--body-seconds`` (slow POST).

It runs for ``--seconds`` and prints one JSON line of counts: connections made, dropped by
the server, answers by status, the longest a trickler was held. Used by
``bench/webhook_load.py --attack slow`` and by ``line_exports_tests/test_webhook_slow_clients.py``.

    python bench/webhook_attack.py --port 8080 --path /v1/task/<id> --tricklers 3000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import resource
import sys
import time
from collections import Counter

JUNK_SIGNATURE = base64.b64encode(b"\x00" * 32).decode()  # well formed, never right
_PIECE = 65536


class Attack:
    def __init__(self, host: str, port: int, path: str, until: float) -> None:
        self.host, self.port, self.path, self.until = host, port, path, until
        self.stats: Counter[str] = Counter()

    def running(self) -> bool:
        return time.monotonic() < self.until

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            pair = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout=5)
        except (OSError, asyncio.TimeoutError):
            self.stats["connect_failed"] += 1
            await asyncio.sleep(0.2)
            return None
        self.stats["connections"] += 1
        return pair

    async def trickle(self) -> None:
        while self.running():
            pair = await self._connect()
            if pair is None:
                continue
            reader, writer = pair
            started = time.monotonic()
            try:
                writer.write(f"POST {self.path} HTTP/1.1\r\nHost: x\r\n".encode())
                while self.running():
                    await writer.drain()
                    if reader.at_eof():
                        raise ConnectionResetError
                    await asyncio.sleep(0.5)
                    writer.write(b"X-Slow: 1\r\n")
            except (ConnectionError, OSError):
                held = int((time.monotonic() - started) * 1000)
                self.stats["trickler_dropped"] += 1
                self.stats["trickler_held_ms_max"] = max(self.stats["trickler_held_ms_max"], held)
            finally:
                writer.transport.abort()

    async def junk_body(self, size: int, seconds: float) -> None:
        piece = b"x" * _PIECE
        pause = seconds / max(1, size // _PIECE)
        while self.running():
            pair = await self._connect()
            if pair is None:
                continue
            reader, writer = pair
            try:
                writer.write(
                    (
                        f"POST {self.path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
                        f"x-line-signature: {JUNK_SIGNATURE}\r\n\r\n"
                    ).encode()
                )
                sent = 0
                while sent < size and self.running():
                    n = min(_PIECE, size - sent)
                    writer.write(piece[:n])
                    sent += n
                    await writer.drain()
                    if pause:
                        await asyncio.sleep(pause)
                if sent < size:
                    return
                line = await asyncio.wait_for(reader.readline(), timeout=30)
                parts = line.split(b" ")
                self.stats[f"junk_{parts[1].decode() if len(parts) > 1 else 'closed'}"] += 1
            except (ConnectionError, OSError, asyncio.TimeoutError):
                self.stats["junk_dropped"] += 1
            finally:
                writer.transport.abort()


async def run(args: argparse.Namespace) -> Counter[str]:
    attack = Attack(args.host, args.port, args.path, time.monotonic() + args.seconds)
    tasks = [asyncio.create_task(attack.trickle()) for _ in range(args.tricklers)]
    tasks += [
        asyncio.create_task(attack.junk_body(args.body_bytes, args.body_seconds))
        for _ in range(args.junk)
    ]
    await asyncio.sleep(args.seconds)
    await asyncio.sleep(1.0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return attack.stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="e.g. /v1/task/<source_id>")
    parser.add_argument("--tricklers", type=int, default=0)
    parser.add_argument("--junk", type=int, default=0)
    parser.add_argument("--body-bytes", type=int, default=1 << 20)
    parser.add_argument("--body-seconds", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.host not in {"127.0.0.1", "::1", "localhost"}:
        parser.error("loopback only")
    need = args.tricklers + args.junk + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard < need:
            parser.error(f"needs {need} file handles, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    stats = asyncio.run(run(args))
    print(json.dumps(dict(sorted(stats.items()))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
