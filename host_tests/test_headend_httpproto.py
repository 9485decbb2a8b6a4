"""Both HTTP protocols `serve` can run (server.protocol_class: httptools when installed, h11
otherwise) keep the same guards: a connection without complete request headers is closed
after the header timeout, request headers above 16 KiB are refused with 400 and the
connection closed, and a real exchange still works."""

import socket

import httpx
import pytest
from headend_harness import GuardedServer, Headend

from headend import server  # noqa: E402

pytestmark = pytest.mark.unit

PROTOCOLS = ["h11"] + (["httptools"] if server.GuardedHttpTools is not None else [])


def read_until_closed(sock, limit=30.0):
    """Everything the server sent until it closed the connection (or `limit` s passed)."""
    sock.settimeout(limit)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        if not chunk:
            return data, True
        data += chunk


@pytest.mark.parametrize("http", PROTOCOLS)
def test_guards_and_exchange(tmp_path, http):
    he = Headend(tmp_path)
    with GuardedServer(he.app, header_timeout=1.0, http=http) as srv:
        assert srv.server.config.http.__name__ == server.protocol_class(http).__name__
        idle = socket.create_connection(("127.0.0.1", srv.port))
        partial = socket.create_connection(("127.0.0.1", srv.port))
        partial.sendall(b"POST /v1/exchange HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        huge = socket.create_connection(("127.0.0.1", srv.port))
        huge.sendall(b"POST /v1/exchange HTTP/1.1\r\nHost: x\r\n" +
                     b"X-Pad: " + b"a" * (20 * 1024) + b"\r\n\r\n")
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            m = he.meter(c, "meter-a")
            m.reading()
            m.exchange()
            assert not m.outbox
        data, closed = read_until_closed(huge)
        assert closed and data.startswith(b"HTTP/1.1 400"), data[:80]
        for s in (idle, partial):
            data, closed = read_until_closed(s)
            assert closed and data == b""
        for s in (idle, partial, huge):
            s.close()
