"""Serving the sandbox: in a thread (tests, the demo) or as its own process (``dagster dev``).

Resources whose base URL is left empty call :func:`ensure_sandbox`, which finds a sandbox on
the default port or starts one in the background, so an export works with no account anywhere.

The sandbox must never receive real data by accident, so :func:`ensure_sandbox` trusts only a
sandbox this deployment started: each sandbox has a random per-instance token, written by its
starter to ``<data dir>/sandbox/<host>_<port>.token`` (owner-only), and proves it holds it by
answering a fresh challenge with an HMAC (:func:`~line_exports.sandbox.core.instance_proof`).
Anything else on that port (another program, another user's sandbox) is refused by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hmac
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlparse

import requests
import uvicorn

from line_exports import paths, private_files
from line_exports.sandbox.app import create_app
from line_exports.sandbox.core import Sandbox, instance_proof

DEFAULT_PORT = 8787
SANDBOX_URL_ENV = "LINE_EXPORTS_SANDBOX_URL"
SANDBOX_SWITCH_ENV = "LINE_EXPORTS_SANDBOX"
INSTANCE_TOKEN_ENV = "LINE_EXPORTS_SANDBOX_INSTANCE_TOKEN"
"""How :func:`ensure_sandbox` hands the token to the sandbox process it starts (never argv)."""
CREDENTIAL_VARIABLES = (
    "MAAC_API_TOKEN, LINE_MESSAGING_ACCESS_TOKEN (or LINE_MESSAGING_CLIENT_ID + _SECRET), "
    "LINE_CONVERSION_ACCESS_TOKEN, LINKEDIN_REFRESH_TOKEN (or LINKEDIN_ACCESS_TOKEN)"
)


class PromptServer(uvicorn.Server):
    """uvicorn's server (same config, same graceful shutdown) whose stop from another thread
    takes milliseconds, not 0.1-0.3 s of uvicorn's polls: tests start and stop one per test.
    :meth:`wake` (any thread) interrupts the main loop's 0.1 s tick; shutdown stops accepting,
    closes idle connections, waits for the answers in progress as uvicorn's does (polling every
    2 ms, doubling to 0.1 s, instead of a fixed 0.1 s sleep first), then ends the lifespan."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Ask the server to exit now (from any thread)."""
        self.should_exit = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._woken.set)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._woken.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # no new connections
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # an idle one closes now, a busy one after its response
        pause = 0.002
        while self.server_state.connections or self.server_state.tasks:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()


class SandboxServer:
    """A real uvicorn server for the sandbox on loopback, run in a background thread.

    ``with SandboxServer() as server:`` starts it on a free port; ``server.url`` is its base
    URL and ``server.sandbox`` its state (received data, faults, rate limits).
    """

    def __init__(
        self, sandbox: Sandbox | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.sandbox = sandbox or Sandbox()
        self.host = host
        self.port = port or _free_port(host)
        config = uvicorn.Config(
            create_app(self.sandbox),
            host=host,
            port=self.port,
            log_level="error",
            timeout_keep_alive=30,
            limit_concurrency=2000,
            backlog=4096,
        )
        self._server = PromptServer(config)
        self._thread = threading.Thread(
            target=self._server.run, name="line-exports-sandbox", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.01)
        register_instance(self.url, self.sandbox.instance_token)
        return self

    def stop(self) -> None:
        self._server.wake()
        self._thread.join(timeout=10)
        unregister_instance(self.url, self.sandbox.instance_token)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    """Something answers HTTP at ``url`` (a sandbox or not)."""
    try:
        requests.get(f"{url}/_sandbox/health", timeout=1)
        return True
    except requests.RequestException:
        return False


def _instance_file(url: str) -> Path:
    parsed = urlparse(url)
    name = f"{parsed.hostname or 'localhost'}_{parsed.port or 80}.token".replace(":", "_")
    return private_files.private_dir(paths.data_dir() / "sandbox") / name


def register_instance(url: str, instance_token: str) -> None:
    """Record (owner-only) that the sandbox at ``url`` with this token is ours to trust."""
    path = _instance_file(url)
    with open(path, "w", encoding="utf-8", opener=private_files.private_opener) as out:
        out.write(instance_token)


def unregister_instance(url: str, instance_token: str) -> None:
    """Forget ``url``'s token if it is still this instance's."""
    path = _instance_file(url)
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == instance_token:
            path.unlink()


def _registered_token(url: str) -> str | None:
    try:
        return _instance_file(url).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def proves_instance(url: str, instance_token: str) -> bool:
    """The sandbox at ``url`` answers a fresh challenge with this token's proof."""
    challenge = secrets.token_hex(16)
    try:
        answer = requests.get(
            f"{url}/_sandbox/health", params={"challenge": challenge}, timeout=1
        ).json()
    except (requests.RequestException, ValueError):
        return False
    proof = str(answer.get("instance_proof", "")) if isinstance(answer, dict) else ""
    return hmac.compare_digest(proof, instance_proof(instance_token, challenge))


def _trusted(url: str) -> bool:
    token = _registered_token(url)
    return token is not None and proves_instance(url, token)


def _not_ours(url: str) -> Exception:
    """The run's failure (not retried: waiting does not make a stranger trustworthy)."""
    import dagster as dg  # only here: the sandbox process itself never needs Dagster

    return dg.Failure(
        description=f"something at {url} answers, but it is not a sandbox this deployment started "
        f"(it did not prove the instance token in {_instance_file(url)}): refusing to send data "
        f"there. Stop that program, or point {SANDBOX_URL_ENV} at a free port, or configure real "
        "credentials.",
        allow_retries=False,
    )


def default_sandbox_url() -> str:
    return os.environ.get(SANDBOX_URL_ENV, f"http://127.0.0.1:{DEFAULT_PORT}")


def ensure_sandbox(url: str | None = None) -> str:
    """The URL of a running sandbox that this deployment started: the one at ``url`` (default
    port) if it proves its instance token, else a new one started there.

    A started sandbox runs as its own process (logs in the data folder) so it outlives the run
    that needed it and ``dagster dev`` runs can share and inspect it. A server at ``url`` that
    cannot prove the token (not started here) fails the run (``dg.Failure``, not retried)
    instead of receiving the export. A deployment sets ``LINE_EXPORTS_SANDBOX=off`` so that a missing secret fails the
    run instead of exporting to the sandbox and looking like a success.
    """
    switch = os.environ.get(SANDBOX_SWITCH_ENV, "").strip().lower()
    if switch in {"off", "0", "false", "no"}:
        import dagster as dg  # only here: the sandbox process itself never needs Dagster

        raise dg.Failure(
            description=f"this destination has no credentials (nor base_url) and "
            f"{SANDBOX_SWITCH_ENV}={switch} forbids exporting to the local sandbox instead: set its "
            f"variables ({CREDENTIAL_VARIABLES})",
            allow_retries=False,
        )
    url = (url or default_sandbox_url()).rstrip("/")
    if _trusted(url):
        return url
    # One starter at a time (parallel steps all find no sandbox at once).
    lock_path = _instance_file(url).with_suffix(".lock")
    with open(lock_path, "a", opener=private_files.private_opener) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _trusted(url):
            return url
        if _answers(url):
            raise _not_ours(url)
        return _start(url)


def _start(url: str) -> str:
    port = int(urlparse(url).port or DEFAULT_PORT)
    token = secrets.token_urlsafe(32)
    register_instance(url, token)
    log_path = paths.data_dir() / "sandbox.log"
    with open(log_path, "ab", opener=private_files.private_opener) as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "line_exports.sandbox", "--port", str(port)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, INSTANCE_TOKEN_ENV: token},
        )
    pid_file(port).write_text(str(process.pid), encoding="utf-8")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proves_instance(url, token):
            _say_it_outlives(url, process.pid, port, log_path)
            return url
        time.sleep(0.1)
    if _answers(url):
        raise _not_ours(url)
    raise RuntimeError(f"could not start the sandbox at {url}; see {log_path}")


def pid_file(port: int) -> Path:
    """Where a background sandbox started by :func:`ensure_sandbox` keeps its process id."""
    return paths.data_dir() / f"sandbox-{port}.pid"


def _say_it_outlives(url: str, pid: int, port: int, log_path: Path) -> None:
    """A background sandbox outlives the run and ``dagster dev``: say so, and how to stop it
    (in the run's log when called inside a run, else on stderr)."""
    import dagster as dg  # only here: the sandbox process itself never needs Dagster

    stop = "line-exports sandbox --stop" + (f" --port {port}" if port != DEFAULT_PORT else "")
    dg.get_dagster_logger("line_exports.sandbox").warning(
        f"started the local sandbox at {url} in the background (pid {pid}, log {log_path}); "
        f"it keeps running after this run and after dagster dev stops: stop it with `{stop}`"
    )


def stop_background(port: int = DEFAULT_PORT) -> str:
    """Stop the background sandbox :func:`ensure_sandbox` started on ``port`` (by its pid file;
    only a process that is that sandbox is signalled)."""
    file = pid_file(port)
    if not file.exists():
        return f"no background sandbox recorded for port {port} ({file} not found)"
    pid = int(file.read_text(encoding="utf-8").strip() or 0)
    cmdline = Path(f"/proc/{pid}/cmdline")
    running = cmdline.exists() and b"line_exports.sandbox" in cmdline.read_bytes()
    file.unlink()
    if not running:
        return f"the background sandbox of port {port} (pid {pid}) was not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and cmdline.exists():
        with open(cmdline, "rb") as handle:
            if not handle.read():  # a zombie until its parent reaps it: gone for us
                break
        time.sleep(0.1)
    return f"stopped the background sandbox on port {port} (pid {pid})"


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (as uvicorn binds one: ``SO_REUSEADDR``), so the
    address is known to be ours before anything is printed or registered. Raises ``OSError``
    whose ``strerror`` names the address and, when it is taken, what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = (
            "the address is already in use (another sandbox or server: `line-exports sandbox "
            f"--stop --port {port}` stops a background sandbox, or choose another --port)"
            if exc.errno == errno.EADDRINUSE
            else exc.strerror or str(exc)
        )
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {why}") from None
    return sock


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    rate_scale: float = 1.0,
    sock: socket.socket | None = None,
) -> None:
    """Run the sandbox in the foreground until interrupted, on ``sock`` (from :func:`listen`)
    or a socket bound here (``OSError`` if the address is taken: nothing is registered then).

    Its instance token comes from :data:`INSTANCE_TOKEN_ENV` (set by :func:`ensure_sandbox`),
    else is new and registered in the data folder, so exports of this deployment trust it.
    """
    sock = sock or listen(host, port)
    token = os.environ.pop(INSTANCE_TOKEN_ENV, None)
    sandbox = Sandbox(rate_scale=rate_scale, instance_token=token)
    url = f"http://{host}:{port}"
    if token is None:
        register_instance(url, sandbox.instance_token)
    try:
        config = uvicorn.Config(create_app(sandbox), host=host, port=port, log_level="info")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        unregister_instance(url, sandbox.instance_token)
