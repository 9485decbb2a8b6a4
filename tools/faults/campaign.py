"""The fault campaigns' rig (tools/faults/cli.py): a netlab lab with the real head-end in `out`
and real meters (MicroPython unix port) in site a, plus the failure type and `check` the
campaigns share, and why_skip (can a lab be built here?)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

from lab import netlab, processes, runner, servers

ROOT = runner.ROOT

REPORT_S = 1
PERSIST_S = 5          # the meters' persist_s (the firmware's minimum): energy on flash lags
                       # true energy by less than this many seconds of metering
# readings the meters' outboxes hold in RAM (live_config.outbox_hold): a power cut loses
# those the head-end had not stored yet
HOLD = PERSIST_S // REPORT_S
MQTT_KEEPALIVE = 10    # the MQTT meters' keepalive (the firmware's minimum)
TRANSPORTS = ("http", "mqtt", "email", "xmpp")


class CampaignFailed(AssertionError):
    pass


def check(cond, *what):
    if not cond:
        raise CampaignFailed(" ".join(str(w) for w in what))


def why_skip(transport="http"):
    """None if a lab can be built here (with mosquitto for mqtt, the private mail server for
    email, Prosody for xmpp), else the reason."""
    if servers.missing(transport):
        return servers.missing(transport)
    if transport == "mqtt":
        from headend import broker
        try:
            broker.find("mosquitto")
        except broker.BrokerError as e:
            return "the mqtt transport needs mosquitto: %s" % e
    if os.geteuid() != 0:
        return "fault campaigns need root for network namespaces (uid %d)" % os.geteuid()
    missing = [t for t in ("ip", "nft") if not shutil.which(t)]
    if missing:
        return "fault campaigns need %s (iproute2, nftables)" % ", ".join(missing)
    name = "bc-fprobe-%s" % uuid.uuid4().hex[:6]
    try:
        for cmd in (["ip", "netns", "add", name],
                    ["ip", "netns", "exec", name, "nft", "add", "table", "inet", "bc_probe"]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            if r.returncode:
                return "cannot build a network lab: %s: %s" % (" ".join(cmd), r.stderr.strip())
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    try:
        runner.micropython_binary()
    except Exception as e:  # noqa: BLE001
        return "no MicroPython unix port: %s" % e
    return None


# --- the rig: a lab, the head-end in `out`, meters in site a -------------------------------

class Rig:
    """transport "http": the meters long-poll the head-end; "mqtt": they talk to mosquitto
    in `out` (on the head-end's address), which the head-end's bridge subscribes to;
    "email", "xmpp": to the private mail server or Prosody in `out` (lab/servers.py), site a
    allowed out only to its ports."""

    def __init__(self, work, log=print, transport="http"):
        if transport not in TRANSPORTS:
            raise ValueError("transport must be one of %s" % ", ".join(TRANSPORTS))
        self.dir = Path(work)
        self.log = log
        self.transport = transport
        self.lab = netlab.Lab("bc-f%s" % uuid.uuid4().hex[:6])
        self.headend = self.api = self.admin = self.broker = self.server = None
        self.meters = {}

    def __enter__(self):
        try:
            self.lab.up()
            he = self.headend = processes.Headend(self.dir, host=self.lab.headend_ip, lab=self.lab,
                                                extra=["--log-level", "warning"])
            token = he.add_token("faults", "operator")
            admin = he.add_token("faults-admin", "admin")      # registers the meters
            if self.transport == "mqtt":
                self.broker = processes.Broker(self.dir, he.db, host=self.lab.headend_ip,
                                            lab=self.lab, ns="out")
                self.broker.start()
                he.extra += self.broker.serve_args()
            self.server = servers.for_transport(self.transport, self.dir, self.lab)
            if self.server is not None:
                self.server.start()
                link = self.dir / "headend-link.json"
                link.write_text(json.dumps(self.server.headend_settings()))
                link.chmod(0o600)
                he.extra += ["--config", str(link)]
            he.start()
            self.api = he.api(token)
            self.admin = he.api(admin)
        except BaseException:
            self._down()
            raise
        return self

    def __exit__(self, *exc):
        self._down()

    def _down(self):
        try:
            if self.broker is not None:
                self.broker.stop()
        finally:
            try:
                self.lab.down()
            finally:    # after every process in the lab is gone (none writes there again)
                if self.server is not None:
                    self.server.close()

    def bridge_connected(self):
        r = self.api.get("/v1/mqtt")
        return r.status_code == 200 and r.json().get("connected")

    def add_meter(self, name, site="a", **settings):
        r = self.admin.post("/v1/devices", json={"id": name})
        check(r.status_code == 201, "register", name, r.status_code, r.text)
        cfg = dict(report_s=REPORT_S, persist_s=PERSIST_S)
        url = self.headend.url
        if self.transport == "mqtt":
            self.broker.reload()            # the new meter's login and ACL
            self.wait(self.bridge_connected, 30, "the MQTT bridge to connect")
            cfg.update(self.broker.meter_settings(keepalive=MQTT_KEEPALIVE))
            url = ""
        elif self.server is not None:
            self.server.add_meter(name)
            self.server.confine(site)
            cfg.update(self.server.meter_settings(name))
            url = ""
        cfg.update(settings)
        m = processes.Meter(self.dir, name, r.json()["key"], url, lab=self.lab, ns=site, **cfg)
        m.name = name
        self.meters[name] = m
        return m

    def wait(self, predicate, timeout, what, interval=0.1):
        try:
            return processes.wait_until(predicate, timeout, what, interval)
        except AssertionError as e:
            logs = [("head-end", self.headend.log())] + \
                ([("mosquitto", self.broker.log())] if self.broker else []) + \
                ([(self.transport, self.server.log())] if self.server else []) + \
                [(n, m.log()) for n, m in self.meters.items()]
            tails = "\n".join("--- %s:\n%s" % (n, "\n".join(t.splitlines()[-8:]))
                               for n, t in logs)
            raise CampaignFailed("%s\n%s" % (e, tails)) from None

    # meters
    def lives(self, m):
        out = []
        for line in m.log().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("type") == "started":
                out.append(rec["unix"])
        return out

    def start(self, m):
        n = len(self.lives(m))
        m.start()
        self.wait(lambda: len(self.lives(m)) > n, 20, "%s to start" % m.name, 0.02)

    @staticmethod
    def running(m):
        return m.proc is not None and m.proc.poll() is None

    def stop(self, m):
        m.kill(signal.SIGKILL)

    # operator
    def queue(self, device, op="read", **extra):
        r = self.api.post("/v1/devices/%s/work" % device,
                          json=dict({"op": op, "args": {}}, **extra))
        check(r.status_code == 202, "queue", r.status_code, r.text)
        return r.json()["id"]

    # the head-end's database, read-only (WAL lets this run beside the server)
    def query(self, sql, args=()):
        for _ in range(50):
            try:
                db = sqlite3.connect("file:%s?mode=ro" % self.headend.db, uri=True, timeout=10)
                try:
                    return db.execute(sql, args).fetchall()
                finally:
                    db.close()
            except sqlite3.OperationalError:   # the head-end is being restarted
                time.sleep(0.1)
        raise CampaignFailed("cannot read the head-end database")

    def stored(self, device):
        """{seq: (kind, body)} of everything the head-end stored for device."""
        return {s: (k, json.loads(b)) for s, k, b in
                self.query("SELECT seq, kind, body FROM items WHERE device = ?", (device,))}

    def stored_items(self, device):
        """[(epoch, seq, kind, body)] of everything stored for device, in storage order."""
        return [(e, s, k, json.loads(b)) for e, s, k, b in self.query(
            "SELECT epoch, seq, kind, body FROM items WHERE device = ? ORDER BY rowid",
            (device,))]

    def work_ids(self, device, op):
        """The ids of device's work items of one op."""
        from headend import workq
        return {workq.wid(n) for (n,) in self.query(
            "SELECT num FROM work WHERE device = ? AND op = ?", (device, op))}

    def stored_order(self, device):
        """Seqs in the order the head-end inserted them (rowid)."""
        return [s for (s,) in self.query("SELECT seq FROM items WHERE device = ? ORDER BY rowid",
                                       (device,))]

    def check_transport(self):
        """Every meter of the rig last exchanged over the rig's transport."""
        for name in self.meters:
            got = self.query("SELECT transport FROM devices WHERE id = ?", (name,))
            check(got and got[0][0] == self.transport, "%s exchanged over %s, not %s"
                  % (name, got[0][0] if got else None, self.transport))

    def work_rows(self, device):
        from headend import workq
        return {workq.wid(n): (st, ex) for n, st, ex in self.query(
            "SELECT num, status, executed FROM work WHERE device = ?", (device,))}

    def work_status(self, wid):
        r = self.api.get("/v1/work/%s" % wid)
        check(r.status_code == 200, "work", wid, r.status_code, r.text)
        return r.json()["status"]
