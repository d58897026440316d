"""A TCP proxy on 127.0.0.1 in threads, in front of a real server, that can stop forwarding
without closing anything: a server (or a link) that stops answering. The client's bytes are
still taken (its kernel sees them acknowledged), they just never arrive.
"""

import contextlib
import socket
import threading


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.held: list[socket.socket] = []  # every socket of every connection so far
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def stop_forwarding(self) -> None:
        """From now on no byte passes, in either direction; every connection stays open."""
        self.forwarding.clear()

    def forward(self) -> None:
        """Forward again, for new connections: the stalled ones are reset (a link that came
        back: what was held is lost, as the client gave up on it)."""
        self._close_all()
        self.forwarding.set()

    def close(self) -> None:
        self.listener.close()
        self._close_all()
        self.forwarding.set()

    def _close_all(self) -> None:
        with self.lock:
            held, self.held = self.held, []
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.held += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        generation = self.held  # a reset (forward()) makes a new list: this pair is dropped
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            self.forwarding.wait()
            if self.held is not generation:
                return
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return
