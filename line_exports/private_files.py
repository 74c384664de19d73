"""Files that hold raw bodies or personal data are readable by their owner only.

The ledger, the webhook spool, the embedded DuckDB file, rejects CSVs and run spools hold LINE
user IDs, e-mail addresses, phone numbers and raw webhook bodies. Every such file is created
``0600`` inside folders created ``0700``, whatever the process's umask (a umask of 022 would
otherwise leave them world-readable). Use:

- :func:`private_dir` for a folder (each missing level is created ``0700``);
- :func:`private_file` before a library opens a file it would create with default modes
  (SQLite: the ``-wal`` / ``-shm`` files it makes later copy the database file's mode);
- :func:`private_opener` with ``open(..., opener=private_opener)`` for files written by hand;
- :func:`restrict` after a library that cannot open a pre-made file created one (DuckDB refuses
  an empty file): the folder's ``0700`` covers the moment in between.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def _tighten(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` if it is looser and ours (a folder we do not own is left)."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & ~mode:
            os.chmod(path, current & mode)
    except PermissionError:
        pass


def private_dir(path: Path | str) -> Path:
    """``path`` as a folder readable by its owner only: each missing level created ``0700``,
    the folder itself tightened to ``0700`` if it exists with wider modes."""
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=DIR_MODE)
        _tighten(folder, DIR_MODE)  # mkdir's mode is filtered by the umask, never widened
    _tighten(path, DIR_MODE)
    return path


def private_opener(path: str | os.PathLike[str], flags: int) -> int:
    """An ``opener`` for :func:`open` that creates the file ``0600``."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def private_file(path: Path | str) -> Path:
    """``path`` created empty ``0600`` if missing (its folder made private), else tightened.

    An existing file is never opened, only chmod'ed: SQLite's locks are POSIX record locks, and
    closing *any* descriptor of a file drops *all* of the process's locks on it (POSIX fcntl).
    Opening and closing a database this process already has open (a second spool or ledger
    connection) would let another process delete the live WAL under it.
    """
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = private_opener(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        _tighten(path, FILE_MODE)
    else:
        os.close(fd)  # a file this call created: no lock of this process can be on it
    return path


def restrict(path: Path | str, *suffixes: str) -> None:
    """Tighten an existing file (and ``path + suffix`` siblings, e.g. ``.wal``) to ``0600``."""
    path = Path(path)
    for candidate in (path, *(path.with_name(path.name + s) for s in suffixes)):
        if candidate.exists():
            _tighten(candidate, FILE_MODE)
