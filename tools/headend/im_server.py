"""A private Prosody (Debian's `prosody`) for the sim, the tests and small sites: the
config this project writes into its own directory (`backchannel xmpp-config`), accounts
registered with prosodyctl against that config, start and stop. The distro's own Prosody
(/etc/prosody, /var/lib/prosody) is never touched.

What the config sets (docs/xmpp.md): one virtual host for people and meters (no open
registration; accounts are made here), the head-end's component (XEP-0114) on loopback with
a random secret, client TLS with the project's certificate, Direct TLS (XEP-0368) for
meters, which cannot switch a connection to TLS midway, and no server-to-server links."""

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

from . import daemon

CONF = "prosody.cfg.lua"
SECRET = "component.secret"


class ImServerError(Exception):
    """One line for the user."""


def find(program="prosody"):
    path = shutil.which(program) or ("/usr/bin/%s" % program if
                                     os.path.exists("/usr/bin/%s" % program) else None)
    if path is None:
        raise ImServerError("%s not found (Debian: apt-get install prosody)" % program)
    return path


def _lua(text):
    """A Lua string literal."""
    return '"%s"' % str(text).replace("\\", "\\\\").replace('"', '\\"')


def conf_text(directory, domain, component, cert, key, c2s_port=5222, tls_port=5223,
              component_port=5347, bind="127.0.0.1", secret="x"):
    d = Path(directory).resolve()
    return "\n".join([
        "-- written by `backchannel xmpp-config`: a private Prosody for backchannel",
        "pidfile = %s" % _lua(d / "prosody.pid"),
        "data_path = %s" % _lua(d / "data"),
        "run_as_root = true   -- started by the project's own scripts, often as root in CI",
        "log = { { levels = { min = \"info\" }, to = \"file\", filename = %s } }"
        % _lua(d / "prosody.log"),
        "interfaces = { %s }" % _lua(bind),
        "c2s_ports = { %d }" % c2s_port,
        "c2s_direct_tls_ports = { %d }" % tls_port,
        "component_interfaces = { \"127.0.0.1\" }",
        "component_ports = { %d }" % component_port,
        "s2s_ports = { }", "http_ports = { }", "https_ports = { }",
        "modules_enabled = { \"roster\", \"saslauth\", \"tls\", \"disco\", \"ping\", "
        "\"presence\", \"posix\" }",
        "modules_disabled = { \"s2s\" }",
        "allow_registration = false",
        "c2s_require_encryption = true",
        "authentication = \"internal_hashed\"",
        "certificates = %s" % _lua(d / "certs"),
        "ssl = { certificate = %s, key = %s }" % (_lua(cert), _lua(key)),
        "",
        "VirtualHost %s" % _lua(domain),
        "",
        "Component %s" % _lua(component),
        "    component_secret = %s" % _lua(secret),
        ""])


def write(directory, domain, component, cert, key, **ports):
    """Write DIR/prosody.cfg.lua (a new component secret unless one is there); returns the
    settings the head-end needs: component, secret, host and port."""
    d = Path(directory)
    (d / "data").mkdir(parents=True, exist_ok=True)
    (d / "certs").mkdir(exist_ok=True)
    for path in (cert, key):
        if not Path(path).is_file():
            raise ImServerError("no such file: %s" % path)
    secret_file = d / SECRET
    if not secret_file.exists():
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    secret = secret_file.read_text().strip()
    text = conf_text(d, domain, component, Path(cert).resolve(), Path(key).resolve(),
                     secret=secret, **ports)
    (d / CONF).write_text(text)
    return {"component": component, "secret": secret, "host": "127.0.0.1",
            "port": ports.get("component_port", 5347), "domain": domain,
            "c2s_port": ports.get("c2s_port", 5222), "tls_port": ports.get("tls_port", 5223)}


def tls_port(directory):
    """The Direct TLS port in DIR's config (meters connect there)."""
    text = (Path(directory) / CONF).read_text()
    m = re.search(r"c2s_direct_tls_ports = \{ (\d+) \}", text)
    if m is None:
        raise ImServerError("%s has no Direct TLS port" % (Path(directory) / CONF))
    return int(m.group(1))


def register(directory, user, domain, password):
    """Create (or reset the password of) user@domain in the private server."""
    p = subprocess.run([find("prosodyctl"), "--config", str(Path(directory).resolve() / CONF),
                        "register", user, domain, password],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise ImServerError("prosodyctl register %s@%s failed: %s"
                            % (user, domain, (p.stderr or p.stdout).strip()[-300:]))


def start(directory, port, timeout=15.0):
    """Start prosody in the foreground on DIR's config; returns the Popen once the
    component port accepts connections."""
    d = Path(directory).resolve()
    try:
        return daemon.start([find(), "-F", "--config", str(d / CONF)], "prosody", "127.0.0.1",
                            port, d / "prosody.out", timeout, errlog=d / "prosody.log")
    except daemon.DaemonError as e:
        raise ImServerError(str(e)) from None


def stop(proc, timeout=5.0):
    daemon.stop(proc, timeout)
