"""The report server's HTTP plumbing: a bounded number of request threads, and a deadline on each request.

:class:`BoundedHTTPServer` runs at most ``workers`` requests at once; a connection beyond that is answered
``503`` by the listening thread at once (never queued behind slow clients). :class:`DeadlineReader` gives
a request its whole timeout to arrive: a client that sends one byte at a time cannot keep a thread by
sending just before each socket timeout.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)


class DeadlineReader(io.RawIOBase):
    """A socket's input that fails with :class:`TimeoutError` once ``seconds`` have passed since it opened."""

    def __init__(self, connection: socket.socket, seconds: float) -> None:
        super().__init__()
        self._connection = connection
        self._deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._connection.settimeout(left)
        return self._connection.recv_into(buffer)


def busy_response(headers: Sequence[tuple[str, str]]) -> bytes:
    """The whole 503 answer sent when every worker is busy."""
    body = b"busy: every worker of the report server is serving a request; try again\n"
    lines = ["HTTP/1.0 503 Service Unavailable", "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(body)}", "Retry-After: 1", "Connection: close",
             *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with at most ``workers`` request threads; over that, 503 at once."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, workers: int,
                 busy: bytes) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._slots = threading.BoundedSemaphore(max(1, workers))
        self._busy = busy
        super().__init__(address, handler)

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket],
                        client_address: tuple[str, int]) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        try:
            worker = threading.Thread(target=self._work, args=(request, client_address),
                                      name="cairn-reports-request", daemon=True)
            worker.start()
        except BaseException:
            self._slots.release()
            self.shutdown_request(request)
            raise

    def _work(self, request: socket.socket | tuple[bytes, socket.socket], client_address: tuple[str, int]) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_busy(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        """Answer 503 without blocking the listening thread: drain what arrived, send, close."""
        log.warning("report server: every worker is busy; answered 503")
        try:
            if isinstance(request, socket.socket):
                request.setblocking(False)
                with contextlib.suppress(OSError):  # drain what arrived, so that closing sends FIN, not RST
                    request.recv(65536)
                request.send(self._busy)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket],
                     client_address: tuple[str, int]) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # the client went away mid-answer
            log.info("report server: %s closed the connection early", client_address[0])
            return
        log.exception("report server: error answering %s", client_address[0])
