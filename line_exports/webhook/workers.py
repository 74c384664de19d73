"""Workers that die with their parent: ``webhook serve --workers N`` never leaves orphans.

uvicorn's supervisor forks (spawns) the workers and hands them the listening socket. If the
supervisor itself is SIGKILLed (OOM killer, ``kill -9``, a container runtime), the workers
would keep serving and keep the port, so a restart fails with "Address already in use". Each
worker therefore asks Linux to SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)``,
man 2 prctl); elsewhere a watchdog thread notices the parent is gone. SIGKILL loses nothing
acknowledged: a request is answered 200 only after its body is fsync'd (see ``spool``), and an
unanswered one is redelivered by LINE.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

SUPERVISOR_ENV = "LINE_EXPORTS_WEBHOOK_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def mark_supervisor() -> None:
    """Called by ``webhook serve`` before uvicorn starts its workers: we are their parent."""
    os.environ[SUPERVISOR_ENV] = str(os.getpid())


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    _kill_self()


def die_with_supervisor() -> bool:
    """In a worker process: arrange to be killed when the supervisor dies.

    Returns False when this process is not a worker (no supervisor recorded, or it is the
    supervisor itself, as with ``--workers 1``). Raises ``OSError`` if ``prctl`` fails.
    """
    recorded = os.environ.get(SUPERVISOR_ENV)
    if not recorded or int(recorded) == os.getpid():
        return False
    parent = int(recorded)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the supervisor died before the request above took effect
        _kill_self()
    return True
