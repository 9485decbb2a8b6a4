"""A message over MQTT that the meter cannot take never wedges it (issue 13, item 2): the real
firmware (MicroPython unix port) and a real mosquitto. A 40 KB work message on its down topic
(over the meter's 32 KB packet limit) is refused, acknowledged so the broker drops it from the
persistent session, and reported; later work runs, and a restart does not bring it back.
Before: a protocol error and a reconnect every ~1.5 s, forever, even across restarts. And a
link that fails right after every CONNACK backs off further each time."""

import socket
import threading
import time

import pytest
from mqtt_helpers import wait_until
from mqtt_site import needs_mosquitto, online, run_op, site  # noqa: F401

from lab import processes

pytestmark = [pytest.mark.system, needs_mosquitto]


def _notices(he, device):
    with he.lock:
        return [i["body"] for i in he.items.get(device, {}).values() if i["kind"] == "notice"
                and i["body"].get("what") == "oversized message refused"]


def test_an_oversized_message_is_refused_acked_and_not_redelivered(site):
    he = site.he
    m = site.start("meter-b")
    online(he, "meter-b")
    big = he.push("meter-b", "message", {"pad": "x" * 40000})
    r = run_op(site, "meter-b", "read")
    assert r["status"] == "done", r
    wait_until(lambda: _notices(he, "meter-b"), 15, "the meter's notice")
    notice = _notices(he, "meter-b")[0]
    assert notice["limit"] == 32768 and notice["bytes"] > 40000, notice
    assert he.results("meter-b", big["id"]) == []        # it never reached the dispatcher
    assert "link down" not in m.log(), m.log()
    # a restart resumes the broker session: the refused message is gone from it
    old = he.latest["meter-b"]["conn"]
    m.kill()
    m = site.start("meter-b")
    wait_until(lambda: m.log().count("session resumed") >= 1, 20, "meter-b to reconnect")
    # a push is bound to the connection of the meter's latest request (v2): pushed before
    # the new connection's first request reached the head-end, the meter rightly refuses it
    wait_until(lambda: he.latest["meter-b"]["conn"] != old, 20, "meter-b's new connection")
    assert run_op(site, "meter-b", "read")["status"] == "done"
    time.sleep(1)
    assert len(_notices(he, "meter-b")) == 1 and "link down" not in m.log(), m.log()


class _SlamBroker:
    """Accepts a connection, answers CONNECT with CONNACK, then closes it: a link that fails
    just after connecting, every time. Records when each connection came."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.times = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.times.append(time.monotonic())
            conn.settimeout(5)
            try:
                conn.recv(4096)
                conn.sendall(b"\x20\x02\x00\x00")
                time.sleep(0.2)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()


def test_reconnects_back_off_when_every_link_fails_after_connack(tmp_path):
    broker = _SlamBroker()
    meter = processes.Meter(tmp_path, "meter-s", "00" * 16, "", transport="mqtt",
                            mqtt_host="127.0.0.1", mqtt_port=broker.port, mqtt_keepalive=10,
                            mqtt_tls=False)
    try:
        meter.start()
        wait_until(lambda: len(broker.times) >= 5, 40, "five connections")
        gaps = [b - a for a, b in zip(broker.times, broker.times[1:])]
        # backoff 1 s x 2^n with jitter in [0.5, 1]: 1-2, 2-4, 4-8, 8-16 s (before: ~1-2 s each)
        assert gaps[2] >= 3.5 and gaps[3] >= 2 * gaps[0], gaps
    finally:
        meter.kill()
        broker.close()
