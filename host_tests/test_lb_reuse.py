"""The private HAProxy (headend/lb_server.py) opens a new connection to a head-end process
for each request (issue 19: a POST /v1/groups through the proxy was answered 502 in the scale
bench). uvicorn closes a keep-alive connection after 5 s idle; a request the proxy sends on
that connection as it closes is reset unread. On a loaded machine, or while the process's
event loop runs a long step, that window is wide. A POST cannot be retried, so the proxy
answered 502 or cut its client's connection without an answer (termination state SD--).

The backend here makes the race certain: it answers the first request on each connection
and resets the connection on a second one, as uvicorn's keep-alive close does to a request
that arrives with it. Real HAProxy, our config."""

import socket
import struct
import threading
import time

import httpx
import pytest

from headend import lb_server

pytestmark = pytest.mark.system


class OneRequestPerConnection:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.resets = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf, served = b"", 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                if served:                # the keep-alive close meeting a request: reset
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.resets += 1
                    return
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                served += 1
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def close(self):
        """Stop listening now: a close() alone leaves the socket open while the accepting
        thread waits in accept(); shutdown() ends that wait."""
        self.stopped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def proxy(tmp_path):
    reason = lb_server.missing_reason()
    if reason:
        pytest.skip(reason)
    backend = OneRequestPerConnection()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lb = lb_server.LbServer(tmp_path / "lb", "127.0.0.1", port,
                            [("127.0.0.1", backend.port)]).start()
    yield "http://127.0.0.1:%d" % port, backend, tmp_path / "lb" / "haproxy.log"
    lb.stop()
    backend.close()


def test_every_post_through_the_proxy_reaches_a_fresh_connection(proxy):
    url, backend, log = proxy
    outcomes = []
    # keep-alive clients, as the operator API's and the meters' are; small and large bodies
    # (a group of 10,000 members is about 100 KB, beyond what the proxy could replay)
    for size in (100, 100_000):
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(4):
                try:
                    outcomes.append(client.post("/v1/groups", content=b"x" * size).status_code)
                except httpx.HTTPError as e:
                    outcomes.append(type(e).__name__)
    assert outcomes == [200] * 8, (outcomes, log.read_text()[-1500:])
    assert backend.resets == 0


def test_failed_requests_are_logged_with_their_termination_state(proxy):
    url, backend, log = proxy
    backend.close()                     # nothing listens: the proxy answers 503 (SC--)
    with httpx.Client(base_url=url, timeout=20) as client:
        assert client.post("/v1/groups", content=b"{}").status_code == 503
    # HAProxy logs a request when its stream ends, which can be after its client has the
    # answer (CI read the file before the line was there)
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in log.read_text().splitlines() if "POST /v1/groups" in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lines and " 503 " in lines[-1] and " SC-- " in lines[-1], lines
