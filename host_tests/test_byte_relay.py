"""bench/byte_relay.py, the counting relay that make bench's email figures go through: bytes
pass unchanged both ways and are counted exactly, per direction, across connections."""

import socket
import socketserver
import threading

import pytest

from bench.byte_relay import Relay

pytestmark = pytest.mark.unit


class Upper(socketserver.BaseRequestHandler):
    def handle(self):       # answers each chunk upper-cased, and twice as long
        while data := self.request.recv(4096):
            self.request.sendall(data.upper() * 2)


def test_the_relay_passes_bytes_unchanged_and_counts_them():
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Upper) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        relay = Relay("127.0.0.1", server.server_address[1]).start()
        try:
            sent = got = 0
            for text in (b"hello", b"x" * 3000):
                with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as c:
                    c.sendall(text)
                    answer = b""
                    while len(answer) < 2 * len(text):
                        answer += c.recv(65536)
                    assert answer == text.upper() * 2
                sent, got = sent + len(text), got + len(answer)
            for _ in range(50):
                if relay.counts()["down"] == got:
                    break
                threading.Event().wait(0.05)
            assert relay.counts() == {"up": sent, "down": got, "connections": 2}
        finally:
            relay.stop()
            server.shutdown()


def test_stop_ends_the_connections_still_open():
    """A client still connected when the relay stops: the target sees the connection end
    (it did not, and the server's close waited for its handler for ever)."""
    ended = threading.Event()

    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            while data := self.request.recv(4096):
                self.request.sendall(data)
            ended.set()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads, server.block_on_close = True, False    # never hang the suite
    threading.Thread(target=server.serve_forever, daemon=True).start()
    relay = Relay("127.0.0.1", server.server_address[1]).start()
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as c:
            c.sendall(b"hi")
            assert c.recv(10) == b"hi"
            relay.stop()
            assert ended.wait(5), "the target's connection stayed open"
            assert c.recv(10) == b""
    finally:
        server.shutdown()
        server.server_close()
