"""``python -m line_exports.sandbox``: serve the sandbox in the foreground."""

from __future__ import annotations

import argparse
import sys

from line_exports.sandbox.server import DEFAULT_PORT, listen, serve

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m line_exports.sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--rate-scale", type=float, default=1.0)
    args = parser.parse_args()
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(args.host, args.port, args.rate_scale, sock=sock)
