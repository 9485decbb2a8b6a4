"""Protocol v2 with real processes, over HTTP and MQTT (issue 12, items 6 and 7): the real
firmware (MicroPython unix port, simulated board) against the real head-end (uvicorn +
SQLite) and, for MQTT, a real mosquitto. A board whose clock starts in 2000 or 2040 joins at
once, and a meter whose flash is wiped mid-run loses nothing. The in-process attacks are in
test_attacks_protocol.py."""

import json
import os
import shutil
import sqlite3
import time

import pytest

from lab import processes

pytestmark = pytest.mark.system

Y2000, Y2040 = 946684800, 2208988800
HAS_MOSQUITTO = bool(shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK))
TRANSPORTS = ["http", pytest.param("mqtt", marks=pytest.mark.skipif(
    not HAS_MOSQUITTO, reason="mosquitto is not installed (apt-get install mosquitto)"))]


class Site:
    def __init__(self, work, transport):
        self.work, self.transport = work, transport
        self.he = processes.Headend(work)
        self.broker = None
        self.procs = []

    def __enter__(self):
        self.key = self.he.add_device("meter-a")
        self.api = self.he.api(self.he.add_token("alice", "operator"))
        if self.transport == "mqtt":
            self.broker = processes.Broker(self.work, self.he.db)
            self.broker.start()
            self.he.extra += self.broker.serve_args()
        self.he.start()
        self.procs.append(self.he)
        if self.broker is not None:
            processes.wait_until(lambda: self.api.get("/v1/mqtt").json()["connected"], 20,
                                 "the bridge to connect")
        return self

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            p.kill()
        if self.broker is not None:
            self.broker.stop()

    def meter(self, clock_offset=0):
        if self.transport == "mqtt":
            m = processes.Meter(self.work, "meter-a", self.key, "", clock_offset=clock_offset,
                                **self.broker.meter_settings())
        else:
            m = processes.Meter(self.work, "meter-a", self.key, self.he.url,
                                clock_offset=clock_offset)
        self.procs.append(m)
        return m.start()

    def rows(self, sql, *args):
        db = sqlite3.connect("file:%s?mode=ro" % self.he.db, uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


@pytest.mark.parametrize("start", [Y2000, Y2040], ids=["2000", "2040"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_board_clock_in_2000_or_2040_joins_at_once(tmp_path, transport, start):
    with Site(tmp_path, transport) as site:
        t0 = time.monotonic()
        meter = site.meter(clock_offset=int(start - time.time()))
        processes.wait_until(lambda: site.api.get("/v1/devices/meter-a/readings").json(), 30,
                             "the first reading from a meter whose clock started in %d"
                             % time.gmtime(start).tm_year)
        joined = time.monotonic() - t0
        started = [json.loads(line) for line in meter.log().splitlines()
                   if '"started"' in line and line.startswith("{")]
        assert started, "no start line in the meter's log:\n" + meter.log()[:1000]
        started = started[0]
        assert abs(started["unix"] - start) < 60, "the board's clock did not start off"
        # the refusal is answered with the time and retried at once: no back-off
        assert joined < 20, "joined after %.1f s:\n%s" % (joined, meter.log()[-2000:])
        w = processes.run_work(site.api, "meter-a", "read")
        assert w["status"] == "done", w


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wiping_a_meters_flash_mid_run_loses_nothing(tmp_path, transport):
    with Site(tmp_path, transport) as site:
        meter = site.meter()

        def stored(epoch_is_old, kind="%"):
            op = "=" if epoch_is_old else "!="
            return site.rows("SELECT seq, kind, body FROM items WHERE device = 'meter-a' AND "
                             "kind LIKE ? AND epoch %s ? ORDER BY seq" % op, kind, old_epoch)

        processes.wait_until(lambda: len(site.rows(
            "SELECT 1 FROM items WHERE device = 'meter-a' AND kind = 'reading'")) >= 5, 40,
            "five readings from the first life")
        meter.kill()
        old_epoch = site.rows("SELECT epoch FROM devices WHERE id = 'meter-a'")[0][0]
        before = stored(True)
        shutil.rmtree(meter.state)                  # a wiped flash, or a swapped board
        site.meter()
        processes.wait_until(lambda: len(stored(False, "reading")) >= 3, 40,
                             "three readings from the wiped meter")
        seqs = [s for s, _, _ in stored(False)]
        # seq 0: the head-end's notice of the new epoch; then every item of the new life
        assert seqs == list(range(len(seqs))), "the new life's items were lost: %s" % seqs
        assert stored(True) == before, "the old life's items changed"
        events = site.api.get("/v1/devices/meter-a/events?limit=100").json()
        notes = [e["body"] for e in events if e["kind"] == "notice"
                 and e["body"].get("what") == "new outbox epoch"]
        assert [n["previous"] for n in notes] == [old_epoch], notes
