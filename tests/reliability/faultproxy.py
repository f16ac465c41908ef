"""A small TCP proxy for fault injection in tests: pass-through, an outage (the port refuses connections
and open ones are cut, like a stopped server), a slow link (each chunk delayed), or a black hole
(connections are accepted and requests swallowed: no answer ever comes)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class FaultProxy:
    """Forwards 127.0.0.1:<port> to `target`. Thread-based; `close()` stops everything it started."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.delay_s = 0.0
        self.blackhole = False
        self._coming_back: threading.Thread | None = None
        self.connections = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self._listener = self._listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._serve()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self, port: int) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        return s

    def _serve(self) -> None:
        threading.Thread(target=self._accept_loop, args=(self._listener,), daemon=True).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed: an outage or close()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                if self.blackhole:
                    continue
                if self.delay_s:
                    time.sleep(self.delay_s)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._open.discard(s)
                s.close()

    def _stop_listening(self) -> None:
        # shutdown() first: a bare close() does not wake the thread blocked in accept(), and the kernel
        # keeps the port listening for as long as that call holds the socket, letting one more client in
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def outage(self, seconds: float) -> threading.Thread:
        """Refuse connections for `seconds` and cut the open ones now (a stopped server); then serve again."""
        self._stop_listening()
        with self._lock:
            victims = list(self._open)
        for s in victims:
            _reset(s)

        def come_back() -> None:
            if not self._closed.wait(seconds):  # the outage lasts `seconds`, or until the proxy is closed
                self._listener = self._listen(self.port)
                self._serve()

        thread = threading.Thread(target=come_back, daemon=True)
        thread.start()
        self._coming_back = thread
        return thread

    def wait_serving(self, timeout: float) -> None:
        """Block until the last outage is over and the proxy listens again (at most `timeout` seconds)."""
        if self._coming_back is not None:
            self._coming_back.join(timeout)
            assert not self._coming_back.is_alive(), f"the proxy did not come back within {timeout:.0f} s"

    def close(self) -> None:
        self._closed.set()
        self._stop_listening()
        with self._lock:
            victims = list(self._open)
        for s in victims:
            _reset(s)


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed server's kernel would."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        s.close()
