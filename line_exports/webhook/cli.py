"""``line-exports webhook serve | new-source | land | relay | replay | dead-letters | resend``:
the receiver and its sources, landing by hand, and the webhook relay (see ``relay``, ``resend``).

``register`` plugs into the project's argparse CLI; ``main`` runs it on its own
(``python -m line_exports.webhook.cli webhook serve ...``) for tests and the load test.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from line_exports.webhook.config import (
    LANDING_MODES,
    PARTITION_COLUMNS,
    SOURCES_ENV,
    SourceConfigError,
    WebhookSource,
    default_secret_env,
    default_sources_path,
    load_sources,
    source_to_yaml,
)


def _apply_locations(args: argparse.Namespace) -> None:
    """Flags become env vars so every uvicorn worker process sees the same settings."""
    if getattr(args, "data_dir", None):
        os.environ["LINE_EXPORTS_HOME"] = str(Path(args.data_dir).resolve())
    if getattr(args, "sources", None):
        os.environ[SOURCES_ENV] = str(Path(args.sources).resolve())
    from line_exports.webhook.spool import SPOOL_ENV, SPOOL_URL_ENV

    if getattr(args, "spool", None):
        os.environ[SPOOL_ENV] = str(Path(args.spool).resolve())
    if getattr(args, "spool_url", None):
        os.environ[SPOOL_URL_ENV] = args.spool_url


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from line_exports.webhook.app import BODY_BUDGET_ENV, MAX_BODY_ENV
    from line_exports.webhook.guard import GuardedProtocol, Limits, raise_file_limit
    from line_exports.webhook.workers import mark_supervisor

    _apply_locations(args)
    os.environ[MAX_BODY_ENV] = str(args.max_body_bytes)
    os.environ[BODY_BUDGET_ENV] = str(args.large_body_budget)
    try:
        limits = Limits(args.header_timeout, args.body_timeout, args.max_connections)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise_file_limit()  # workers inherit it; the connection cap is derived from it
    os.environ.update(limits.to_env())
    from line_exports.webhook.app import RELAY_ENV

    try:
        os.environ.update(_relay_policy(args).to_env())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.environ[RELAY_ENV] = "0" if args.no_relay else "1"
    try:
        sources = load_sources()
    except SourceConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not sources:
        print(
            f"warning: no sources in {default_sources_path()}; every request gets 404",
            file=sys.stderr,
        )
    for source in sources:
        if source.channel_secret() is None:
            print(
                f"warning: ${source.channel_secret_env} is not set (source {source.name})",
                file=sys.stderr,
            )
    extra: dict[str, object] = {}
    if args.workers > 1:
        mark_supervisor()  # each worker dies with this process (see webhook.workers)
        if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
            # uvicorn kills a worker that has not answered its ping within 5 s (its default), even
            # while it is still importing on a busy host; give the start-up a minute.
            extra["timeout_worker_healthcheck"] = 60
    uvicorn.run(
        "line_exports.webhook.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        timeout_graceful_shutdown=10,
        http=GuardedProtocol,  # header/body deadlines and the connection cap (webhook.guard)
        backlog=args.backlog,
        **extra,  # type: ignore[arg-type]
    )
    return 0


def _new_source(args: argparse.Namespace) -> int:
    _apply_locations(args)
    try:
        source = WebhookSource(
            name=args.name,
            source_id=str(uuid.uuid4()),
            channel_secret_env=args.secret_env or default_secret_env(args.name),
            mode=args.mode,
            partition_column=args.partition_column,
            timezone=args.timezone,
            schedule=args.schedule,
        )
        existing = load_sources()
    except SourceConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if any(s.name == source.name for s in existing):
        print(f"error: a source named {source.name!r} already exists", file=sys.stderr)
        return 2
    base = args.base_url.rstrip("/")
    print(f"source_id:   {source.source_id}")
    print(f"webhook URL: {base}/v1/task/{source.source_id}")
    print(f"secret:      export {source.channel_secret_env}=<channel secret from LINE console>")
    if args.write:
        path = default_sources_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
        doc = doc if isinstance(doc, dict) else {}
        doc["sources"] = list(doc.get("sources") or []) + yaml.safe_load(source_to_yaml(source))
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        print(f"added to:    {path}")
    else:
        print("sources.yaml entry (under 'sources:'):")
        print(source_to_yaml(source), end="")
    return 0


def _land(args: argparse.Namespace) -> int:
    from line_exports.webhook.landing import land_source

    _apply_locations(args)
    try:
        sources = load_sources()
    except SourceConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    chosen = [s for s in sources if not args.source or s.name in args.source]
    if not chosen:
        print("error: no matching source", file=sys.stderr)
        return 2
    for source in chosen:
        result = land_source(
            source, spool_path=args.spool_url or args.spool, target_url=args.target_url
        )
        print(json.dumps(dataclasses.asdict(result), sort_keys=True))
    return 0


def _relay_policy(args: argparse.Namespace) -> Any:
    from line_exports.webhook.relay import RelayPolicy

    return RelayPolicy(
        max_attempts=args.relay_max_attempts,
        backoff_base=args.relay_backoff_base,
        backoff_max=args.relay_backoff_max,
    )


def _relay_targets(
    args: argparse.Namespace,
) -> list[tuple[WebhookSource, list[str]]] | None:
    """The chosen sources with their ``relay_to`` targets (narrowed by ``--target``), sources
    left with none dropped; None (after printing why) when a ``--target`` is in no source's."""
    chosen = _chosen_sources(args)
    if chosen is None:
        return None
    if args.target and not any(t in s.relay_to for s in chosen for t in args.target):
        print(f"error: {args.target[0]!r} is in no chosen source's relay_to", file=sys.stderr)
        return None
    relays = []
    for source in chosen:
        targets = [t for t in source.relay_to if not args.target or t in args.target]
        if targets:
            relays.append((source, targets))
    return relays


def _chosen_sources(args: argparse.Namespace) -> list[WebhookSource] | None:
    try:
        sources = load_sources()
    except SourceConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    chosen = [s for s in sources if s.relay_to and (not args.source or s.name in args.source)]
    if not chosen:
        print("error: no matching source with relay_to", file=sys.stderr)
        return None
    return chosen


def _relay(args: argparse.Namespace) -> int:
    """Forward in the foreground (instead of, or next to, the receivers) until interrupted."""
    from line_exports.webhook.relay import start_relays

    _apply_locations(args)
    chosen = _chosen_sources(args)
    if chosen is None:
        return 2
    try:
        policy = _relay_policy(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop, workers = start_relays(chosen, args.spool_url or args.spool, policy)
    print(f"relaying {len(workers)} target(s); Ctrl-C to stop", file=sys.stderr)
    try:
        while any(w.is_alive() for w in workers):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for worker in workers:
            worker.wake.set()
            worker.join(timeout=15)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from line_exports.webhook.relay import parse_since, replay

    _apply_locations(args)
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    relays = _relay_targets(args)
    if relays is None:
        return 2
    failed = 0
    for source, targets in relays:
        results = replay(
            source,
            since,
            targets=targets,
            spool=args.spool_url or args.spool,
            attempts=args.attempts,
        )
        for result in results:
            failed += result.failed
            print(json.dumps(dataclasses.asdict(result), sort_keys=True))
    return 1 if failed else 0


def _dead_letters(args: argparse.Namespace) -> int:
    """List dead letters (without bodies) as JSON lines."""
    _apply_locations(args)
    chosen = _chosen_sources(args)
    if chosen is None:
        return 2
    from line_exports.webhook.spool import open_reader

    with open_reader(args.spool_url or args.spool) as reader:
        for source in chosen:
            for letter in reader.dead_letters(source.source_id):
                row = dataclasses.asdict(letter)
                del row["body"], row["signature"]
                print(json.dumps({"source": source.name, **row}, sort_keys=True))
    return 0


def _resend(args: argparse.Namespace) -> int:
    """Resend dead letters once each (webhook.resend); exit 1 if any failed or is in doubt."""
    from line_exports.webhook.resend import resend_dead_letters

    _apply_locations(args)
    relays = _relay_targets(args)
    if relays is None:
        return 2
    unsettled = 0
    for source, targets in relays:
        results = resend_dead_letters(
            source,
            targets=targets,
            ids=args.id,
            spool=args.spool_url or args.spool,
            attempts=args.attempts,
            include_in_doubt=args.include_in_doubt,
        )
        for result in results:
            unsettled += len(result.failed) + len(result.in_doubt)
            print(json.dumps(dataclasses.asdict(result), sort_keys=True))
    return 1 if unsettled else 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``webhook`` with ``serve``, ``new-source`` and ``land`` to a parent CLI."""
    webhook = subparsers.add_parser("webhook", help="LINE OA webhook receiver (streaming import)")
    sub = webhook.add_subparsers(dest="webhook_command", required=True)

    def relay_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--relay-max-attempts",
            type=int,
            default=12,
            help="relay: attempts per request before it is dead-lettered (default 12)",
        )
        p.add_argument(
            "--relay-backoff-base",
            type=float,
            default=1.0,
            help="relay: seconds before the first retry, doubled each time (default 1)",
        )
        p.add_argument(
            "--relay-backoff-max",
            type=float,
            default=600.0,
            help="relay: longest wait between retries in seconds (default 600)",
        )

    def locations(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="data folder (default $LINE_EXPORTS_HOME or ./data)")
        p.add_argument("--sources", help="sources YAML (default <data dir>/webhook/sources.yaml)")
        p.add_argument("--spool", help="spool file (default <data dir>/webhook/spool.sqlite3)")
        p.add_argument(
            "--spool-url",
            help="SQLAlchemy URL of a spool shared by receivers on several machines, e.g. "
            "postgresql+psycopg://user@db-host/line_oa (default $LINE_EXPORTS_WEBHOOK_SPOOL_URL;"
            " keep the password in PGPASSWORD or ~/.pgpass, not on the command line)",
        )

    serve = sub.add_parser("serve", help="run the receiver (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--max-body-bytes", type=int, default=1024 * 1024)
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=5.0,
        help="seconds a connection may take to send a request's headers (default 5)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=10.0,
        help="seconds a request may take to send its body after the headers (default 10)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="open connections per worker; at the cap the slowest waiting one is dropped "
        "(default: half the file-handle limit, at most 10,000)",
    )
    serve.add_argument(
        "--backlog",
        type=int,
        default=4096,
        help="connections the kernel queues before they are accepted (capped by "
        "net.core.somaxconn; default 4096, uvicorn's is 2048)",
    )
    serve.add_argument(
        "--large-body-budget",
        type=int,
        default=16 * 1024 * 1024,
        help="bytes per worker held for bodies beyond their first 16 KiB (over it: 503)",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="proxies trusted for X-Forwarded-For/Proto (comma list, '*' for any)",
    )
    relay_flags(serve)
    serve.add_argument(
        "--no-relay",
        action="store_true",
        help="forward nothing from this receiver (run 'webhook relay' elsewhere)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--no-access-log", action="store_true")
    locations(serve)
    serve.set_defaults(func=_serve)

    new = sub.add_parser("new-source", help="issue a source_id (UUID v4) and its webhook URL")
    new.add_argument("--name", required=True, help="lower snake_case, e.g. shop_oa")
    new.add_argument("--base-url", default="https://YOUR-HOST", help="public base URL")
    new.add_argument("--secret-env", help="env var holding the channel secret")
    new.add_argument("--mode", choices=LANDING_MODES, default="append")
    new.add_argument("--partition-column", choices=PARTITION_COLUMNS, default="time")
    new.add_argument("--timezone", default="UTC")
    new.add_argument("--schedule", default="@hourly", help="@hourly, @daily, cron, sensor or off")
    new.add_argument("--write", action="store_true", help="append the entry to the sources file")
    locations(new)
    new.set_defaults(func=_new_source)

    land = sub.add_parser("land", help="land spooled events now (what the Dagster asset does)")
    land.add_argument("--source", action="append", help="source name (repeatable; default all)")
    land.add_argument("--target-url", help="SQLAlchemy URL (default the embedded DuckDB)")
    locations(land)
    land.set_defaults(func=_land)

    relay = sub.add_parser(
        "relay", help="forward spooled requests to each source's relay_to (what serve also does)"
    )
    relay.add_argument("--source", action="append", help="source name (repeatable; default all)")
    relay_flags(relay)
    locations(relay)
    relay.set_defaults(func=_relay)

    replay = sub.add_parser("replay", help="forward again what the spool holds since a time")
    replay.add_argument(
        "--since",
        required=True,
        help="ISO 8601 with offset (2026-11-30T09:00:00+09:00), a duration (30m, 2h, 7d) or "
        "epoch seconds",
    )
    replay.add_argument(
        "--target", action="append", help="one of the sources' relay_to URLs (default all)"
    )
    replay.add_argument("--source", action="append", help="source name (repeatable; default all)")
    replay.add_argument(
        "--attempts", type=int, default=3, help="tries per request on a transient failure"
    )
    locations(replay)
    replay.set_defaults(func=_replay)

    dead = sub.add_parser("dead-letters", help="list the relay's dead letters (JSON lines)")
    dead.add_argument("--source", action="append", help="source name (repeatable; default all)")
    locations(dead)
    dead.set_defaults(func=_dead_letters)

    resend = sub.add_parser(
        "resend", help="send dead letters again, once each (recorded; a second resend skips them)"
    )
    resend.add_argument("--source", action="append", help="source name (repeatable; default all)")
    resend.add_argument(
        "--target", action="append", help="one of the sources' relay_to URLs (default all)"
    )
    resend.add_argument(
        "--id", action="append", type=int, help="dead letter id (repeatable; default all)"
    )
    resend.add_argument(
        "--attempts", type=int, default=3, help="tries per dead letter on a transient failure"
    )
    resend.add_argument(
        "--include-in-doubt",
        action="store_true",
        help="also resend dead letters whose earlier resend was cut off after its POST began",
    )
    locations(resend)
    resend.set_defaults(func=_resend)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point with the same ``webhook ...`` syntax as ``line-exports``."""
    parser = argparse.ArgumentParser(prog="line-exports")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
