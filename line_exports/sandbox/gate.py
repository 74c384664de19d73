"""A gate in front of the sandbox that stops letting connections in: an API "not reached".

No HTTP fault can model a request that never reached the API. The sandbox learns a request's
path only once a connection is open and the request is sent, so whatever it does then (an
error status, a cut connection) the request may have reached it: the client counts it
``reached`` (:class:`~line_exports.http.ApiError`), and rightly so. A request that never
reached the API is one whose connection could not be opened. :class:`Gate` models that below
HTTP, as when the network to the API goes down between two calls: it forwards TCP connections
to the sandbox until a request beginning with the next of its ``close_after`` prefixes (e.g.
``b"GET /v2/bot/message/quota/consumption"``, the last read before a push run sends) has been
answered. Then it closes: its listening socket is closed, so every new connection is refused
(``ECONNREFUSED``); that answer carries ``Connection: close`` and every idle connection is
ended, so no later request rides on a connection opened before (an HTTP client notices a
dropped pooled connection and opens a new one, which is refused). ``reopen_after`` seconds
later it listens again, on the same port, until the next prefix's request (the next step
attempt's reads go through, its sends do not).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType

CHUNK = 65536
CLOSE = b"Connection: close\r\n"


class Gate:
    """TCP forwarder from ``127.0.0.1:<port>`` to ``upstream`` (host, port): closes after a
    request beginning with ``close_after[0]`` (then ``[1]``, ... after each reopening), for
    ``reopen_after`` seconds (None: for good). ``with Gate(...) as gate:`` runs it;
    :attr:`url` is the sandbox's base URL behind it; :attr:`closings` counts its closings."""

    def __init__(
        self,
        upstream: tuple[str, int],
        close_after: Sequence[bytes],
        reopen_after: float | None = None,
    ) -> None:
        self.upstream = upstream
        self.prefixes = list(close_after)
        self.reopen_after = reopen_after
        self.closings = 0
        self._open = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open.set()
        self._listening = True
        self._thread = threading.Thread(target=self._serve, name="sandbox-gate", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Gate:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopped.set()
        self._stop_listening()
        self._end_connections()
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        """Accept while open; while closed, wait to reopen (a new listener, same port)."""
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed: listen again once the gate reopens
                if self.reopen_after is None or self._stopped.is_set():
                    return
                time.sleep(self.reopen_after)
                if self._stopped.is_set():
                    return
                self._listener = socket.create_server(("127.0.0.1", self.port))
                self._listening = True
                self._open.set()
                continue
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._connections.append((client, server))
            doomed = threading.Event()  # this connection carries the request that closes
            threading.Thread(
                target=self._requests, args=(client, server, doomed), daemon=True
            ).start()
            threading.Thread(
                target=self._answers, args=(server, client, doomed), daemon=True
            ).start()

    def _requests(
        self, client: socket.socket, server: socket.socket, doomed: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(CHUNK):
                with self._lock:
                    if self.prefixes and self._open.is_set() and data.startswith(self.prefixes[0]):
                        self.prefixes.pop(0)
                        self._open.clear()
                        doomed.set()
                server.sendall(data)
        _end(client, server)

    def _answers(
        self, server: socket.socket, client: socket.socket, doomed: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(CHUNK):
                if doomed.is_set() and not self._open.is_set() and self._listening:
                    # The closing request's answer: it says the connection ends (the client
                    # closes it once read), and the gate closes.
                    head, sep, rest = data.partition(b"\r\n")
                    data = head + sep + CLOSE + rest if sep else data
                    self._close(keep=client)
                client.sendall(data)
        _end(server, client)

    def _close(self, keep: socket.socket) -> None:
        """Refuse every new connection and end every open one but ``keep`` (the closing
        answer's, which ends once answered: ``Connection: close``)."""
        self.closings += 1
        self._listening = False
        self._stop_listening()
        with self._lock:
            ended = [c for c in self._connections if c[0] is not keep]
            self._connections = [c for c in self._connections if c[0] is keep]
        for client, server in ended:
            _end(client, server)

    def _stop_listening(self) -> None:
        # shutdown() wakes the blocked accept(); a bare close() would not, on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _end_connections(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for client, server in connections:
            _end(client, server)


def _end(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
