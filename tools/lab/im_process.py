"""A real Prosody for the XMPP transport (docs/xmpp.md), the way an operator runs it:
`backchannel xmpp-config` writes its private config into DIR/im, `prosody -F` runs it on free
ports, `backchannel xmpp-account --meter` gives each meter an account and prints its login
keys (the meter never holds the password). Pass headend_config() into the Headend's
--config and meter_settings(id) into a Meter's config."""

import json
import os
import subprocess
from pathlib import Path

from lab import pki
from lab.processes import HEADEND, free_ports, spawn, wait_until

DOMAIN, COMPONENT = "im.test", "fleet.im.test"


class ImServer:
    def __init__(self, workdir, host="127.0.0.1", lab=None, ns="out", operators=()):
        self.dir = Path(workdir) / "im"
        self.pki = Path(workdir) / "im-pki"
        self.host = host
        self.lab, self.ns = lab, ns
        self.ports = dict(zip(("c2s_port", "tls_port", "component_port"), free_ports(3)))
        self.operators = list(operators)    # "jid=token name"
        self.proc = None
        self.keys = {}

    def configure(self):
        if not (self.pki / "ca.pem").exists():
            pki.init(self.pki, hosts=[DOMAIN, COMPONENT], ips=[self.host, "127.0.0.1"])
        p = pki.paths(self.pki)
        args = ["xmpp-config", "--dir", str(self.dir), "--domain", DOMAIN,
                "--component", COMPONENT, "--certfile", str(p["server_pem"]),
                "--keyfile", str(p["server_key"]), "--bind", self.host]
        for name, port in self.ports.items():
            args += ["--" + name.replace("_", "-"), str(port)]
        for op in self.operators:
            args += ["--operator", op]
        return _cli(*args)

    def headend_config(self):
        """The head-end's XMPP settings (DIR/headend-xmpp.json)."""
        return json.loads((self.dir / "headend-xmpp.json").read_text())

    @property
    def ca_file(self):
        return str(pki.paths(self.pki)["ca_pem"])

    def start(self):
        self.configure()
        cmd = ["prosody", "-F", "--config", str((self.dir / "prosody.cfg.lua").resolve())]
        self.proc = spawn(cmd, dict(os.environ), self.dir / "prosody.out", self.lab, self.ns)
        wait_until(self._listening, 20, "prosody to listen")
        return self

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError("prosody exited:\n" + self.log())
        log = self.log()    # each listener says so once open (also inside a lab namespace)
        return "Activated service 'c2s_direct_tls'" in log and \
            "Activated service 'component'" in log

    def add_meter(self, device_id):
        """An account for device_id; its login keys (the meter's xmpp_scram)."""
        # it logs in to measure the salt: from the namespace the server listens in
        self.keys[device_id] = _cli("xmpp-account", "--dir", str(self.dir),
                                    "%s@%s" % (device_id, DOMAIN), "--meter",
                                    "--cacert", self.ca_file, "--server", self.host,
                                    lab=self.lab, ns=self.ns)
        return self.keys[device_id]

    def add_account(self, jid, password):
        _cli("xmpp-account", "--dir", str(self.dir), jid, "--password", password)

    def meter_settings(self, device_id):
        """Firmware config keys for a Meter on XMPP through this server."""
        return {"transport": "xmpp", "xmpp_host": self.host,
                "xmpp_port": self.ports["tls_port"], "xmpp_domain": DOMAIN,
                "xmpp_component": COMPONENT, "xmpp_scram": self.keys[device_id],
                "ca_file": self.ca_file}

    def log(self):
        text = ""
        for name in ("prosody.log", "prosody.out"):
            path = self.dir / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _cli(*args, lab=None, ns=None):
    cmd = [*HEADEND, *args]
    if lab is not None:
        cmd = ["ip", "netns", "exec", lab.nsname(ns), *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if p.returncode:
        raise RuntimeError("backchannel %s: %s" % (" ".join(args[:2]), p.stderr.strip()))
    return p.stdout.strip().splitlines()[-1]
