"""Real processes for system tests: the head-end (uvicorn via tools/backchannel) and meters
(the firmware app on the MicroPython unix port), optionally inside a netlab namespace."""

import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from headend.workers import free_ports  # noqa: F401 - the labs take theirs from here
from lab import runner
from sim import METER_MAIN

ROOT = runner.ROOT
HEADEND = [sys.executable, "-m", "headend"]   # tools/backchannel, under this interpreter


def free_port():
    return free_ports(1)[0]


def spawn(cmd, env, log, lab=None, ns=None):
    out = open(log, "ab")
    if lab is not None:
        return lab.run(ns, cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_until(predicate, timeout, what, interval=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))


class Headend:
    """certfile + keyfile serve https (lab/pki.py makes them); cafile is the CA the
    operator API client verifies the server with (default: the system store)."""

    def __init__(self, workdir, host="127.0.0.1", port=None, lab=None, ns="out", extra=(),
                 certfile=None, keyfile=None, cafile=None, config=None, db=None, db_key=None):
        """db, db_key: another database (a postgresql:// URL) and its device-key file."""
        self.dir = Path(workdir)
        self.db = db or str(self.dir / "hub.db")
        self.db_key = db_key
        self.host = host
        self.port = port or free_port()
        self.lab, self.ns = lab, ns
        self.extra = list(extra)
        if db_key:
            self.extra += ["--db-key", str(db_key)]
        if config is not None:             # settings for --config (docs/headend.md)
            path = self.dir / "headend-config.json"
            path.write_text(json.dumps(config))
            self.extra += ["--config", str(path)]
        if certfile:
            self.extra += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
        elif not host.startswith("127."):      # a netlab namespace's closed network
            self.extra.append("--insecure-http")
        self.cafile = str(cafile) if cafile else None
        self.proc = None
        self.url = "%s://%s:%d" % ("https" if certfile else "http", host, self.port)

    def cli(self, *args):
        env = dict(os.environ)
        if self.db_key:
            env["BACKCHANNEL_DB_KEY"] = str(self.db_key)
        p = subprocess.run([*HEADEND, *args], capture_output=True,
                           text=True, timeout=60, env=env)
        if p.returncode:
            raise RuntimeError("backchannel %s: %s" % (" ".join(args), p.stderr))
        return p.stdout.strip()

    def add_device(self, device_id):
        return self.cli("add-device", device_id, "--db", self.db).split()[-1]

    def add_token(self, name, role):
        return self.cli("add-token", name, "--role", role, "--db", self.db).split()[-1]

    def start(self, timeout=60):
        """timeout: Python starts slowly on a loaded machine (20 s was seen to run out)."""
        cmd = [*HEADEND, "serve", "--db", self.db, "--host", self.host,
               "--port", str(self.port)] + self.extra
        self.proc = spawn(cmd, dict(os.environ), self.dir / "headend.log", self.lab, self.ns)
        try:
            wait_until(self._healthy, timeout, "the head-end to answer /v1/health")
        except BaseException:
            self.kill()     # a head-end that never answered must not outlive its test
            raise
        return self

    def _healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError("head-end exited:\n" + self.log())
        if getattr(self, "_health", None) is None:
            self._health = self.api(None)     # one client for the whole wait
        try:
            return self._health.get("/v1/health").status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, token):
        headers = {"Authorization": "Bearer %s" % token} if token else {}
        if self.lab is not None:
            return LabHttp(self.lab, self.url, headers, ns=self.ns, cafile=self.cafile)
        verify = ssl.create_default_context(cafile=self.cafile) if self.cafile else True
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=verify)

    def log(self):
        path = self.dir / "headend.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)


class LabHttp:
    """httpx-like calls made from inside a lab namespace (the outside one by default), through
    one long-lived python helper there (started on first use, killed by lab.down() or close()):
    each call is a JSON line each way, so calls cost milliseconds, not a process start.
    Connection failures raise httpx.TransportError, as httpx itself would."""

    _HELPER = (
        "import httpx, json, ssl, sys\n"
        "ca = sys.argv[1]\n"
        "verify = ssl.create_default_context(cafile=ca) if ca else True\n"
        "c = httpx.Client(timeout=30, verify=verify)\n"
        "for line in sys.stdin:\n"
        "    method, url, headers, body = json.loads(line)\n"
        "    try:\n"
        "        r = c.request(method, url, headers=headers, json=body)\n"
        "        hs = {k: v for k, v in r.headers.items() if not k.startswith('content-')}\n"
        "        out = [r.status_code, r.text, hs]\n"
        "    except httpx.HTTPError as e:\n"
        "        out = [None, '%s: %s' % (type(e).__name__, e)]\n"
        "    sys.stdout.write(json.dumps(out) + '\\n')\n"
        "    sys.stdout.flush()\n")

    def __init__(self, lab, base, headers, ns="out", cafile=None, timeout=40):
        self.lab, self.base, self.headers = lab, base, headers
        self.ns, self.cafile, self.timeout = ns, cafile, timeout
        self._proc = None
        self._lock = threading.Lock()

    def _helper(self):
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self.lab.run(self.ns, [sys.executable, "-c", self._HELPER,
                                                self.cafile or ""],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self._proc

    def request(self, method, path, json_body=None, headers=None):
        with self._lock:
            proc = self._helper()
            try:
                proc.stdin.write(json.dumps([method, self.base + path,
                                             dict(self.headers, **(headers or {})),
                                             json_body]) + "\n")
                proc.stdin.flush()
                ready = select.select([proc.stdout], [], [], self.timeout)[0]
                line = proc.stdout.readline() if ready else ""
            except (OSError, ValueError):   # the helper died (broken pipe, closed file)
                line = ""
            if not line:
                self.close()
                raise httpx.TransportError("%s %s: no answer from the lab http helper in %s"
                                           % (method, path, self.ns))
        status, text, *rest = json.loads(line)
        if status is None:
            raise httpx.TransportError("%s %s: %s" % (method, path, text))
        return httpx.Response(status, text=text, headers=rest[0] if rest else None)

    def close(self):
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, json=None, headers=None):
        return self.request("POST", path, json, headers)

    def patch(self, path, json=None):
        return self.request("PATCH", path, json)

    def put(self, path, json=None):
        return self.request("PUT", path, json)

    def delete(self, path):
        return self.request("DELETE", path)


class Broker:
    """mosquitto for the MQTT transport, the way an operator runs it: `backchannel
    broker-config` writes its files (DIR/mosquitto.conf, passwd, acl, bridge.json) from the
    head-end's device registry, `backchannel broker --dir DIR` runs it on a free port (in a
    lab namespace, bound to the head-end's address there). Pass `serve_args()` to the
    Headend (its --mqtt-dir); run configure() again after registering meters (the running
    broker rereads its passwd and acl)."""

    def __init__(self, workdir, db, host="127.0.0.1", port=None, lab=None, ns="out"):
        self.dir = Path(workdir) / "broker"
        self.db = str(db)
        self.host = host
        self.port = port or free_port()
        self.lab, self.ns = lab, ns
        self.proc = None

    def configure(self):
        # in a netlab namespace the plain listener is on the lab's closed network
        insecure = [] if self.host.startswith("127.") else ["--insecure-plain"]
        p = subprocess.run([*HEADEND, "broker-config", "--db", self.db,
                            "--dir", str(self.dir), "--port", str(self.port),
                            "--bind", self.host, *insecure], capture_output=True, text=True,
                           timeout=60)
        if p.returncode:
            raise RuntimeError("backchannel broker-config: %s" % p.stderr)
        return p.stdout.strip()

    def serve_args(self):
        return ["--mqtt-dir", str(self.dir)]

    def reload(self, timeout=10):
        """configure() again for a running broker (it sends the SIGHUP), and wait until
        mosquitto has reread its files (its log says `Reloading config.`)."""
        seen = self.log().count("Reloading config")
        self.configure()
        wait_until(lambda: self.log().count("Reloading config") > seen, timeout,
                   "mosquitto to reload its passwd and acl")

    def meter_settings(self, keepalive=10):
        """Firmware config keys for a Meter that talks MQTT to this broker (keepalive None:
        the firmware's default)."""
        # the plain listener: loopback, or the lab's closed network (meters default to TLS)
        out = {"transport": "mqtt", "mqtt_host": self.host, "mqtt_port": self.port,
               "mqtt_tls": False}
        if keepalive is not None:
            out["mqtt_keepalive"] = keepalive
        return out

    def start(self, configure=True, timeout=60):
        """timeout: `backchannel broker` is Python, slow to start on a loaded machine."""
        if configure or not (self.dir / "mosquitto.conf").exists():
            self.configure()
        self._logged = len(self.log())
        cmd = [*HEADEND, "broker", "--dir", str(self.dir)]
        self.proc = spawn(cmd, dict(os.environ), self.dir / "mosquitto.log", self.lab,
                           self.ns)
        wait_until(self._listening, timeout, "mosquitto to listen on %s:%d"
                   % (self.host, self.port))
        return self

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError("mosquitto exited:\n" + self.log())
        if self.lab is not None:         # its log says so once every listener is open
            return " running" in self.log()[self._logged:]
        try:
            socket.create_connection((self.host, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def log(self):
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, sig=signal.SIGTERM):
        """SIGTERM: mosquitto saves its persistent sessions on the way out."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    kill = stop


class Meter:
    """settings are firmware config keys, e.g. ca_file= (PEM or DER) for an https url;
    scenario= a scenario file for the simulated board; interpreter= "cpython" runs the same
    firmware under CPython (which, unlike the unix port, can catch SIGTERM)."""

    def __init__(self, workdir, device_id, key, url, lab=None, ns=None, scenario=None,
                 clock_offset=0, interpreter="micropython", **settings):
        self.scenario = scenario
        self.clock_offset = clock_offset    # the board's clock starts this many seconds off
        self.interpreter = interpreter
        self.dir = Path(workdir) / device_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = self.dir / "state"
        self.config = self.dir / "config.json"
        cfg = {"device_id": device_id, "device_key": key, "server_url": url, "report_s": 1}
        cfg.update(settings)
        self.config.write_text(json.dumps(cfg))
        self.lab, self.ns = lab, ns
        self.proc = None

    def start(self):
        args = [str(self.config), str(self.state)] + ([str(self.scenario)] if self.scenario else [])
        if self.clock_offset:
            args.append("--clock-offset=%d" % self.clock_offset)
        cmd, env = runner.command(self.interpreter, METER_MAIN, *args)
        self.proc = spawn(cmd, env, self.dir / "meter.log", self.lab, self.ns)
        return self

    def log(self):
        path = self.dir / "meter.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)


def run_work(api, device, op, args=None, timeout=30, **extra):
    """Queue work and wait for its outcome; returns the work record."""
    r = api.post("/v1/devices/%s/work" % device, json=dict({"op": op, "args": args or {}}, **extra))
    assert r.status_code == 202, r.text
    wid = r.json()["id"]

    def finished():
        w = api.get("/v1/work/%s" % wid).json()
        return w if w["status"] not in ("queued", "held", "delivered") else None

    return wait_until(finished, timeout, "work %s (%s) to finish" % (wid, op))
