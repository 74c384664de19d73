"""``python -m line_exports.sandbox``: serve the sandbox in the foreground."""

from __future__ import annotations

import argparse

from line_exports.sandbox.server import DEFAULT_PORT, serve

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m line_exports.sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--rate-scale", type=float, default=1.0)
    args = parser.parse_args()
    serve(args.host, args.port, args.rate_scale)
