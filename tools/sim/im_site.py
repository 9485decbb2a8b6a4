"""`make sim TRANSPORT=xmpp`: the sim's private Prosody (docs/xmpp.md). Debian's prosody,
installed on first use when running as root (as mosquitto is for TRANSPORT=mqtt), runs from
.sim/im with its own CA in .sim/im-pki; the distro's own instance is left alone. The meter
gets an account whose login keys are computed here (it never holds the password), and the
head-end joins as the component."""

import json
import os
import secrets
import signal
import socket
import subprocess
import time

import click

from headend import im_server, xmpp_meter_keys
from lab import pki

DOMAIN = "im.backchannel.test"
COMPONENT = "fleet." + DOMAIN


def ensure_prosody():
    try:
        return im_server.find()
    except im_server.ImServerError:
        pass
    if os.geteuid() != 0:
        raise click.ClickException("TRANSPORT=xmpp needs Debian's prosody: "
                                   "sudo apt-get install prosody")
    click.echo("installing prosody (apt-get) ...", err=True)
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prosody"]):
        if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode:
            raise click.ClickException("could not install prosody: %s failed" % " ".join(cmd))
    # the package starts the distro's own instance; ours uses other ports, so it may run on
    return im_server.find()


def start_im(children, state, device, any_port):
    """Start the sim's Prosody as one of `children`; returns (the meter's config keys, the
    head-end's --config path)."""
    ensure_prosody()
    d = state / "im"
    certs = state / "im-pki"
    pki.init(str(certs), hosts=[DOMAIN, COMPONENT], ips=["127.0.0.1"])
    p = pki.paths(str(certs))
    ports = {"c2s_port": any_port(5222), "tls_port": any_port(5223),
             "component_port": any_port(5347)}
    conf = im_server.write(d, DOMAIN, COMPONENT, p["server_pem"], p["server_key"], **ports)
    log_path = d / "prosody.out"
    with open(log_path, "ab") as log:
        proc = children.start("prosody", [im_server.find(), "-F", "--config",
                                          str((d / im_server.CONF).resolve())],
                              signal.SIGTERM, log=log_path, stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    _wait_port(proc, ports["component_port"], d / "prosody.log")
    password = secrets.token_urlsafe(16)        # used once here, then forgotten
    try:
        im_server.register(d, device, DOMAIN, password)
        salt, iterations = xmpp_meter_keys.probe("127.0.0.1", ports["tls_port"], DOMAIN,
                                                 device, str(p["ca_pem"]))
    except (im_server.ImServerError, xmpp_meter_keys.ProbeError) as e:
        raise click.ClickException(str(e)) from None
    meter = {"transport": "xmpp", "xmpp_host": "127.0.0.1", "xmpp_port": ports["tls_port"],
             "xmpp_domain": DOMAIN, "xmpp_component": COMPONENT, "ca_file": str(p["ca_pem"]),
             "xmpp_scram": xmpp_meter_keys.scram_config(password, salt, iterations)}
    headend = d / "headend-xmpp.json"
    fd = os.open(headend, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"xmpp_component": COMPONENT, "xmpp_secret": conf["secret"],
                   "xmpp_domain": DOMAIN, "xmpp_host": "127.0.0.1",
                   "xmpp_port": ports["component_port"], "xmpp_operators": {}}, f)
    click.echo("make sim: XMPP server %s (Direct TLS on 127.0.0.1:%d, c2s %d), the head-end "
               "is %s; log %s" % (DOMAIN, ports["tls_port"], ports["c2s_port"], COMPONENT,
                                  d / "prosody.log"), err=True)
    return meter, headend


def _wait_port(proc, port, log_path):
    for _ in range(300):
        if proc.poll() is not None:
            raise click.ClickException("prosody stopped; see %s" % log_path)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise click.ClickException("prosody did not listen; see %s" % log_path)
