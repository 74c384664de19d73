"""Treasure Data's LINE-family result exports on Dagster: run the demo, serve the sandbox,
validate, plan and run digdag workflows, receive LINE OA webhooks.

Start with `line-exports demo` (sample DuckDB tables -> the local sandbox of every API), then
`line-exports validate examples/workflows`; `line-exports COMMAND --help` says more.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from line_exports import paths

DEFAULT_DEFS = Path("examples/definitions.py")
MAIN_JOB = "maac_sample_job"


def load_definitions(path: Path) -> Any:
    """The ``defs`` object of a Python definitions file (loaded afresh)."""
    import dagster as dg

    try:
        module = paths.load_module(path, f"line_exports_user_defs_{path.stem}", reuse=False)
    except ImportError as exc:
        raise SystemExit(f"error: cannot load definitions from {path}: {exc}") from None
    except (ValueError, TypeError, dg.DagsterError) as exc:
        # A wrong setting or declaration: its message says what and where; no traceback.
        raise SystemExit(f"error: {path}: {exc}") from None
    return module.defs


COUNT_COLUMNS = (
    ("read", "rows_read"),
    ("valid", "rows_valid"),
    ("rejected", "rows_rejected"),
    ("sent", "rows_sent"),
    ("refused", "rows_refused_by_api"),
    ("unsent", "rows_unsent"),
    ("unknown", "rows_delivery_unknown"),
    ("accepted", "rows_accepted"),
    ("requests", "requests"),
)
"""(header, metadata key) of the counts every run table shows (``demo``, ``run``): the five
places a row read ends in (read = rejected + refused + unsent + unknown + accepted), the rows
meant for the API (valid), the rows sent, and the requests."""
SUMMARY_COLUMNS = (
    ("export", None),
    ("destination", "destination"),
    *COUNT_COLUMNS,
    ("seconds", "duration_seconds"),
)


def materialization_rows(result: Any, instance: Any = None) -> list[list[Any]]:
    """One summary row per export of a job result (columns: SUMMARY_COLUMNS): materialized, or
    failed after reading its rows (the failure's counts, or an interrupted run's read from
    ``instance``'s event log, :func:`line_exports.run_summary.outcomes`; the name marked
    ``(failed)``, or ``(stopped)`` when a Ctrl-C or SIGTERM stopped it)."""
    from line_exports import run_summary

    rows = []
    for key, outcome in run_summary.outcomes(result, instance).items():
        meta = outcome.metadata
        if not meta:
            continue
        state = "stopped" if outcome.stopped else "failed"
        row: list[Any] = [f"{key} ({state})" if outcome.failed else key]
        for _, name in SUMMARY_COLUMNS[1:]:
            value = meta.get(name, "")
            row.append(f"{value:.2f}" if isinstance(value, float) else value)
        rows.append(row)
    return rows


def job_names(defs: Any) -> list[str]:
    """The jobs a definitions object holds (asset jobs included), sorted."""
    return sorted(
        job.name
        for job in defs.get_repository_def().get_all_jobs()
        if not job.name.startswith("__")
    )


def cmd_demo(ns: argparse.Namespace) -> int:
    """Run the main job on the embedded defaults: sample DuckDB tables -> local sandbox."""
    import dagster as dg

    from line_exports import run_summary
    from line_exports.sandbox import SandboxServer

    if ns.job is None or ns.list_jobs:
        defs = load_definitions(Path(ns.defs))
        print(f"jobs in {ns.defs} (line-exports demo --job NAME):")
        for name in job_names(defs):
            print(f"  {name}{'  (the default)' if name == MAIN_JOB else ''}")
        return 0
    with SandboxServer(port=ns.port) as server:
        os.environ["LINE_EXPORTS_SANDBOX_URL"] = server.url
        print(f"sandbox listening on {server.url}")
        defs = load_definitions(Path(ns.defs))
        names = job_names(defs)
        if ns.job not in names:
            print(f"error: no job {ns.job!r} in {ns.defs}; jobs: {', '.join(names)}")
            return 2
        job = run_summary.quiet_job(defs.resolve_job_def(ns.job))
        instance = (
            dg.DagsterInstance.get()
            if os.environ.get("DAGSTER_HOME")
            else dg.DagsterInstance.ephemeral()
        )
        started = time.monotonic()
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_summary.log_config(ns.log_level)
        )
        from line_exports.workflows.cli import table

        print()
        print(table([c for c, _ in SUMMARY_COLUMNS], materialization_rows(result, instance)))
        checks_failed = run_summary.report(run_summary.outcomes(result, instance), sys.stdout)
        state = server.sandbox
        print()
        print("delivered to the sandbox:")
        from line_exports.sandbox.app import destination_modules

        for module in destination_modules():
            if hasattr(module, "summary"):
                figures = module.summary(state)
                if _active(figures):
                    print(
                        f"  {module.__name__.rsplit('.', 1)[1]}: {json.dumps(figures, ensure_ascii=False)}"
                    )
        print(
            f"\n{ns.job}: {'succeeded' if result.success else 'FAILED'} in {time.monotonic() - started:.1f}s"
        )
        if not result.success:
            return 1
        if checks_failed and ns.strict:
            print("--strict: a check failed, exit code 1")
            return 1
        return 0


def _active(value: Any) -> bool:
    """True when a sandbox summary holds any non-zero figure (a destination that received
    something), however nested."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return False
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, dict):
        return any(_active(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_active(v) for v in value)
    return False


def cmd_sandbox(ns: argparse.Namespace) -> int:
    """Serve the sandbox in the foreground (or stop the background one with ``--stop``)."""
    from line_exports.sandbox.server import listen, serve, stop_background

    if ns.stop:
        print(stop_background(ns.port))
        return 0
    try:
        sock = listen(ns.host, ns.port)  # bound before saying so
    except OSError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 2
    print(
        f"sandbox on http://{ns.host}:{ns.port} (state: /_sandbox/state, faults: POST /_sandbox/faults)",
        flush=True,
    )
    serve(ns.host, ns.port, ns.rate_scale, sock=sock)
    return 0


def cmd_held(ns: argparse.Namespace) -> int:
    """List, or release, the rows a ``sync_mode`` diff export holds because an earlier run sent
    them and whether LINE delivered them cannot be known (``line_exports.sync_held``). Exit 2
    when the ledger has no sync store of that export (a typo must not look like a release), 1
    when ``--delivered`` meets rows already released for resend."""
    from line_exports import sync_held
    from line_exports.ledger import Ledger

    export = ns.export
    ledger = Ledger()
    try:
        if not export or not sync_held.exists(ledger, export):
            return _no_store(ledger, export)
        rows = sync_held.held(ledger, export)
        if (ns.resend or ns.delivered) and rows:
            count = sync_held.release(ledger, export, delivered=ns.delivered)
            what = (
                "recorded delivered: never sent again"
                if ns.delivered
                else "released: the next run sends them (once)"
            )
            print(f"{export}: {count:,} held rows {what}")
            return 0
        waiting = None if rows else sync_held.released(ledger, export)
    finally:
        ledger.close()
    if not rows:
        if waiting is None:
            print(
                f"{export}: no rows held{': nothing to release' if ns.resend or ns.delivered else ''}"
            )
            return 0
        print(
            f"{export}: no rows held; {waiting.rows:,} rows were already {waiting.note}, and "
            "the next run sends them (once)"
            + (
                ": a release for resend cannot be undone, nothing recorded delivered"
                if ns.delivered
                else ""
            )
        )
        return 1 if ns.delivered else 0
    print(f"{export}: {len(rows):,} rows held, delivery unknown")
    print(f"  {rows[0][2]}")
    for _, ident, _ in rows[:SHOWN]:
        print(f"  {ident}")
    if len(rows) > SHOWN:
        print(f"  ... and {len(rows) - SHOWN:,} more")
    return 0


def _no_store(ledger: Any, export: str) -> int:
    """``held`` of a name the ledger has no sync store of: say so, and what it has."""
    import difflib

    from line_exports import sync_held

    names = sync_held.held_exports(ledger)
    close = difflib.get_close_matches(export, sync_held.known_exports(ledger), n=3, cutoff=0.6)
    print(
        f"error: no sync store of an export named {export!r} in the ledger "
        f"({ledger.describe()}): EXPORT is the asset key path, e.g. workflow/task for a .dig "
        "task; nothing listed or released",
        file=sys.stderr,
    )
    if close:
        print(f"  closest names: {', '.join(close)}", file=sys.stderr)
    more = f" and {len(names) - LISTED:,} more" if len(names) > LISTED else ""
    print(
        f"  exports with held rows: {', '.join(names[:LISTED])}{more}"
        if names
        else "  no export holds rows",
        file=sys.stderr,
    )
    return 2


SHOWN = 10
LISTED = 20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="line-exports",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="run the main job on the embedded defaults (DuckDB -> sandbox)"
    )
    demo.add_argument("--defs", default=str(DEFAULT_DEFS), help="Python file with a `defs` object")
    demo.add_argument(
        "--job",
        nargs="?",
        default=MAIN_JOB,
        const=None,
        help=f"job to run (default {MAIN_JOB}; --job alone lists the jobs)",
    )
    demo.add_argument("--list-jobs", action="store_true", help="list the jobs and exit")
    demo.add_argument(
        "--strict", action="store_true", help="exit 1 when a check fails (e.g. reject_rate)"
    )
    demo.add_argument("--port", type=int, default=0, help="sandbox port (default: a free one)")
    demo.add_argument("--log-level", default="INFO", help="Dagster console log level")
    demo.set_defaults(func=cmd_demo)

    sandbox = sub.add_parser("sandbox", help="start the local sandbox of every destination API")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8787)
    sandbox.add_argument(
        "--rate-scale", type=float, default=1.0, help="multiply the real rate limits"
    )
    sandbox.add_argument(
        "--stop",
        action="store_true",
        help="stop the background sandbox that exports started on --port (it outlives dagster dev)",
    )
    sandbox.set_defaults(func=cmd_sandbox)

    held = sub.add_parser(
        "held",
        help="rows a sync_mode diff push/multicast export holds: delivery unknown "
        "(an earlier run sent them: no answer recorded, or a 5xx, past LINE's 24-hour retry key)",
    )
    held.add_argument(
        "export",
        help="the export (asset key path, e.g. push_k or workflow/task), matched exactly; "
        "a name with no sync store exits 2 listing the exports that hold rows",
    )
    decide = held.add_mutually_exclusive_group()
    decide.add_argument(
        "--resend", action="store_true", help="send them again with the next run (once)"
    )
    decide.add_argument(
        "--delivered", action="store_true", help="record them delivered: never sent again"
    )
    held.set_defaults(func=cmd_held)

    from line_exports.linkedin_auth import register as register_linkedin_auth
    from line_exports.webhook.cli import register as register_webhook
    from line_exports.workflows.cli import register as register_workflows

    register_workflows(sub)
    register_webhook(sub)
    register_linkedin_auth(sub)
    return parser


def webhook_parser() -> argparse.ArgumentParser:
    """``line-exports webhook ...`` alone: a receiver (``webhook serve`` with one worker serves
    in this very process) loads neither Dagster nor pandas nor DuckDB just to read its flags."""
    from line_exports.webhook.cli import register as register_webhook

    parser = argparse.ArgumentParser(prog="line-exports", description=__doc__)
    register_webhook(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    parser = webhook_parser() if args[:1] == ["webhook"] else build_parser()
    ns = parser.parse_args(args)
    return int(ns.func(ns))


if __name__ == "__main__":
    raise SystemExit(main())
