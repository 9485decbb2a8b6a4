"""A private mail server for system tests, `make sim TRANSPORT=email` and the bench, set up
the way an operator does it (docs/email.md): `backchannel mail-config` writes dovecot's and
postfix's config and the head-end's mailbox, `mail-account` makes one mailbox per meter,
and headend.mail_server runs both. TLS from the project's PKI (lab/pki.py); free ports.

    site = MailSite(workdir, pki_dir).configure(["m1"])
    site.start()
    Headend(..., extra=site.serve_args()); Meter(..., **site.meter_settings("m1"))

In a netlab namespace (lab=, ns=: the e2e lab's head-end side, host= an address there) it
runs as `backchannel mail-serve` inside the namespace, stopped by SIGINT (which stops
postfix's master and dovecot), so a test can restart it mid-run."""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from lab import pki
from lab.processes import HEADEND, free_ports, spawn, wait_until

DOMAIN = "mail.test"
PORTS = ("imaps_port", "pop3s_port", "smtps_port", "lmtp_port")


def missing():
    """Why there can be no private mail server here, or None."""
    from headend import mail_server

    return mail_server.missing()


class MailSite:
    def __init__(self, pki_dir, domain=DOMAIN, host="127.0.0.1", lab=None, ns="out"):
        self.pki = pki.paths(pki_dir)
        self.domain = domain
        self.host = host
        self.lab, self.ns = lab, ns
        self.ports = dict(zip(PORTS, free_ports(len(PORTS))))
        # postfix's user must reach it: a directory of its own under /tmp (o+x), not the
        # caller's private tmp dir
        self.dir = Path(tempfile.mkdtemp(prefix="backchannel-mail-"))
        self.dir.chmod(0o711)
        self.passwords = {}
        self.procs = None

    def _cli(self, *args):
        p = subprocess.run([*HEADEND, *[str(a) for a in args]], capture_output=True,
                           text=True, timeout=60)
        if p.returncode:
            raise RuntimeError("backchannel %s: %s" % (args[0], p.stderr.strip()))
        return p.stdout.strip()

    def configure(self, meters=(), operators=()):
        """mail-config, then one mailbox per meter id; returns self. operators: ADDRESS=TOKEN
        (their secrets in self.operator_secrets)."""
        ports = [x for k in PORTS for x in ("--" + k.replace("_", "-"), self.ports[k])]
        ops = [x for o in operators for x in ("--operator", o)]
        shown = self._cli("mail-config", "--dir", self.dir, "--domain", self.domain, "--bind",
                  self.host, "--certfile", self.pki["server_pem"], "--keyfile",
                  self.pki["server_key"], "--cafile", self.pki["ca_pem"], *ports, *ops)
        # each operator's secret, printed once: {address: secret}
        self.operator_secrets = dict(re.findall(r"operator secret, shown once: (\S+) \(\S+\): "
                                       r"token: (\S+)", shown))
        for device in meters:
            self.add_meter(device)
        return self

    def add_meter(self, device):
        password = secrets.token_urlsafe(12)
        self._cli("mail-account", "--dir", self.dir, self.address(device), "--password",
                  password)
        self.passwords[device] = password
        return password

    def address(self, local):
        return "%s@%s" % (local, self.domain)

    def settings_path(self):
        return self.dir / "headend-mail.json"

    def headend_settings(self):
        return json.loads(self.settings_path().read_text())

    def serve_args(self, **extra):
        """`serve` arguments for a head-end whose gateway reads this server; extra: more
        head-end settings (e.g. mail_probe_s)."""
        if not extra:
            return ["--config", str(self.settings_path())]
        path = self.dir / "headend-mail-extra.json"
        path.write_text(json.dumps(dict(self.headend_settings(), **extra)))
        path.chmod(0o600)
        return ["--config", str(path)]

    def meter_settings(self, device, pickup="imap", **extra):
        """Firmware config keys for a meter that exchanges by mail through this server."""
        out = {"transport": "email", "server_url": "", "mail_host": self.host,
               "mail_user": self.address(device), "mail_password": self.passwords[device],
               "mail_to": self.headend_settings()["mail_address"], "mail_pickup": pickup,
               "mail_smtp_port": self.ports["smtps_port"],
               "mail_imap_port": self.ports["imaps_port"],
               "mail_pop3_port": self.ports["pop3s_port"],
               "ca_file": str(self.pki["ca_pem"])}
        out.update(extra)
        return out

    def start(self):
        from headend import mail_server

        if self.lab is not None:
            return self._start_in_lab()
        self.procs = mail_server.start(self.dir, [self.ports["imaps_port"],
                                                  self.ports["pop3s_port"],
                                                  self.ports["smtps_port"]])
        return self

    def _start_in_lab(self):
        out = self.dir / "serve.out"
        seen = self.log().count("mail server running")
        proc = spawn([*HEADEND, "mail-serve", "--dir", str(self.dir)], None, out, self.lab,
                     self.ns)
        self.procs = [proc]

        def running():
            if proc.poll() is not None:
                raise AssertionError("mail-serve exited %s: %s" % (proc.returncode, self.log()))
            return self.log().count("mail server running") > seen
        wait_until(running, 30, "the mail server to listen in %s" % self.ns)
        return self

    def log(self):
        path = self.dir / "serve.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        from headend import mail_server

        if self.procs is None:
            return
        if self.lab is None:
            mail_server.stop(self.procs)
        else:                       # mail-serve stops postfix's master and dovecot on SIGINT
            proc = self.procs[0]
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            self._kill_stragglers()
        self.procs = None

    def _kill_stragglers(self):
        """postfix's children finish the sessions they hold after their master has gone (an
        smtpd with an open connection): a stopped server must not carry mail, so what is left
        of postfix and dovecot in this server's namespace is killed, as a crash would."""
        pids = subprocess.run(["ip", "netns", "pids", self.lab.nsname(self.ns)],
                              capture_output=True, text=True, timeout=20).stdout.split()
        for pid in pids:
            try:
                exe = os.readlink("/proc/%s/exe" % pid)
                if "postfix" in exe or "dovecot" in exe:
                    os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass                # gone already

    kill = stop

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
