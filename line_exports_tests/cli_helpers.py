"""Running ``line-exports`` as a user does: the CLI's own ``main`` with the user's arguments
(in this process, or in a real subprocess of the installed command), its own data folder, the
test's sandbox on loopback, and a workflow folder built from the examples."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "workflows"
CLI = Path(sys.executable).with_name("line-exports")


@dataclass
class Ran:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err


def line_exports(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    process: bool = False,
) -> Ran:
    """``line-exports ARGS``; LINE_EXPORTS_HOME and the sandbox URL come from the test's
    environment (conftest sets a private data folder).

    By default the CLI's ``main`` runs in this process, as the console script calls it (same
    argument parsing, exit codes, stdout and stderr, environment and working folder; an uncaught
    exception becomes a traceback on stderr and code 1), which spares each call a new
    interpreter importing Dagster. ``process=True`` runs the installed ``line-exports`` command
    in a real subprocess: one test per command family does, to prove the entry point itself."""
    if not process:
        return _in_process(args, cwd or REPO, env or {})
    started = time.monotonic()
    done = subprocess.run(
        [str(CLI), *args],
        cwd=cwd or REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def _in_process(args: tuple[str, ...], cwd: Path, env: dict[str, str]) -> Ran:
    """``main(args)`` with its own stdout/stderr, environment and working folder, all restored
    after (the CLI sets variables, e.g. the demo's sandbox URL, for the rest of its process)."""
    from line_exports.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    started = time.monotonic()
    try:
        os.environ.update(env)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse, and the CLI's `raise SystemExit("error: ...")`
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
            except Exception:  # what the interpreter does with an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return Ran(code, out.getvalue(), err.getvalue(), time.monotonic() - started)


def workflow_folder(tmp: Path, dig: dict[str, str], queries: dict[str, str]) -> Path:
    """A workflow folder with the examples' connections.yaml, the given ``.dig`` files and
    ``queries/*.sql``."""
    folder = tmp / "workflows"
    (folder / "queries").mkdir(parents=True)
    shutil.copy(EXAMPLES / "connections.yaml", folder / "connections.yaml")
    for name, text in dig.items():
        (folder / f"{name}.dig").write_text(text, encoding="utf-8")
    for name, text in queries.items():
        (folder / "queries" / name).write_text(text, encoding="utf-8")
    return folder


def members_dig(query: str = "members.sql", task_options: str = "", **settings: object) -> str:
    """A MAAC members task on the examples' sandbox connection, with extra result_settings
    (and task options, e.g. ``translate_sql: false``, after the td> line)."""
    extra = "".join(f"    {k}: {v}\n" for k, v in settings.items())
    return (
        "timezone: UTC\n\n"
        "+members:\n"
        f"  td>: queries/{query}\n" + (f"  {task_options}\n" if task_options else "") + ""
        "  result_connection: your_connection_name\n"
        "  result_settings:\n"
        "    data_object: members\n"
        "    import_key: line_uid\n"
        "    tags: vip\n" + extra
    )


def segment_dig(query: str = "segment.sql", **settings: object) -> str:
    extra = "".join(f"    {k}: {v}\n" for k, v in settings.items())
    return (
        "timezone: UTC\n\n"
        "+segment:\n"
        f"  td>: queries/{query}\n"
        "  result_connection: your_connection_name\n"
        "  result_settings:\n"
        "    data_object: segments\n"
        "    segment_name: weekly\n" + extra
    )
