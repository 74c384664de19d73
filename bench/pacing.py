"""Pacing: with the sandbox enforcing a rate limit R, do we sustain >= 90% of R with no 429?

The sandbox runs as its own process with ``--rate-scale R/2000`` (so it refuses push number
R+1 in any one-second window with 429) and our client's push pacing is set to R (bench only).
``LineMessagingDestination.deliver`` sends ``R * --seconds`` pushes (a templated message per
row, 50 in flight); the sending phase alone is timed. The same is done for multicast (500
recipients a request, LINE's 200/s). CPU use of both processes is printed: on a small machine
the sandbox and the client share the cores, which caps what loopback can show. ``client cores
per 1,000 pushes/s`` is the client's CPU seconds per 1,000 requests: the cores the client needs
to sustain 1,000 pushes a second (issue 14's measure of the cost of a push).

    .venv/bin/python bench/pacing.py --rates 2000,1000,500 --seconds 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    MULTICAST_TEMPLATE,
    PUSH_TEMPLATE,
    SandboxProcess,
    cpu_seconds,
    deliver_messages,
    print_header,
    recipients_frame,
    set_client_limit,
)

PUSH_LIMIT = 2000  # LINE: push 2,000 requests/s per channel
MULTICAST_LIMIT = 200  # LINE: multicast 200 requests/s


def one(kind: str, rate: int, seconds: float, concurrency: int, workdir: Path) -> bool:
    real = PUSH_LIMIT if kind == "push" else MULTICAST_LIMIT
    scale = rate / real
    per_request = 1 if kind == "push" else 500
    total = int(rate * seconds)
    set_client_limit("line_messaging", kind, rate)
    frame = recipients_frame(total * per_request, salt=f"{kind}{rate}")
    values = (
        {
            "target": "push_message",
            "template_message": PUSH_TEMPLATE,
            "push_concurrency": concurrency,
        }
        if kind == "push"
        else {"target": "multicast_message", "template_message_multicast": MULTICAST_TEMPLATE}
    )
    values.update(initial_retry_wait=1, max_retry=10)
    with SandboxProcess(rate_scale=scale) as sandbox:
        assert sandbox.proc is not None
        sandbox_cpu = cpu_seconds(sandbox.proc.pid)
        fig = deliver_messages(sandbox.url, frame, values, workdir / f"{kind}{rate}")
        sandbox_cpu = cpu_seconds(sandbox.proc.pid) - sandbox_cpu
        refused = int(sandbox.state().get("rate_limited", 0))
    achieved = fig["requests"] / fig["seconds"]
    per_thousand = fig["cpu_seconds"] / max(1, fig["requests"]) * 1000
    share = achieved / rate
    ok = share >= 0.9 and refused == 0 and fig["accepted"] == total * per_request
    print(f"{kind:9} R={rate:5}/s  {fig['requests']:6} requests in {fig['seconds']:6.1f}s = "
          f"{achieved:7.0f}/s ({share:6.1%} of R)  429s: {refused}  retries: {fig['retries']}  "
          f"accepted {fig['accepted']:,}  CPU: client {fig['cpu_seconds'] / fig['seconds']:.2f}, "
          f"sandbox {sandbox_cpu / fig['seconds']:.2f} cores  {'PASS' if ok else 'MISS'}\n"
          f"{'':9} client cores per 1,000 {kind} requests/s: {per_thousand:.3f}")  # fmt: skip
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="2000,1000,500", help="push rates R to try, per second")
    parser.add_argument("--multicast-rates", default="200", help="multicast rates to try")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run at R")
    parser.add_argument("--concurrency", type=int, default=50, help="push_concurrency")
    args = parser.parse_args(argv)
    print_header("pacing against a sandbox rate limit")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pacing-") as tmp:
        for rate in [int(r) for r in args.rates.split(",") if r]:
            results.append(one("push", rate, args.seconds, args.concurrency, Path(tmp)))
        for rate in [int(r) for r in args.multicast_rates.split(",") if r]:
            results.append(one("multicast", rate, args.seconds, args.concurrency, Path(tmp)))
    print("goal: >= 90% of R, no 429 (PASS); a MISS at a high R with the CPUs busy means this "
          "machine cannot drive that rate over loopback")  # fmt: skip
    return 0 if any(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
