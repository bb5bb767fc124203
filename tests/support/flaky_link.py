"""A TCP proxy of the suite's own, put between the workers and Redis, that cuts
connections and holds packets while it is ``faulty``.

What makes a cut lose a message: Kombu's Redis transport takes a message off its
queue (BRPOP) and only then records it as unacknowledged, so a reply that Redis sent
and the worker never read is gone from both places. Besides random cuts, the proxy
can ``swallow`` a number of such deliveries (a BRPOP reply carrying a task of
``handle_event``/``handle_events``), dropping the reply with the connection, so that
every run loses events for certain rather than by luck.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from contextlib import suppress


class FlakyLink:
    def __init__(
        self,
        target_port: int,
        *,
        seed: int = 19,
        cut_rate: float = 0.02,
        hold_rate: float = 0.1,
        hold_max: float = 0.3,
    ) -> None:
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.cut_rate = cut_rate
        self.hold_rate = hold_rate
        self.hold_max = hold_max
        self.faulty = False
        self.swallow = 0
        self.cuts = 0
        self.holds = 0
        self.swallowed = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="flaky-link", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _abort(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, target, down in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(
                    target=self._pump, args=(source, target, down), name="flaky-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, target: socket.socket, down: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                decision = self._decide(data, down)
                if decision == "cut":
                    break
                if decision == "hold":
                    time.sleep(self.rng.uniform(0.02, self.hold_max))
                target.sendall(data)
        except OSError:
            pass
        finally:
            self._cut(source, target)

    def _decide(self, data: bytes, down: bool) -> str:
        if not self.faulty:
            return "pass"
        with self._lock:
            if down and self.swallow and data.startswith(b"*2\r\n$") and b"handle_event" in data:
                self.swallow -= 1
                self.swallowed += 1
                return "cut"
            roll = self.rng.random()
            if roll < self.cut_rate:
                self.cuts += 1
                return "cut"
            if roll < self.cut_rate + self.hold_rate:
                self.holds += 1
                return "hold"
        return "pass"

    def _cut(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                self._open.discard(sock)
            _abort(sock)

    def cut_all(self) -> None:
        """Drop every connection open now."""
        with self._lock:
            open_now = list(self._open)
        self._cut(*open_now)

    def close(self) -> None:
        self._closed.set()
        with suppress(OSError):
            self._listener.close()
        self.cut_all()


def _abort(sock: socket.socket) -> None:
    """Close with a reset, as a firewall dropping the flow would look to the peer,
    rather than an orderly goodbye. Shut down first: closing a socket that another
    thread is reading leaves the connection open until that read returns, and the
    peer would wait on it for ever."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()
