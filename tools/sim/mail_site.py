"""`make sim TRANSPORT=email`: the private dovecot + postfix (docs/email.md) for the sim, the
way an operator sets it up (headend.mail_server: the same config `backchannel mail-config`
writes), Debian's packages installed on first use as root. The servers' directory is under
/tmp (postfix's user must reach it), one per state directory, rewritten on every start with
new passwords; the CA is the sim's. The distro's own dovecot or postfix, if any, is left
alone: the sim's listen on ports of their own."""

import hashlib
import json
import os
import secrets
import subprocess
from pathlib import Path

import click

DOMAIN = "mail.sim.test"
APT = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "dovecot-imapd",
       "dovecot-pop3d", "dovecot-lmtpd", "postfix"]


def ensure_installed():
    from headend import mail_server

    reason = mail_server.missing()
    if reason is None:
        return
    if os.geteuid() != 0:
        raise click.ClickException("TRANSPORT=email needs Debian's dovecot and postfix, run "
                                   "as root: %s" % reason)
    click.echo("installing dovecot and postfix (apt-get) ...", err=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    debconf = b"postfix postfix/main_mailer_type select No configuration\n"
    subprocess.run(["debconf-set-selections"], input=debconf, stderr=subprocess.DEVNULL)
    for cmd in (["apt-get", "update", "-q"], APT):
        if subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env).returncode:
            raise click.ClickException("could not install the mail server: %s failed"
                                       % " ".join(cmd))
    reason = mail_server.missing()
    if reason:
        raise click.ClickException(reason)


class Servers:
    """postfix and dovecot as one child of `make sim` (guard.Children.adopt): stopped
    together, as headend.mail_server stops them (postfix's master through its pid file)."""

    def __init__(self, procs):
        self.procs = procs
        self.returncode = None

    def poll(self):
        for p in self.procs:
            if p.poll() is not None:
                self.returncode = p.returncode
                return p.returncode
        return None

    def send_signal(self, _sig):
        from headend import mail_server

        mail_server.stop(self.procs)

    def wait(self, timeout=None):
        for p in self.procs:
            p.wait(timeout)
        return self.returncode

    def kill(self):
        for p in self.procs:
            p.kill()


def start(children, state, certs, device, free_port):
    """Write the config, make the meter's mailbox, start both servers. Returns (serve
    arguments for the head-end, the meter's config keys)."""
    from headend import mail_server

    ensure_installed()
    d = Path("/tmp/backchannel-sim-mail-%s"
             % hashlib.sha256(str(state).encode()).hexdigest()[:8])
    d.mkdir(mode=0o711, exist_ok=True)
    d.chmod(0o711)
    ports = {"imaps_port": free_port(10993), "pop3s_port": free_port(10995),
             "smtps_port": free_port(10465), "lmtp_port": free_port(10024)}
    headend, meter = "headend@" + DOMAIN, "%s@%s" % (device, DOMAIN)
    passwords = {headend: secrets.token_urlsafe(18), meter: secrets.token_urlsafe(12)}
    try:
        mail_server.write(d, DOMAIN, certs["server_pem"], certs["server_key"], bind="127.0.0.1",
                          **ports)
        for address, password in passwords.items():
            mail_server.add_account(d, address, password)
        procs = mail_server.start(d, [ports["imaps_port"], ports["pop3s_port"],
                                      ports["smtps_port"]], new_session=True)
    except (OSError, mail_server.MailServerError) as e:
        raise click.ClickException("mail server: %s" % e) from None
    children.adopt("mail server", Servers(procs), log=d / "dovecot.log")
    settings = {"mail_address": headend, "mail_password": passwords[headend],
                "mail_host": "127.0.0.1", "mail_imap_port": ports["imaps_port"],
                "mail_smtp_port": ports["smtps_port"], "mail_cafile": certs["ca_pem"],
                "mail_probe_s": 60, "mail_outbox": str(state / "mail-outbox")}
    path = state / "headend-mail.json"
    path.write_text(json.dumps(settings))
    path.chmod(0o600)
    meter_cfg = {"transport": "email", "server_url": "", "mail_host": "127.0.0.1",
                 "mail_user": meter, "mail_password": passwords[meter], "mail_to": headend,
                 "mail_pickup": "imap", "mail_smtp_port": ports["smtps_port"],
                 "mail_imap_port": ports["imaps_port"], "mail_pop3_port": ports["pop3s_port"],
                 "mail_send_s": 10}
    return ["--config", str(path)], meter_cfg
