"""Running the NATS cluster that nats_config.py describes: Debian's `nats-server`, one process
per node, each from its own config in the project's directory (never /etc/nats-server.conf
or the package's service). Installed on first use when running as root (apt-get), as the
lab does for mosquitto and tinyproxy. For the tests, the sim, the fault campaign and a
one-machine trial; a real deployment runs one node per machine (`backchannel nats`)."""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from . import daemon, nats_config

PACKAGE = "nats-server"


class NatsError(Exception):
    """One line for the user."""


def binary():
    found = shutil.which("nats-server")
    if found:
        return found
    return "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None


def ensure_installed():
    """Install Debian's nats-server when missing and running as root; why not, or None."""
    if binary() is None and os.geteuid() == 0 and shutil.which("apt-get"):
        for cmd in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", PACKAGE]):
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           stdin=subprocess.DEVNULL, timeout=600,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return missing_reason()


def missing_reason():
    if binary() is None:
        return "nats-server not found (Debian: apt-get install nats-server)"
    return None


def command(directory, name):
    exe = binary()
    if exe is None:
        raise NatsError(missing_reason())
    return [exe, "-c", str(Path(directory).resolve() / nats_config.node_conf(name))]


def healthy(node, timeout=2.0, server_only=False):
    """The node's /healthz says ok: it serves clients and its JetStream is current (with
    server_only, JetStream itself only: not each stream and consumer, of which an MQTT
    session's consumer can stay "not current" for minutes after a node is killed, seen for
    over 180 s on 2.9.10)."""
    url = "http://%s:%d/healthz%s" % (node["host"], node["http"],
                                      "?js-server-only=true" if server_only else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200 and json.loads(r.read()).get("status") == "ok"
    except (OSError, ValueError):
        return False


class NatsCluster:
    """The nodes of a `nats-config` directory on this machine: start(), kill(name),
    start_node(name), stop()."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.nodes = {n["name"]: n for n in nats_config.info(self.dir)["nodes"]}
        self.procs = {}

    def log(self, name):
        return self.dir / ("%s.log" % name)

    def start_node(self, name, timeout=20.0):
        node = self.nodes[name]
        try:
            self.procs[name] = daemon.start(command(self.dir, name), "nats-server " + name,
                                            node["host"], node["mqtt"], self.log(name),
                                            timeout)
        except daemon.DaemonError as e:
            raise NatsError(str(e)) from None
        return self.procs[name]

    def start(self, timeout=60.0):
        """Every node, then wait until each is healthy (JetStream has its quorum: MQTT
        sessions need it)."""
        try:
            for name in self.nodes:
                self.start_node(name)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout=60.0, names=None, server_only=False):
        names = list(names or self.procs)
        deadline = time.monotonic() + timeout
        while True:
            sick = [n for n in names if not healthy(self.nodes[n], server_only=server_only)]
            if not sick:
                return
            for n in sick:
                p = self.procs.get(n)
                if p is not None and p.poll() is not None:
                    raise NatsError("nats-server %s exited: %s" % (n, daemon.tail(self.log(n))))
            if time.monotonic() > deadline:
                raise NatsError("nats-server %s not healthy within %g s: %s"
                                % (", ".join(sick), timeout, daemon.tail(self.log(sick[0]))))
            time.sleep(0.2)

    def kill(self, name, sig=signal.SIGKILL):
        p = self.procs.pop(name, None)
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            p.wait(timeout=20)

    def stop(self):
        for name in list(self.procs):
            p = self.procs.pop(name)
            daemon.stop(p)

    def mqtt_host(self, names=None):
        """The meters' mqtt_host for these nodes (all by default): "host:port,..."."""
        return ",".join("%s:%d" % (self.nodes[n]["host"], self.nodes[n]["mqtt"])
                        for n in (names or self.nodes))
