"""End to end: N rows per destination, DuckDB -> validation -> spool -> sandbox, in Dagster.

For each destination (LINE audience IDs, MAAC members, LINE Conversion API events, LinkedIn
contacts) a table of N valid rows is generated in a DuckDB file by a separate process, the
sandbox runs as its own process, and the export runs with ``dg.materialize`` in a child process
whose peak RSS the kernel reports. Printed per destination: wall time, requests made (and the
minimum the API's batch limits allow), peak RSS, and the time the real rate limits imply.

    .venv/bin/python bench/end_to_end.py --rows 1000000 --rate-scale 100

``--rate-scale S`` multiplies the sandbox's rate limits (``--rate-scale`` of the sandbox) and, in
the exporting process only, the client-side pacing limits of each destination module, so a run
that the real limits would stretch over minutes (MAAC: 15 imports a minute) takes seconds. The
line ``real limits imply`` gives the time the unscaled limits would force from the request count.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    SandboxProcess,
    fmt_seconds,
    generate_table,
    print_header,
    run_child,
    self_peak_rss_mb,
    sliding_window_floor,
)

DESTS = ("audience", "members", "events", "contacts")
CAPI_MAX_RECORDS = 100_000


def minimum_requests(dest: str, rows: int) -> tuple[str, int]:
    """(what is counted, the fewest data requests the API's batch limits allow)."""
    if dest == "audience":
        return "file uploads (1,500,000 IDs each)", math.ceil(rows / 1_500_000)
    if dest == "members":
        return "member imports (10,000 each)", math.ceil(rows / 10_000)
    if dest == "events":
        return f"event requests ({CAPI_MAX_RECORDS:,} each)", math.ceil(rows / CAPI_MAX_RECORDS)
    return "BATCH_CREATE requests (5,000 each)", math.ceil(rows / 5_000)


def real_limit_seconds(dest: str, meta: dict[str, Any]) -> tuple[float, str]:
    """The time the published limits force for this request count, and how it was computed."""
    if dest == "members":
        n = int(meta["import_tasks"])
        return sliding_window_floor(n, 15, 60), f"{n} imports at 15/min (one running at a time)"
    if dest == "audience":
        n = int(meta["requests"])
        return (
            sliding_window_floor(n, 60, 60),
            f"{n} audience-API requests (uploads, lookups, status polls) at 60/min",
        )
    if dest == "contacts":
        n = int(meta["batch_requests"])
        return sliding_window_floor(n, 600, 60), f"{n} batches at 600/min per member"
    return 0.0, "no published request-rate limit for the Conversion API"


# -- the exporting child ------------------------------------------------------------------
def scale_client_limits(scale: float) -> None:
    """Bench only: scale each destination's client-side pacing like the sandbox's limits.

    The core has no knob for this (see bench/README.md); without it the MAAC client paces 100
    imports to 15 a minute whatever the sandbox allows.
    """
    from line_exports.destinations import line_messaging, linkedin, maac
    from line_exports.http import RateLimit

    for module in (maac, line_messaging, linkedin):
        for key, limit in list(module.LIMITS.items()):
            module.LIMITS[key] = RateLimit(
                requests=max(1, int(limit.requests * scale)), per_seconds=limit.per_seconds
            )


def child(args: argparse.Namespace) -> None:
    import dagster as dg

    from line_exports import (
        LineConversionResource,
        LineMessagingResource,
        LinkedInResource,
        MaacResource,
        SqlSource,
        build_export,
    )

    if args.client_rate_scale != 1:
        scale_client_limits(args.client_rate_scale)
    url = args.sandbox_url
    if args.dest == "audience":
        destination, key, settings = "line_messaging", "line_messaging", {
            "target": "audience", "audience_name": f"bench audience {args.rows}"}  # fmt: skip
        resource: Any = LineMessagingResource(base_url=url, poll_seconds=0.2)
    elif args.dest == "members":
        destination, key, settings = "maac", "maac", {
            "data_object": "members", "import_key": "line_uid", "tags": "bench"}  # fmt: skip
        resource = MaacResource(base_url=url, poll_seconds=0.05)
    elif args.dest == "events":
        destination, key, settings = "line_conversion", "line_conversion", {
            "max_records": CAPI_MAX_RECORDS}  # fmt: skip
        resource = LineConversionResource(
            line_tag_id="sandbox-tag", line_channel_id="1234567890", base_url=url
        )
    else:
        destination, key, settings = "linkedin", "linkedin", {
            "ad_account_id": "512345678", "segment_name": f"bench contacts {args.rows}",
            "ignore_invalid_records": True}  # fmt: skip
        resource = LinkedInResource(api_url=url, new_segment_wait=0)
    asset = build_export(
        f"bench_{args.dest}",
        destination=destination,
        query=f"select * from {args.table}",
        settings=settings,
        retry_policy=None,
    )
    before = self_peak_rss_mb()
    started = time.monotonic()
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{args.db}", chunk_size=args.chunk_size),
            key: resource,
        },
        raise_on_error=True,
    )
    seconds = time.monotonic() - started
    (mat,) = result.asset_materializations_for_node(f"bench_{args.dest}")
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    keep = {k: v for k, v in meta.items() if isinstance(v, int | float | str) and len(str(v)) < 200}
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                "peak_rss_mb_before_export": round(before, 1),
                "peak_rss_mb": round(self_peak_rss_mb(), 1),
                "meta": keep,
            }
        )
    )


# -- the parent ---------------------------------------------------------------------------
def run_one(
    dest: str, rows: int, sandbox: SandboxProcess, workdir: Path, client_scale: float, chunk: int
) -> dict[str, Any]:
    db = workdir / f"{dest}_{rows}.duckdb"
    if not db.exists():
        gen_seconds = generate_table(db, dest, rows)
        print(f"  generated {rows:,} {dest} rows in {gen_seconds:.1f}s (separate process)")
    sandbox.reset()
    result = run_child(
        [
            str(Path(__file__)),
            "--child",
            "--dest",
            dest,
            "--rows",
            str(rows),
            "--db",
            str(db),
            "--table",
            dest,
            "--sandbox-url",
            sandbox.url,
            "--client-rate-scale",
            str(client_scale),
            "--chunk-size",
            str(chunk),
        ],  # fmt: skip
        env={"LINE_EXPORTS_HOME": str(workdir / f"home_{dest}")},
    )
    figures = result.last_json()
    figures["child_peak_rss_mb"] = round(result.peak_rss_mb, 1)
    figures["child_wall_seconds"] = round(result.seconds, 2)
    figures["sandbox"] = sandbox.state()
    return figures


def data_requests(dest: str, meta: dict[str, Any]) -> int:
    return int(
        {
            "audience": meta.get("upload_requests", -1),
            "members": meta.get("import_tasks", -1),
            "events": meta.get("batches", -1) + meta.get("split_requests", 0),
            "contacts": meta.get("batch_requests", -1),
        }[dest]
    )


def report(dest: str, rows: int, fig: dict[str, Any], rate_scale: float) -> bool:
    meta = fig["meta"]
    what, minimum = minimum_requests(dest, rows)
    made = data_requests(dest, meta)
    real, how = real_limit_seconds(dest, meta)
    ok = made == minimum and int(meta.get("rows_accepted", -1)) == rows
    print(f"## {dest}: {rows:,} rows")
    print(
        f"  wall time (dg.materialize):   {fig['seconds']:.1f} s  ({rows / fig['seconds']:,.0f} rows/s)"
    )
    print(
        f"  rows valid / sent / accepted: {meta.get('rows_valid')} / {meta.get('rows_sent')} / {meta.get('rows_accepted')}"
    )
    print(f"  {what}: {made}  (minimum {minimum}: {'OK' if made == minimum else 'MISS'})")
    print(f"  all requests (incl. lookups, polls, token): {meta.get('requests')}")
    print(f"  peak RSS of the exporting process: {fig['child_peak_rss_mb']:.0f} MB "
          f"(before the export: {fig['peak_rss_mb_before_export']:.0f} MB)")  # fmt: skip
    print(f"  rate limits scaled x{rate_scale:g}; real limits imply >= {fmt_seconds(real)} ({how})")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dest", action="append", choices=DESTS, help="default: all four")
    parser.add_argument("--rate-scale", type=float, default=100.0)
    parser.add_argument("--no-client-scale", action="store_true",
                        help="keep the clients' own pacing at the real limits (shows its cost)")  # fmt: skip
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--workdir", type=Path, help="keep generated tables here (reused)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    # child mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    parser.add_argument("--sandbox-url", help=argparse.SUPPRESS)
    parser.add_argument("--client-rate-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.dest = args.dest[0] if isinstance(args.dest, list) else args.dest
        child(args)
        return 0
    print_header("end to end")
    dests = args.dest or list(DESTS)
    client_scale = 1.0 if args.no_client_scale else args.rate_scale
    all_ok = True
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        with SandboxProcess(rate_scale=args.rate_scale, log=workdir / "sandbox.log") as sandbox:
            print(f"sandbox: {sandbox.url} (own process), --rate-scale {args.rate_scale:g}; "
                  f"client pacing scaled x{client_scale:g}")  # fmt: skip
            for dest in dests:
                fig = run_one(dest, args.rows, sandbox, workdir, client_scale, args.chunk_size)
                all_ok &= report(dest, args.rows, fig, args.rate_scale)
                out[dest] = fig
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    print("RESULT: " + ("every run made the minimum requests" if all_ok else "MISS (see above)"))
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
