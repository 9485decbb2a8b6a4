"""A real meter process per encoding (the firmware under the MicroPython unix port, the
simulated board) against the real head-end (uvicorn + SQLite): readings arrive in XML, SOAP
and WBXML, work runs (a `read`, and a SOAP reversal round trip), and one fleet mixes them.

Between each meter and the head-end sits a relay that, while told to, answers with the
head-end's response cut short and signed again with the meter's key (a head-end that
writes broken documents): the meter counts a failure and backs off (1, 2, 4 s ...), and
once answers are whole again everything it metered meanwhile arrives, once, with no gap."""

import hashlib
import hmac
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from lab import processes

pytestmark = pytest.mark.system

ENCODINGS = ("xml", "soap", "wbxml")


class BreakingRelay:
    """HTTP relay to the head-end; while `breaking`, exchange answers are cut in half and
    re-signed with `key`. Records when each exchange arrived."""

    def __init__(self, target, key_hex):
        self.target, self.key = target, bytes.fromhex(key_hex)
        self.breaking = False
        self.arrivals, self.broken = [], 0
        self.http = httpx.Client(base_url=target, timeout=60)
        relay = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "x-bc-signature")}
                with lock:
                    relay.arrivals.append(time.monotonic())
                    breaking = relay.breaking
                try:
                    r = relay.http.post(self.path, content=body, headers=headers)
                except httpx.HTTPError:     # the head-end went away (teardown)
                    self.send_error(502)
                    return
                data, sig = r.content, r.headers.get("x-bc-signature", "")
                if breaking and r.status_code == 200:
                    data = data[:len(data) // 2]
                    sig = hmac.new(relay.key, data, hashlib.sha256).hexdigest()
                    with lock:
                        relay.broken += 1
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("content-type", ""))
                self.send_header("Content-Length", str(len(data)))
                if sig:
                    self.send_header("X-BC-Signature", sig)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.http.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    work = tmp_path_factory.mktemp("encodings")
    he = processes.Headend(work)
    keys = {enc: he.add_device("meter-" + enc) for enc in ENCODINGS + ("json",)}
    api = he.api(he.add_token("alice", "operator"))
    he.start()
    relays, meters = {}, {}
    for enc, key in keys.items():
        relays[enc] = BreakingRelay(he.url, key)
        meters[enc] = processes.Meter(work, "meter-" + enc, key, relays[enc].url,
                                      encoding=enc, poll_wait_s=2).start()
    for enc in keys:
        processes.wait_until(lambda e=enc: api.get("/v1/devices/meter-%s/readings" % e).json(),
                             40, "the first reading from the %s meter" % enc)
    yield {"headend": he, "api": api, "relays": relays, "meters": meters}
    for m in meters.values():
        m.kill()
    for r in relays.values():
        r.close()
    he.kill()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_read_round_trip_in_each_encoding(fleet, encoding):
    w = processes.run_work(fleet["api"], "meter-" + encoding, "read")
    assert w["status"] == "done", w
    assert w["result"]["reading"]["vrms"] == pytest.approx(230, rel=0.01)
    dev = fleet["api"].get("/v1/devices/meter-" + encoding).json()
    assert dev["transport"] == "http"


def test_one_fleet_mixes_encodings(fleet):
    """A group command reaches meters of all four encodings and each answers."""
    api = fleet["api"]
    for enc in ENCODINGS + ("json",):
        w = processes.run_work(api, "meter-" + enc, "get_events", {"limit": 5})
        assert w["status"] == "done", (enc, w)


def _reading_times(api, device):
    rows = api.get("/v1/devices/%s/readings?limit=10000" % device).json()
    return sorted(r["at"] for r in rows)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_malformed_answers_are_failures_with_backoff_and_nothing_is_lost(fleet, encoding):
    api, relay = fleet["api"], fleet["relays"][encoding]
    device = "meter-" + encoding
    relay.breaking = True
    before = time.time()
    start = len(relay.arrivals)
    processes.wait_until(lambda: relay.broken >= 4, 40, "four broken answers")
    relay.breaking = False
    mended = time.time()
    arrivals = relay.arrivals[start:start + 5]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # backoff: 1 s x 2^n with jitter x0.5..1 after each counted failure
    assert gaps[1] > 0.9 and gaps[2] > 1.9, gaps
    processes.wait_until(lambda: _reading_times(api, device)[-1] > mended + 2, 60,
                         "readings after the broken answers")
    times = [t for t in _reading_times(api, device) if before - 5 <= t <= mended + 2]
    steps = [round(b - a, 2) for a, b in zip(times, times[1:])]
    # report_s is 1: one reading a second of sample time, none lost, none twice
    assert len(times) > 10 and set(steps) == {1.0}, steps
