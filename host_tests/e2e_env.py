"""The shared set-up of the end-to-end firewall proof (test_e2e.py): the lab, the head-end
in its outside namespace, one meter per site, and the helpers the scenarios use. The set-up
is parametrized over the transport: `http` (the meters long-poll the head-end) and `mqtt`
(mosquitto runs in the outside namespace next to the head-end and its bridge; the meters
connect to the broker), so every scenario runs once for each (test ids `[http]`, `[mqtt]`);
then over HTTP with the meters speaking XML, SOAP and WBXML (`[xml]`, `[soap]`, `[wbxml]`):
only the encoding varies, not a cross product with the transports. Over `xmpp` and `email`
the private Prosody, or dovecot + postfix, run in the outside namespace beside the head-end
(lab/servers.py) and each site may connect only to their ports; xmpp runs the scenarios of
MESSAGING_SCENARIOS (the rest stay with http and mqtt: the root lane's time), email those of
SCENARIOS["email"] (all of them, and its own in test_e2e_email.py)."""


import json
import math
import os
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from headend import broker as headend_broker  # noqa: E402
from lab import netlab, processes, runner, servers

MARGIN = 3                 # head-end presence margin_min (s) for scenario 7
REPORT_S = 1               # meter reading interval (s)
# readings a meter's outbox holds in RAM at its default persist_s (firmware/app.py): a kill
# takes those the head-end had not stored yet
HOLD = runner.import_firmware("live_config").outbox_hold({"persist_s": 60, "report_s": REPORT_S})
KILLS = 5                  # scenario 5: kill -9 this many times
SEED = int(os.environ.get("BC_E2E_SEED", "20250105"))
BLOCKED_TIMEOUT = 2.0      # an inbound probe gives up after this long
METERS = {"meter-a": "a", "meter-b": "b"}
TRANSPORTS = ("http", "mqtt")
MESSAGING = ("xmpp", "email")   # a messaging server beside the head-end; sites confined to it
# what runs over MESSAGING: the firewall, a read round trip, work queued while a meter is
# down, and the server's restart (test_e2e_restart.py, which runs over MESSAGING only)
MESSAGING_SCENARIOS = ("test_1_nothing_outside_can_connect_in",
                       "test_2_operator_command_round_trip",
                       "test_4_work_queued_while_down_is_delivered",
                       "test_9_server_restart_loses_and_duplicates_nothing")
# over xmpp only: an operator's XMPP client beside the server (test_e2e_xmpp.py)
XMPP_SCENARIOS = ("test_10_operator_sees_each_presence_change",
                  "test_11_operator_reads_a_meter_from_the_chat",
                  "test_12_alarm_escalates_past_an_unavailable_operator")
# and over xmpp besides MESSAGING_SCENARIOS (a few seconds each)
XMPP_ALSO = ("test_3_rendezvous_a_asks_b", "test_5_kill_9_loses_and_duplicates_nothing",
             "test_6_group_command_reports_each_outcome",
             "test_7_presence_unavailable_and_back",
             "test_8_signed_update_reaches_a_meter_behind_its_firewall")
ENCODINGS = ("xml", "soap", "wbxml")   # over http, beside the transports' JSON runs
# the email lab's head-end probes every meter by mail this often (presence polled by email),
# and expects an email meter at least every 10 s (`next`; 60 s by default), so a silent one
# goes `unavailable` within seconds (scenario 7)
MAIL_PROBE_S = 60
EMAIL_SETTINGS = {"mail_probe_s": MAIL_PROBE_S, "mqtt_heartbeat": 10}
MQTT_KEEPALIVE = 10        # the meters' mqtt_keepalive (s; the firmware's minimum): the
                           # broker drops a silent client after 1.5 x this (scenario 7)
XMPP_PROBE_S = 5           # over xmpp the head-end pings each meter this often (xmpp_probe_s);
PING_TIMEOUT_S = 10        # one unanswered for this long records `unavailable` (scenario 7)



def _why_skip():
    if os.geteuid() != 0:
        return "the e2e lab needs root to create network namespaces (uid %d)" % os.geteuid()
    missing = ["%s (%s)" % (tool, pkg) for tool, pkg in (("ip", "iproute2"), ("nft", "nftables"))
               if not shutil.which(tool)]
    if missing:
        return "the e2e lab needs " + ", ".join(missing) + " installed"
    name = "bc-probe-%s" % uuid.uuid4().hex[:6]
    try:  # root in a container may still lack CAP_NET_ADMIN or nf_tables
        for cmd in (["ip", "netns", "add", name],
                    ["ip", "netns", "exec", name, "nft", "add", "table", "inet", "bc_probe"]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            if r.returncode:
                return "cannot build a network lab here: %s: %s" % (" ".join(cmd), r.stderr.strip())
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return None


def _why_skip_mqtt():
    try:
        headend_broker.find("mosquitto")
    except headend_broker.BrokerError as e:
        return "the mqtt transport needs mosquitto: %s" % e
    return None


SKIP = _why_skip()


# over email: every scenario (8, the firmware update, is about 105 mail round trips of 8 KiB
# chunks: some 3 minutes under load), and the email-only ones (test_e2e_email.py: presence
# polled by email, an alarm mailed to an operator)
SCENARIOS = {"email": MESSAGING_SCENARIOS + (
    "test_3_rendezvous_a_asks_b", "test_5_kill_9_loses_and_duplicates_nothing",
    "test_6_group_command_reports_each_outcome", "test_7_presence_unavailable_and_back",
    "test_8_signed_update_reaches_a_meter_behind_its_firewall",
    "test_email_a_presence_polled_by_email", "test_email_b_alarm_mailed_to_operator_and_acked")}


def selected(test, param):
    """Whether scenario `test` (its function name) runs for the env param."""
    if test in XMPP_SCENARIOS:
        return param == "xmpp"
    if param == "xmpp" and test in XMPP_ALSO:
        return True
    if param in SCENARIOS:
        return test in SCENARIOS[param]
    if param in MESSAGING:
        return test in MESSAGING_SCENARIOS
    return test != "test_9_server_restart_loses_and_duplicates_nothing" \
        and not test.startswith("test_email_")


class Env:
    """The lab, the head-end (and for mqtt the broker), the two meters and an operator API
    client (from `out`). `endpoints` are the (address, port)s the meters may connect to:
    the head-end's for http, the broker's for mqtt, the server's (lab/servers.py) for xmpp
    and email, whose sites may connect nowhere else."""

    def __init__(self, work, lab, transport, encoding="json"):
        self.dir, self.lab, self.transport = work, lab, transport
        self.encoding = encoding    # the meters' (docs/protocol.md "Encodings")
        self.headend = self.broker = self.api = self.admin = self.server = None
        self.endpoints = set()
        self.meters = {}

    def wait(self, predicate, timeout, what, interval=0.2):
        """processes.wait_until, but a timeout shows the tails of the logs."""
        try:
            return processes.wait_until(predicate, timeout, what, interval)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.logs())) from None

    def logs(self, lines=12):
        parts = [("head-end", self.headend.log() if self.headend else "")]
        if self.broker is not None:
            parts.append(("mosquitto", self.broker.log()))
        if self.server is not None:
            parts.append((self.transport + " server", self.server.log()))
        parts += [(name, m.log()) for name, m in self.meters.items()]
        return "\n".join("--- %s log (last %d lines):\n%s" % (name, lines, "\n".join(
            text.splitlines()[-lines:])) for name, text in parts)

    def get(self, path):
        r = self.api.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def queue(self, device, op, args=None, **extra):
        r = self.api.post("/v1/devices/%s/work" % device,
                          json=dict({"op": op, "args": args or {}}, **extra))
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def work(self, wid):
        return self.get("/v1/work/%s" % wid)

    def finished(self, wid, timeout=None):
        """The work's final record; timeout (s) defaults to 30, 60 over a messaging server
        (a meter coming back logs in to it first)."""
        def final():
            w = self.work(wid)
            return w if w["status"] not in ("queued", "held", "delivered") else None
        timeout = timeout or (60 if self.server is not None else 30)
        return self.wait(final, timeout, "work %s to finish" % wid)

    def run(self, device, op, args=None, timeout=None, **extra):
        return self.finished(self.queue(device, op, args, **extra), timeout)

    def device(self, device):
        return self.get("/v1/devices/%s" % device)

    def readings(self, device):
        return self.get("/v1/devices/%s/readings?limit=10000" % device)

    def presence(self, device):
        return {p["device"]: p for p in self.get("/v1/presence")}[device]

    def messages(self, ref):
        got = self.run("meter-a", "get_messages")["result"]["messages"]
        return [m for m in got if m.get("ref") == ref]

    def stored_items(self, device):
        """{seq: (kind, body)} of everything the head-end stored for device (its SQLite file,
        read-only; WAL lets this read run beside the server)."""
        db = sqlite3.connect("file:%s?mode=ro" % self.headend.db, uri=True, timeout=10)
        try:
            rows = db.execute("SELECT seq, kind, body FROM items WHERE device = ?", (device,))
            return {seq: (kind, json.loads(body)) for seq, kind, body in rows}
        finally:
            db.close()

    def lives(self, device):
        """The wall time each start of the meter printed (`started` line, key `unix`)."""
        out = []
        for line in self.meters[device].log().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("type") == "started":
                out.append(rec["unix"])
        return out

    def start(self, device):
        """(Re)start a meter; returns once it printed its `started` line."""
        n = len(self.lives(device))
        self.meters[device].start()
        self.wait(lambda: len(self.lives(device)) > n, 20, "%s to start" % device, 0.05)

    def running(self, device):
        proc = self.meters[device].proc
        return proc is not None and proc.poll() is None


def make_env(param, tmp_path_factory):
    """The body of the session fixture `env` (conftest.py): one lab, head-end and pair of
    meters per transport or encoding, shared by every e2e module."""
    encoding = param if param in ENCODINGS else "json"
    transport = "http" if param in ENCODINGS else param
    if SKIP is not None:
        pytest.skip(SKIP)
    if transport == "mqtt" and _why_skip_mqtt():
        pytest.skip(_why_skip_mqtt())
    if servers.missing(transport):
        pytest.skip(servers.missing(transport))
    work = tmp_path_factory.mktemp("e2e-%s" % param)
    lab = netlab.Lab("bc-e%s" % uuid.uuid4().hex[:6])
    e = Env(work, lab, transport, encoding)
    try:
        lab.up()
        config = {"margin_min": MARGIN, "peer_rules": [
            {"from": "*", "to": "*", "ops": ["read"]}]}         # the rendezvous test's send
        srv = e.server = servers.for_transport(transport, work, lab)
        if srv is not None:
            srv.start()
            config.update(srv.headend_settings())
            if transport == "xmpp":     # presence polled (issue 15, item 5): scenario 7
                config["xmpp_probe_s"] = XMPP_PROBE_S
            if transport == "email":
                config.update(EMAIL_SETTINGS)
            e.endpoints = {(lab.headend_ip, port) for port in srv.ports}
            for site in METERS.values():
                srv.confine(site)
        settings = work / "headend.json"
        settings.write_text(json.dumps(config))
        settings.chmod(0o600)                   # the server's passwords
        he = e.headend = processes.Headend(work, host=lab.headend_ip, lab=lab,
                                         extra=["--config", str(settings)])
        token = e.headend_token = he.add_token("alice", "operator")
        for name in sorted(set(getattr(srv, "OPERATORS", ())) - {"alice"}):  # xmpp: bob
            he.add_token(name, "operator")
        if transport == "mqtt":
            # the broker in `out` on the head-end's address, beside the head-end (its bridge)
            e.broker = processes.Broker(work, he.db, host=lab.headend_ip, lab=lab, ns="out")
            e.broker.start()
            he.extra += e.broker.serve_args()
            e.endpoints = {(lab.headend_ip, e.broker.port)}
        elif srv is None:
            e.endpoints = {(lab.headend_ip, he.port)}
        he.start(timeout=60)     # a loaded machine (make test beside other builds)
        e.api = he.api(token)
        e.admin = he.api(he.add_token("ada", "admin"))     # registering needs admin/utility
        keys = {}
        for name in METERS:   # through the API: poll default_poll (0), continuous long-poll
            r = e.admin.post("/v1/devices", json={"id": name})
            assert r.status_code == 201 and r.json()["poll"] == 0, r.text
            keys[name] = r.json()["key"]
        if transport == "mqtt":
            e.broker.reload()                # the meters' logins and ACLs, now registered
            e.wait(lambda: e.get("/v1/mqtt")["connected"], 30, "the bridge to connect")
            link = dict.fromkeys(METERS, e.broker.meter_settings(keepalive=MQTT_KEEPALIVE))
            url = ""
        elif srv is not None:
            for name in METERS:
                srv.add_meter(name)
            link, url = {name: srv.meter_settings(name) for name in METERS}, ""
        else:
            link, url = dict.fromkeys(METERS, {"encoding": encoding}), he.url
        for name, site in METERS.items():
            e.meters[name] = processes.Meter(work, name, keys[name], url, lab=lab, ns=site,
                                          report_s=REPORT_S, **link[name])
            e.start(name)
        for name in METERS:
            e.wait(lambda name=name: e.readings(name), 60, "the first reading from %s" % name)
            got = e.device(name)["transport"]
            assert got == transport, (name, "exchanges over %s, not %s" % (got, transport))
        if encoding != "json":      # the head-end answered the meters in their encoding
            text = e.api.get("/metrics").text
            line = 'backchannel_exchanges_by_encoding_total{encoding="%s"}' % encoding
            assert line in text and float(text.split(line)[1].split()[0]) > 0, encoding
        yield e
    finally:
        try:
            if e.broker is not None:
                e.broker.stop()
        finally:
            try:
                lab.down()      # kills the head-end, broker, server, meters and the API helper
            finally:            # then the server's files, when nothing can write there again
                if e.server is not None:
                    e.server.close()


def drop_counters(lab, site):
    """Packets counted by the site firewall's `ct state new counter drop` rule."""
    for line in lab.check_output(site, "nft list table inet bc_fw").splitlines():
        if "ct state new" in line and "drop" in line:
            return int(line.split("packets")[1].split()[0])
    raise AssertionError("no `ct state new ... drop` rule in %s's firewall" % site)



def read_result(body):
    """A `read` result: the registers, and the live reading once the meter has one (work
    that waited for a restart runs on the first exchange, before the first reading)."""
    reading = body.get("reading", {"vrms": 230})
    return body["registers"]["import_wh"] >= 0 and abs(reading["vrms"] - 230) < 2.3



def _outbox_on_flash(state_dir):
    """(acked seq, every intact record) in a meter's outbox directory, read with
    firmware/outbox_segments.py and store.py on CPython. Read-only; only while the meter is
    stopped."""
    import outbox_segments
    import store
    d = Path(state_dir) / "outbox"
    acked = store.read_record(str(d / "acked"))
    records = []
    for seg in sorted(d.glob("*.seg"), key=lambda p: int(p.stem)):
        with open(seg, "rb") as f:
            records += [item for item, _ in outbox_segments.records(f, 4096) if item is not None]
    return (int(acked) if acked else 0), records


def _interval(t, start):
    """(k, phase): t = start + (k + phase) * REPORT_S with k whole, phase in [-0.01, 0.99)
    (a reading's time is whole ms on the meter, and time directives move its clock by ms)."""
    x = (t - start) / REPORT_S
    k = math.floor(x + 0.01)
    return k, x - k


def _same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            abs(a - b) <= 1e-9 * max(1.0, abs(a))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return a == b
