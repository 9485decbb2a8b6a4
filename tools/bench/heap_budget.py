"""The memory budget, measured: the smallest `-X heapsize` with which each scenario passes on
the board interpreter (32-bit, float32; lab/board_build.py), found by bisection in 2 KiB steps
(docs/performance.md, "Memory budget").

    python -m bench.heap_budget [--json] [--seconds S] [SCENARIO ...]

Scenarios: start-up with the modules of one configuration (start-none, start-http,
start-https, start-mqtt, start-mqtts, start-xmpp, start-email: tools/bench/heap_mp.py), and a
meter process (tools/sim/meter_main.py) metering and exchanging with a real head-end for S
seconds (default 20, report_s 1, one `read` work item): steady-http, steady-https (TLS,
pinned CA), steady-mqtt (mosquitto), steady-xmpp (Prosody, Direct TLS), steady-email (the
private postfix + dovecot, SMTPS and IMAP IDLE, mail_send_s 5; needs root), and batch-http
(an outbox filled beforehand, so the first exchange carries a full batch: 32 items or 16 KB),
and update-http (an OTA update while metering: a signed release of 20 KB in 4 KiB chunks,
each with its sha256, the manifest's P-256 verify, the switch).
A probe passes when the process is alive at the end with no MemoryError, the head-end
stored readings from it and the work finished (update-http: it reached `installing`).
Each figure is from source (.py), as `make sim` runs the firmware. About 25 minutes for all;
figures in docs/performance.md ("Memory budget"). `make heap-budget` runs it."""

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import mailsite, pki, processes, runner

HEAP_MP = runner.ROOT / "tools" / "bench" / "heap_mp.py"
KEY = "00112233445566778899aabbccddeeff"
STEP = 2
START = ("start-none", "start-http", "start-https", "start-mqtt", "start-mqtts", "start-xmpp",
         "start-email")
RUNNING = ("steady-http", "steady-https", "steady-mqtt", "steady-xmpp", "steady-email",
           "batch-http", "update-http")
PLAIN = ("steady-http", "batch-http", "update-http")   # on the plain HTTP head-end
RELEASE = "0.2.0"
SCRAM = "10000:c2FsdA==:%s:%s" % ("11" * 20, "22" * 20)     # start-up only: never logs in


def board_cmd(kib, script, *args):
    cmd, env = runner.command("board", script, *args)
    cmd[2] = "heapsize=%dK" % kib  # [binary, "-X", "heapsize=...", script, ...]
    return cmd, env


def bisect(passes, lo=32, hi=512):
    """The smallest KiB (a multiple of STEP) for which passes(kib) holds; lo fails."""
    if not passes(hi):
        return None
    while hi - lo > STEP:
        mid = (lo + hi) // 2 // STEP * STEP
        if passes(mid):
            hi = mid
        else:
            lo = mid
    return hi


class Start:
    def __init__(self, work, ca):
        self.work = work
        http = {"server_url": "http://127.0.0.1:9"}
        mqtt = {"transport": "mqtt", "mqtt_host": "127.0.0.1", "mqtt_tls": False}
        self.configs = {"start-none": {}, "start-http": http,
                        "start-https": {"server_url": "https://127.0.0.1:9", "ca_file": ca},
                        "start-mqtt": mqtt,
                        "start-mqtts": dict(mqtt, mqtt_tls=True, ca_file=ca),
                        "start-xmpp": {"transport": "xmpp", "xmpp_host": "127.0.0.1",
                                       "xmpp_domain": "im.test", "ca_file": ca,
                                       "xmpp_component": "fleet.im.test", "xmpp_scram": SCRAM},
                        "start-email": {"transport": "email", "server_url": "",
                                        "mail_host": "127.0.0.1", "mail_user": "m@mail.test",
                                        "mail_password": "x", "mail_to": "he@mail.test",
                                        "ca_file": ca}}

    def passes(self, name, kib):
        state = Path(tempfile.mkdtemp(dir=self.work))
        cfg = state / "config.json"
        cfg.write_text(json.dumps(dict(self.configs[name], device_id="m", device_key=KEY)))
        cmd, env = board_cmd(kib, HEAP_MP, state, "@%s" % cfg)
        p = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
        return p.returncode == 0 and b'"ok"' in p.stdout


class Site:
    """Two head-ends (HTTPS with the MQTT bridge and its broker; plain HTTP) for the probes."""

    def __init__(self, work, seconds, servers=True):
        """servers=False: no Prosody and no mail servers (HTTP, HTTPS and MQTT only)."""
        self.work = work
        self.seconds = seconds
        self.pki = work / "pki"
        pki.init(self.pki)
        for d in ("tls", "plain"):
            (work / d).mkdir()
        self.im = None
        xmpp = None
        if servers and shutil.which("prosody"):  # steady-xmpp: Prosody, the head-end its component
            from lab.im_process import ImServer

            self.im = ImServer(work)
            self.im.configure()
            xmpp = self.im.headend_config()
        self.mail = None
        if servers and mailsite.missing() is None:  # steady-email: private postfix + dovecot
            self.mail = mailsite.MailSite(self.pki).configure()
            xmpp = dict(xmpp or {}, **self.mail.headend_settings())
        self.tls = processes.Headend(work / "tls", certfile=self.pki / "server.pem",
                                     keyfile=self.pki / "server.key",
                                     cafile=self.pki / "ca.pem", config=xmpp)
        self.plain = processes.Headend(work / "plain")
        self.broker = processes.Broker(work, self.tls.db)
        self.n = 0
        self.template = None
        self.update_key = None

    def start(self):
        if self.im is not None:
            self.im.start()
        if self.mail is not None:
            self.mail.start()
        self.broker.start(timeout=90)   # a loaded machine: it may take a while
        self.tls.extra += self.broker.serve_args()
        self.api = {}
        for he in (self.tls, self.plain):
            he.start(timeout=90)    # a loaded machine: the head-end may take a while
            self.api[he] = he.api(he.add_token("bench", "operator"))
        return self

    def stop(self):
        for p in (self.plain, self.tls):
            p.kill()
        self.broker.stop()
        if self.im is not None:
            self.im.stop()
        if self.mail is not None:
            self.mail.remove()

    def _prefill(self):
        """A state dir whose outbox holds more readings than a batch carries."""
        d = self.work / "prefill"
        (d / "state").mkdir(parents=True)
        cfg = d / "config.json"
        cfg.write_text(json.dumps({"device_id": "prefill", "device_key": KEY, "report_s": 1}))
        cmd, env = runner.command("micropython", processes.METER_MAIN, cfg, d / "state",
                                  "--fast")
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(8)
        p.kill()
        p.wait()
        return d / "state"

    def launch(self, name, kib):
        """A meter process for scenario `name` under a heap of kib KiB, registered with its
        head-end (or broker): (device, api, its directory, the process, its log file)."""
        self.n += 1
        device = "%s-%d-%d" % (name, kib, self.n)
        he = self.plain if name in PLAIN else self.tls
        key = he.add_device(device)
        settings = {"device_id": device, "device_key": key, "report_s": 1}
        if name == "steady-https":
            settings.update(server_url=he.url, ca_file=str(self.pki / "ca.pem"))
        elif name == "steady-mqtt":
            self.broker.reload()
            settings.update(self.broker.meter_settings(), server_url="")
        elif name == "steady-xmpp":
            if self.im is None:
                raise RuntimeError("steady-xmpp needs prosody (apt-get install prosody)")
            self.im.add_meter(device)
            settings.update(self.im.meter_settings(device), server_url="")
        elif name == "steady-email":
            if self.mail is None:
                raise RuntimeError("steady-email: %s" % mailsite.missing())
            self.mail.add_meter(device)
            settings.update(self.mail.meter_settings(device, "imap", mail_send_s=5))
        else:
            settings["server_url"] = he.url
        if name == "update-http":
            settings["update_key"] = self._release()
        d = self.work / device
        d.mkdir()
        if name == "batch-http":
            if self.template is None:
                self.template = self._prefill()
            shutil.copytree(self.template, d / "state")
        (d / "config.json").write_text(json.dumps(settings))
        dump = ("--heap-dump",) if os.environ.get("BC_HEAP_DUMP") else ()
        cmd, env = board_cmd(kib, processes.METER_MAIN, d / "config.json", d / "state", *dump)
        log = open(d / "meter.log", "wb")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        return device, self.api[he], d, proc, log

    def restart(self, name):
        """Restart what the scenario's meter talks to (the meter reconnects)."""
        if name == "steady-mqtt":
            self.broker.stop()
            self.broker.start(configure=False, timeout=90)
            return
        he = self.plain if name in PLAIN else self.tls
        he.kill()
        he.start(timeout=90)

    def _release(self):
        """Sign and publish release RELEASE on the plain head-end (once): this firmware's
        version.py with the new version and 20 KB of data (five chunks). Its update_key."""
        if self.update_key is None:
            rel = self.work / "release"
            src = rel / "src"
            src.mkdir(parents=True)
            text = (runner.FIRMWARE / "version.py").read_text()
            (src / "version.py").write_text(text.replace('VERSION = "0.1.0"',
                                                         'VERSION = "%s"' % RELEASE))
            (src / "data.bin").write_bytes(bytes((i * 7919 + 13) % 251 for i in range(20000)))
            out = self.plain.cli("release", "keygen", "--out", str(rel / "keys"))
            self.update_key = out.split("update_key:")[1].split()[0]
            self.plain.cli("release", "sign", "--key", str(rel / "keys" / "release-key.pem"),
                           "--version", RELEASE, "--out", str(rel / "out"), str(src))
            self.plain.cli("release", "publish", str(rel / "out" / RELEASE), "--pub",
                           str(rel / "keys" / "release-key.pub"), "--db", self.plain.db)
        return self.update_key

    def _updated(self, api, device):
        """Offer RELEASE as an `update` op while the meter meters; whether it got as far as
        `installing` (every chunk fetched and hashed, the manifest verified, the switch made,
        the head-end told) in time."""
        release = api.get("/v1/releases/%s" % RELEASE).json()
        w = processes.run_work(api, device, "update", {"manifest": release["manifest"],
                                                      "sig": release["sig"]},
                               timeout=self.seconds)
        if w["status"] != "done":
            return False

        def switched():
            got = api.get("/v1/updates?device=%s" % device).json()
            return any(u["state"] in ("installing", "installed") for u in got)

        processes.wait_until(switched, self.seconds * 3, "%s installing" % RELEASE)
        return True

    def passes(self, name, kib):
        device, api, d, proc, log = self.launch(name, kib)
        ok = False
        try:
            end = time.monotonic() + self.seconds
            if name == "update-http":
                ok = self._updated(api, device)     # (the reboot may follow at once)
            else:
                w = processes.run_work(api, device, "read", timeout=self.seconds)
                time.sleep(max(0.0, end - time.monotonic()))
                got = api.get("/v1/devices/%s/readings?limit=1000" % device).json()
                # a batch: more readings than the meter made itself meanwhile
                need = self.seconds + 16 if name == "batch-http" else self.seconds // 3
                ok = proc.poll() is None and w["status"] == "done" and len(got) >= need
        except AssertionError:  # the work did not finish in time
            ok = False
        finally:
            proc.kill()
            proc.wait()
            log.close()
            text = (d / "meter.log").read_text(errors="replace")
            if name == "update-http":
                # up to the reboot: the simulator's reboot starts a new App in the same
                # process and heap, where a board resets and starts on an empty heap
                text = "".join(text.split('"type": "started"')[:2])
        return ok and "MemoryError" not in text


def measure(names, seconds=20):
    work = Path(tempfile.mkdtemp(prefix="heap-budget-"))
    out = {}
    site = None
    try:
        pki.init(work / "ca")
        start = Start(work, str(work / "ca" / "ca.pem"))
        for name in names:
            if name in START:
                out[name] = bisect(functools.partial(start.passes, name))
            else:
                if site is None:
                    site = Site(work, seconds).start()
                out[name] = bisect(functools.partial(site.passes, name), lo=64, hi=384)
            print("%-13s %s KiB" % (name, out[name]), file=sys.stderr, flush=True)
    finally:
        if site is not None:
            site.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench.heap_budget", description=__doc__.split("\n")[0])
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                    help="any of: %s (default: all)" % ", ".join(START + RUNNING))
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    bad = [s for s in a.scenarios if s not in START + RUNNING]
    if bad:
        ap.error("unknown scenario %s" % ", ".join(bad))
    if not runner.available("board"):
        print("heap budget: %s" % runner.board_missing_reason(), file=sys.stderr)
        return 2
    res = measure(a.scenarios or list(START + RUNNING), a.seconds)
    if a.json:
        print(json.dumps(res))
    else:
        for name, kib in res.items():
            print("%-13s %s" % (name, "fails at 512 KiB" if kib is None else "%d KiB" % kib))
    return 0


if __name__ == "__main__":
    sys.exit(main())
