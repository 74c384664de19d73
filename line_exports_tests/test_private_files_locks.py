"""SQLite keeps its locks as POSIX record locks, which a process loses on *every* fd of the file
when it closes *any* fd of it. ``private_file`` runs before each new connection (spool, ledger);
if it opened and closed an existing database file, a second connection in a process that already
had one would drop that process's locks, and the next other process to close the database would
delete the live WAL: rows committed (and acknowledged) afterwards would be invisible to every
other process. Found by a review: a receiver with relay threads lost events it had answered 200.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from line_exports import private_files

COUNT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
print(conn.execute("select count(*) from t").fetchone()[0])
conn.close()
"""


def count_in_another_process(path: Path) -> int:
    ran = subprocess.run(
        [sys.executable, "-c", COUNT, str(path)], capture_output=True, text=True, check=True
    )
    return int(ran.stdout)


def test_a_second_private_file_call_keeps_the_open_connections_locks(tmp_path: Path) -> None:
    path = private_files.private_file(tmp_path / "spool.sqlite3")
    first = sqlite3.connect(path)
    first.execute("pragma journal_mode=wal")
    first.execute("create table t (x integer)")
    first.execute("insert into t values (1)")
    first.commit()

    private_files.private_file(path)  # what a second spool/ledger connection does first
    assert count_in_another_process(path) == 1  # that process closes the database

    first.execute("insert into t values (2)")
    first.commit()
    assert Path(f"{path}-wal").exists()
    assert count_in_another_process(path) == 2
    first.close()


def test_private_file_creates_0600_and_tightens_an_existing_file(tmp_path: Path) -> None:
    made = private_files.private_file(tmp_path / "a" / "new.db")
    assert made.stat().st_mode & 0o777 == 0o600
    loose = tmp_path / "loose.db"
    loose.write_bytes(b"x")
    loose.chmod(0o644)
    private_files.private_file(loose)
    assert loose.stat().st_mode & 0o777 == 0o600
    assert loose.read_bytes() == b"x"
