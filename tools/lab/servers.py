"""The messaging servers of the XMPP and email transports on the head-end side of a netlab
lab (docs/e2e.md): the private Prosody (lab/im_process.py) or the private dovecot + postfix
(lab/mailsite.py) run in the lab's outside namespace on the head-end's address, and each
meter site may open connections only to their ports (lab/egress.py): its firewall lets
XMPP, or mail, out and nothing else.

    srv = servers.for_transport("email", workdir, lab)    # None for http and mqtt
    srv.start(); settings.update(srv.headend_settings())   # the head-end's --config
    srv.add_meter("meter-a"); Meter(..., **srv.meter_settings("meter-a"))
    srv.confine("a")                                        # site a: out to srv.ports only
    srv.restart()                                           # mid-run, as a scenario does
    srv.close()
"""

from lab import egress, mailsite, pki
from lab.im_process import DOMAIN, ImServer

MAIL_SEND_S = 5         # the firmware's minimum: an email meter mails its readings this often
OPERATOR = "bob"        # an operator with a mailbox and a secret (alarms, commands by mail)


class LabServer:
    """What both servers share: the wrapped server (`inner`: an ImServer or a MailSite),
    started, stopped and restarted in `out`, and the site allow-list."""

    lab = None
    inner = None
    ports = ()

    def start(self):
        self.inner.start()
        return self

    def stop(self):
        self.inner.stop()

    def restart(self):
        self.stop()
        self.start()

    def add_meter(self, device):
        self.inner.add_meter(device)

    def log(self):
        return self.inner.log()

    def confine(self, site):
        """The site may open connections only to this server's ports on the head-end."""
        egress.restrict(self.lab, site, self.lab.headend_ip, self.ports)


class LabIm(LabServer):
    """The private Prosody in `out`; meters log in over Direct TLS. OPERATORS have accounts
    (NAME@im.test, password NAME-pw) mapped to the head-end's token NAME; operator(NAME) is
    how their client logs in (c2s STARTTLS, from `out`)."""

    transport = "xmpp"
    OPERATORS = ("alice", "bob")

    def __init__(self, workdir, lab):
        self.lab = lab
        self.inner = ImServer(workdir, host=lab.headend_ip, lab=lab, ns="out",
                              operators=["%s@%s=%s" % (n, DOMAIN, n) for n in self.OPERATORS])
        self.inner.configure()
        for name in self.OPERATORS:
            self.inner.add_account("%s@%s" % (name, DOMAIN), name + "-pw")
        self.ports = [self.inner.ports["tls_port"]]

    def operator(self, name):
        """Keyword arguments for an XMPP client of operator `name` (lab/xmpp_client.py)."""
        return {"jid": "%s@%s" % (name, DOMAIN), "password": name + "-pw",
                "host": self.lab.headend_ip, "port": self.inner.ports["c2s_port"],
                "ca": self.inner.ca_file, "netns": self.lab.nsname("out")}

    def headend_settings(self):
        return self.inner.headend_config()

    def meter_settings(self, device):
        return self.inner.meter_settings(device)

    def close(self):
        self.inner.stop()


class LabMail(LabServer):
    """The private mail server in `out`; meters submit by SMTPS and pick up by IMAP IDLE."""

    transport = "email"

    def __init__(self, workdir, lab):
        self.lab = lab
        pki.init(workdir / "mail-pki", hosts=[mailsite.DOMAIN], ips=[lab.headend_ip])
        self.inner = mailsite.MailSite(workdir / "mail-pki", host=lab.headend_ip, lab=lab,
                                       ns="out")
        self.inner.configure(operators=["%s=%s" % (self.inner.address(OPERATOR), OPERATOR)])
        self.ports = [self.inner.ports["smtps_port"], self.inner.ports["imaps_port"]]

    def headend_settings(self):
        return self.inner.headend_settings()

    def operator(self, name=OPERATOR):
        """(the operator's mail client in `out`, their secret); the mailbox made here."""
        from lab.mail_client import LabMailbox

        address = self.inner.address(name)
        if name not in self.inner.passwords:
            self.inner.add_meter(name)              # a mailbox like any other
        return LabMailbox(self.lab, "out", self.inner.host, self.inner.ports,
                          self.inner.pki["ca_pem"], address, self.inner.passwords[name]), \
            self.inner.operator_secrets[address]

    def meter_settings(self, device):
        return self.inner.meter_settings(device, "imap", mail_send_s=MAIL_SEND_S)

    def close(self):
        self.inner.remove()


def missing(transport):
    """Why this transport's server cannot run here, or None."""
    import shutil

    if transport == "xmpp":
        return None if shutil.which("prosody") else "prosody is not installed (apt-get " \
                                                    "install prosody)"
    if transport == "email":
        why = mailsite.missing()
        return "no private mail server here: %s" % why if why else None
    return None


def for_transport(transport, workdir, lab):
    """The server for xmpp or email, configured (not started); None for other transports."""
    kind = {"xmpp": LabIm, "email": LabMail}.get(transport)
    return kind(workdir, lab) if kind else None

