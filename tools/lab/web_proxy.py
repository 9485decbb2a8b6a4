"""A real HTTP CONNECT proxy for the lab: Debian's tinyproxy, the way a site runs one, with
optional Basic credentials and CONNECT allowed to the head-end's port only (its default
allows 443 and 563). Its log says which tunnels it opened (`connects()`). In a netlab
namespace it listens on that namespace's address. Installed on first use when running as
root (apt-get), as mosquitto is; Proxy.missing() says why it cannot run otherwise."""

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from .processes import free_port, spawn, wait_until

BINARY = "tinyproxy"


def binary():
    return shutil.which(BINARY) or next(
        (p for p in ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy") if os.access(p, os.X_OK)),
        None)


def missing():
    """None if tinyproxy can run here (installing it as root if need be), else why not."""
    if binary() is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", BINARY],
                       capture_output=True, timeout=600,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return None if binary() else "tinyproxy is not installed (Debian: apt-get install tinyproxy)"


class Proxy:
    def __init__(self, workdir, connect_ports, host="127.0.0.1", port=None, user=None,
                 password=None, allow="127.0.0.1", lab=None, ns=None):
        self.dir = Path(workdir) / "proxy"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host, self.port = host, port or free_port()
        self.user, self.password = user, password
        self.lab, self.ns = lab, ns
        lines = ["Port %d" % self.port, "Listen %s" % host, "Timeout 120",
                 "MaxClients 50", "LogLevel Connect",
                 "LogFile \"%s\"" % (self.dir / "tinyproxy.log"),
                 "PidFile \"%s\"" % (self.dir / "tinyproxy.pid"),
                 "Allow %s" % allow, "DisableViaHeader Yes"]
        lines += ["ConnectPort %d" % p for p in connect_ports]
        if user:
            lines.append("BasicAuth %s %s" % (user, password))
        self.conf = self.dir / "tinyproxy.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None

    def url(self, credentials=True):
        cred = "%s:%s@" % (self.user, self.password) if credentials and self.user else ""
        return "http://%s%s:%d" % (cred, self.host, self.port)

    def start(self):
        self.proc = spawn([binary(), "-d", "-c", str(self.conf)], dict(os.environ),
                           self.dir / "stdout.log", self.lab, self.ns)
        wait_until(self._listening, 15, "tinyproxy to listen on %s:%d" % (self.host, self.port))
        return self

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError("tinyproxy exited:\n%s\n%s" % (
                (self.dir / "stdout.log").read_text(errors="replace"), self.log()))
        if self.lab is not None:        # it listens once its config is read
            return "Reloading config file finished" in self.log()
        try:
            socket.create_connection((self.host, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def log(self):
        path = self.dir / "tinyproxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def connects(self):
        """The CONNECT requests the proxy logged, e.g. 'CONNECT 10.0.0.1:8443 HTTP/1.1'."""
        return [ln.split("): ", 1)[1].strip() for ln in self.log().splitlines()
                if "Request (file descriptor" in ln and "): CONNECT " in ln]

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)


EGRESS = """\
table inet bc_egress {{
    chain output {{
        type filter hook output priority -10; policy drop;
        oif "lo" accept
        ct state established,related accept
        ip daddr {host} tcp dport {port} accept
    }}
}}
"""


def only_egress(lab, site, host, port):
    """In a netlab site, let nothing out but TCP to host:port (the site's proxy): a site
    whose only way out is its web proxy. Removed with the lab."""
    from .netlab import sh

    script = "add table inet bc_egress\ndelete table inet bc_egress\n"
    script += EGRESS.format(host=host, port=port)
    sh(["ip", "netns", "exec", lab.nsname(site), "nft", "-f", "-"], input=script)
