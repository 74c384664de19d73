"""Serving the sandbox: in a thread (tests, the demo) or as its own process (``dagster dev``).

Resources whose base URL is left empty call :func:`ensure_sandbox`, which finds a sandbox on
the default port or starts one in the background, so an export works with no account anywhere.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from types import TracebackType

import requests
import uvicorn

from line_exports import paths
from line_exports.sandbox.app import create_app
from line_exports.sandbox.core import Sandbox

DEFAULT_PORT = 8787
SANDBOX_URL_ENV = "LINE_EXPORTS_SANDBOX_URL"
SANDBOX_SWITCH_ENV = "LINE_EXPORTS_SANDBOX"
CREDENTIAL_VARIABLES = (
    "MAAC_API_TOKEN, LINE_MESSAGING_ACCESS_TOKEN (or LINE_MESSAGING_CLIENT_ID + _SECRET), "
    "LINE_CONVERSION_ACCESS_TOKEN, LINKEDIN_REFRESH_TOKEN (or LINKEDIN_ACCESS_TOKEN)"
)


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
        self._server = uvicorn.Server(config)
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
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

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


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/_sandbox/health", timeout=1).ok
    except requests.RequestException:
        return False


def default_sandbox_url() -> str:
    return os.environ.get(SANDBOX_URL_ENV, f"http://127.0.0.1:{DEFAULT_PORT}")


def ensure_sandbox(url: str | None = None) -> str:
    """The URL of a running sandbox: the one at ``url`` (default port), started if absent.

    A started sandbox runs as its own process (logs in the data folder) so it outlives the run
    that needed it and ``dagster dev`` runs can share and inspect it. A deployment sets
    ``LINE_EXPORTS_SANDBOX=off`` so that a missing secret fails the run instead of exporting to
    the sandbox and looking like a success.
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
    url = url or default_sandbox_url()
    if _healthy(url):
        return url
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    log_path = paths.data_dir() / "sandbox.log"
    with open(log_path, "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "line_exports.sandbox", "--port", str(port)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _healthy(url):
            return url
        time.sleep(0.1)
    raise RuntimeError(f"could not start the sandbox at {url}; see {log_path}")


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, rate_scale: float = 1.0) -> None:
    """Run the sandbox in the foreground until interrupted."""
    uvicorn.run(create_app(Sandbox(rate_scale=rate_scale)), host=host, port=port, log_level="info")
