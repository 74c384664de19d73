"""``line-exports``: the command line. Each concern registers its own sub-commands."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from line_exports import paths

DEFAULT_DEFS = Path("examples/definitions.py")
MAIN_JOB = "maac_sample_job"


def load_definitions(path: Path) -> Any:
    """The ``defs`` object of a Python definitions file (loaded afresh)."""
    try:
        module = paths.load_module(path, f"line_exports_user_defs_{path.stem}", reuse=False)
    except ImportError as exc:
        raise SystemExit(f"cannot load definitions from {path}") from exc
    return module.defs


def print_table(rows: list[dict[str, Any]]) -> None:
    """A plain, aligned summary table."""
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def materialization_rows(result: Any) -> list[dict[str, Any]]:
    """One summary row per export materialized in a job result."""
    rows = []
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        rows.append(
            {
                "export": materialization.asset_key.to_user_string(),
                "destination": meta.get("destination", ""),
                "read": meta.get("rows_read", ""),
                "valid": meta.get("rows_valid", ""),
                "rejected": meta.get("rows_rejected", ""),
                "sent": meta.get("rows_sent", ""),
                "accepted": meta.get("rows_accepted", ""),
                "requests": meta.get("requests", ""),
                "seconds": meta.get("duration_seconds", ""),
            }
        )
    return rows


def cmd_demo(ns: argparse.Namespace) -> int:
    """Run the main job on the embedded defaults: sample DuckDB tables -> local sandbox."""
    import dagster as dg

    from line_exports.sandbox import SandboxServer

    with SandboxServer(port=ns.port) as server:
        os.environ["LINE_EXPORTS_SANDBOX_URL"] = server.url
        print(f"sandbox listening on {server.url}")
        defs = load_definitions(Path(ns.defs))
        job = defs.get_job_def(ns.job)
        instance = (
            dg.DagsterInstance.get()
            if os.environ.get("DAGSTER_HOME")
            else dg.DagsterInstance.ephemeral()
        )
        started = time.monotonic()
        quiet_logs = {"loggers": {"console": {"config": {"log_level": ns.log_level}}}}
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=quiet_logs
        )
        print()
        print_table(materialization_rows(result))
        state = server.sandbox
        print()
        print("delivered to the sandbox:")
        from line_exports.sandbox.app import destination_modules

        for module in destination_modules():
            if hasattr(module, "summary"):
                figures = module.summary(state)
                if any(figures.values()):
                    print(
                        f"  {module.__name__.rsplit('.', 1)[1]}: {json.dumps(figures, ensure_ascii=False)}"
                    )
        print(
            f"\n{ns.job}: {'succeeded' if result.success else 'FAILED'} in {time.monotonic() - started:.1f}s"
        )
        return 0 if result.success else 1


def cmd_sandbox(ns: argparse.Namespace) -> int:
    """Serve the sandbox in the foreground."""
    from line_exports.sandbox.server import serve

    print(
        f"sandbox on http://{ns.host}:{ns.port} (state: /_sandbox/state, faults: POST /_sandbox/faults)"
    )
    serve(ns.host, ns.port, ns.rate_scale)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="line-exports", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="run the main job on the embedded defaults (DuckDB -> sandbox)"
    )
    demo.add_argument("--defs", default=str(DEFAULT_DEFS), help="Python file with a `defs` object")
    demo.add_argument("--job", default=MAIN_JOB)
    demo.add_argument("--port", type=int, default=0, help="sandbox port (default: a free one)")
    demo.add_argument("--log-level", default="INFO", help="Dagster console log level")
    demo.set_defaults(func=cmd_demo)

    sandbox = sub.add_parser("sandbox", help="start the local sandbox of every destination API")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8787)
    sandbox.add_argument(
        "--rate-scale", type=float, default=1.0, help="multiply the real rate limits"
    )
    sandbox.set_defaults(func=cmd_sandbox)

    from line_exports.linkedin_auth import register as register_linkedin_auth
    from line_exports.webhook.cli import register as register_webhook
    from line_exports.workflows.cli import register as register_workflows

    register_workflows(sub)
    register_webhook(sub)
    register_linkedin_auth(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    return int(ns.func(ns))


if __name__ == "__main__":
    raise SystemExit(main())
