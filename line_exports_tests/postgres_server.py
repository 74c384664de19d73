"""A real PostgreSQL server for tests: initdb + pg_ctl in a temporary folder, on a free loopback
port, as a non-root user when the tests run as root (PostgreSQL refuses to run as root).

Debian's ``postgresql`` package provides the binaries (``.ci/run`` installs it); without them
the tests that need a server are skipped, saying so.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa


def binaries() -> Path | None:
    """The folder holding initdb and pg_ctl (newest Debian version first), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def why_unavailable() -> str | None:
    if binaries() is None:
        return "PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _base_dir() -> str | None:
    """A folder the server's user can reach: the default temp folder may be root's only."""
    if os.geteuid() != 0:
        return None
    for candidate in (tempfile.gettempdir(), "/var/tmp", "/dev/shm"):
        path = Path(candidate)
        if path.is_dir() and all(p.stat().st_mode & 0o001 for p in (path, *path.parents)):
            return candidate
    return None


@contextmanager
def postgres_server(fsync: bool = False) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a fresh server's ``postgres`` database (trust auth on
    127.0.0.1 only); the server and its folder are gone afterwards. ``fsync`` off by default
    (tests); a benchmark turns it on to measure what a real server pays per commit."""
    bin_dir = binaries()
    assert bin_dir is not None
    folder = Path(tempfile.mkdtemp(prefix="line-exports-pg-", dir=_base_dir()))
    data = folder / "data"
    port = _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    env = {**os.environ, "LC_ALL": "C"}

    def run(*args: str) -> None:
        subprocess.run(
            [*as_user, *args], check=True, env=env, cwd=folder, capture_output=True, timeout=120
        )

    try:
        run(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "lx",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync={'on' if fsync else 'off'}"
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        yield f"postgresql+psycopg://lx@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            env=env,
            cwd=folder,
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)


def new_database(server_url: str) -> str:
    """A new empty database on the server; its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with engine.connect() as con:
                    con.execute(sa.text(f'CREATE DATABASE "{name}"'))
                break
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
