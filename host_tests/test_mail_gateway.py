"""The head-end's mail gateway on a real private mail server (dovecot + postfix from the
project's config, TLS from its PKI): operators use Python's smtplib and imaplib over
direct TLS against the project's CA. Presence and read by email (answered when a FakeMeter
has run the read), no answer at all to a spoofed sender, a wrong secret or a replay, a
mail server restart in the middle with nothing lost, an alarm mailed and acked by reply.
The meters here speak HTTP; the meter's own email transport is separate."""

import email
import email.policy
import imaplib
import json
import poplib
import re
import shutil
import smtplib
import ssl
import tempfile
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import httpx
import pytest
from headend_fake_meter import FakeMeter
from headend_harness import Headend, Server

from headend import devices, escalation, groups, mail_server
from headend.cli import main
from lab import pki
from lab.processes import free_ports

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(mail_server.missing() is not None,
                                 reason="no private mail server here: %s (CI installs "
                                        "them)" % mail_server.missing())]

pytest.importorskip("aioimaplib", reason="aioimaplib is not installed: run make venv")

DOMAIN = "mail.test"
HEADEND = "headend@" + DOMAIN


class Mailbox:
    """An operator's real mail client: SMTPS to send, IMAPS to read."""

    def __init__(self, address, password, ports, ca):
        self.address, self.password, self.ports = address, password, ports
        self.ctx = ssl.create_default_context(cafile=str(ca))

    def send(self, body, subject="commands", sender=None, message_id=None, raw=None):
        msg = EmailMessage()
        msg["From"] = sender or self.address
        msg["To"] = HEADEND
        msg["Subject"] = subject
        msg["Message-ID"] = message_id or make_msgid(domain=DOMAIN)
        msg.set_content(body)
        with smtplib.SMTP_SSL("127.0.0.1", self.ports["smtps_port"], context=self.ctx,
                              timeout=15) as s:
            s.login(self.address, self.password)
            s.sendmail(self.address, [HEADEND], raw or msg.as_bytes())
        return msg["Message-ID"]

    def messages(self):
        with imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps_port"], ssl_context=self.ctx,
                               timeout=15) as i:
            i.login(self.address, self.password)
            i.select("INBOX", readonly=True)
            _, data = i.search(None, "ALL")
            out = []
            for num in data[0].split():
                _, parts = i.fetch(num, "(BODY.PEEK[])")
                out.append(email.message_from_bytes(parts[0][1], policy=email.policy.default))
            return out

    def wait(self, subject_has, body_has="", timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages():
                text = m.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
                if subject_has in str(m["Subject"]) and body_has in text:
                    return m, text
            time.sleep(0.3)
        raise AssertionError("no mail to %s with %r / %r: %s" % (
            self.address, subject_has, body_has, [str(m["Subject"]) for m in self.messages()]))


def cli(*argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 0, argv


@pytest.fixture
def site(tmp_path, capsys):
    pki.init(tmp_path / "pki", hosts=[DOMAIN], ips=["127.0.0.1"])
    p = pki.paths(tmp_path / "pki")
    names = ("imaps_port", "pop3s_port", "smtps_port", "lmtp_port")
    ports = dict(zip(names, free_ports(len(names))))
    # as a user does it: the CLI writes both configs; in a directory the postfix user can
    # reach (pytest's tmp_path is private to root)
    d = Path(tempfile.mkdtemp(prefix="backchannel-mail-"))
    d.chmod(0o711)
    capsys.readouterr()
    cli("mail-config", "--dir", d, "--domain", DOMAIN, "--certfile", p["server_pem"],
        "--keyfile", p["server_key"], "--cafile", p["ca_pem"],
        *[x for k, v in ports.items() for x in ("--" + k.replace("_", "-"), v)],
        "--operator", "alice@mail.test=alice", "--operator", "Bob@Mail.test=bob")
    secrets = dict(re.findall(r"operator secret, shown once: (\S+) \(\w+\): token: (\S+)",
                              capsys.readouterr().out))
    for user in ("alice", "bob", "mallory"):
        cli("mail-account", "--dir", d, "%s@%s" % (user, DOMAIN), "--password", user + "-pw")
    conf = json.loads((d / "headend-mail.json").read_text())
    assert set(conf["mail_operators"]) == {"alice@mail.test", "bob@mail.test"}
    assert all(secrets[a] not in json.dumps(conf) for a in secrets)     # hashes only
    procs = [mail_server.start(d, [ports["imaps_port"], ports["smtps_port"]])]
    he = Headend(tmp_path, **conf)
    devices.add_token(he.hub.db, "bob", "operator")
    key = devices.create(he.hub.db, "m1", poll=0)
    groups.create(he.hub.db, "feeder-7", ["m1"])

    def box(user):
        return Mailbox("%s@%s" % (user, DOMAIN), user + "-pw", ports, p["ca_pem"])

    def restart():
        mail_server.stop(procs.pop())
        procs.append(mail_server.start(d, [ports["imaps_port"], ports["smtps_port"]]))
    try:
        with Server(he.app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
            yield dict(he=he, box=box, secrets=secrets, restart=restart, ports=ports,
                       meter=FakeMeter(http, "m1", key), stop=lambda: mail_server.stop(
                           procs.pop()), start=lambda: procs.append(mail_server.start(
                               d, [ports["imaps_port"], ports["smtps_port"]])))
    finally:
        for group in procs:
            mail_server.stop(group)
        shutil.rmtree(d, ignore_errors=True)


def wait_for(cond, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_presence_and_read_by_email(site):
    he, meter, alice = site["he"], site["meter"], site["box"]("alice")
    token = "token: %s" % site["secrets"]["alice@mail.test"]
    meter.presence("available_restricted", "critical process until 13:03")
    meter.exchange()
    t0 = time.monotonic()
    alice.send("presence m1\n%s\n" % token, subject="status please")
    _, text = alice.wait("Re: status please", "m1: available_restricted")
    print("presence by email, mail sent to answer read: %.2f s" % (time.monotonic() - t0))
    assert "critical process until 13:03" in text and "last contact 20" in text
    alice.send("presence feeder-7\n%s" % token)
    _, text = alice.wait("Re: commands", "m1: available_restricted")
    assert "> presence feeder-7\n" in text, text

    t0 = time.monotonic()
    alice.send("%s\nread m1\n" % token, subject="read it")
    _, text = alice.wait("Re: read it", "queued read as")
    wid = re.search(r"queued read as (\S+);", text).group(1)
    (work,) = meter.exchange()["work"]
    assert work["op"] == "read" and work["id"] == wid
    meter.execute([work], lambda w: ("done", {"reading": {"vrms": 231.5, "p": 960.0}}))
    meter.exchange()
    _, text = alice.wait("Re: read it", "%s read: done" % wid)
    assert "vrms=231.5" in text
    print("read by email, mail sent to result mail read: %.2f s" % (time.monotonic() - t0))
    pop = poplib.POP3_SSL("127.0.0.1", site["ports"]["pop3s_port"], context=alice.ctx,
                          timeout=15)             # POP3S (direct TLS) serves the same box
    pop.user(alice.address)
    pop.pass_(alice.password)
    assert pop.stat()[0] == len(alice.messages()) == 4
    pop.quit()
    logged = he.hub.db.one("SELECT who, outcome FROM audit WHERE action = 'email:add_work'")
    assert tuple(logged) == ("alice", "ok")


def test_nothing_answers_a_spoofed_sender_a_wrong_secret_or_a_replay(site):
    he, alice, mallory = site["he"], site["box"]("alice"), site["box"]("mallory")
    good = "token: %s" % site["secrets"]["alice@mail.test"]
    # mallory writes alice's address in From, with a guessed secret and with none
    mallory.send("read m1\ntoken: guessed", sender="alice@mail.test")
    mallory.send("read m1", sender="alice@mail.test")
    mallory.send("read m1\n%s" % good.replace(good[-4:], "AAAA"))    # her own address
    alice.send("read m1\n" + "x" * 5000 + "\n" + good)                  # too long a text
    alice.send("", raw=b"From: alice@mail.test\r\nContent-Type: multipart/mixed; "
                       b"boundary=\r\n\r\n--\r\n" + b"A" * 70000)       # huge and malformed
    mid = alice.send("presence m1\n%s" % good, subject="first")
    alice.wait("Re: first")
    alice.send("presence m1\n%s" % good, subject="again", message_id=mid)   # a replay
    alice.send("help\n%s" % good, subject="last")
    alice.wait("Re: last", "commands (one a line")
    subjects = [str(m["Subject"]) for m in alice.messages() + mallory.messages()]
    assert sorted(subjects) == ["Re: first", "Re: last"], subjects
    assert he.count("work") == 0
    gw = he.app.state.mail
    assert gw.counts["rejected"] == 6 and gw.counts["handled"] == 2


def test_a_mail_server_restart_loses_nothing(site):
    meter, alice = site["meter"], site["box"]("alice")
    token = "token: %s" % site["secrets"]["alice@mail.test"]
    alice.send("read m1\n%s" % token, subject="before")
    alice.wait("Re: before", "queued read")
    site["stop"]()                  # the answer to the read must wait for the server
    (work,) = meter.exchange()["work"]
    meter.execute([work], lambda w: ("done", {"reading": {"vrms": 229.0}}))
    meter.exchange()
    time.sleep(2)                   # the gateway tries, fails and keeps it
    assert site["he"].app.state.mail.counts["send_failures"] >= 1
    site["start"]()
    alice.wait("Re: before", "read: done: vrms=229.0")
    alice.send("presence m1\n%s" % token, subject="after")     # IMAP read again
    alice.wait("Re: after", "m1:")


def test_an_alarm_is_mailed_and_acked_by_reply(site):
    he, meter, bob = site["he"], site["meter"], site["box"]("bob")
    escalation.set_list(he.hub.db, "feeder-7", ["bob"])
    escalation.sources(he.hub).append(lambda hub, op, now: "test" if op == "bob" else None)
    meter.add("event_start", {"kind": "interruption", "start_s": 1765000000, "vrms": 3.5})
    meter.exchange()
    msg, text = bob.wait("[backchannel] ALARM ", "kind:     interruption")
    aid = int(re.search(r"ALARM (\d+) interruption m1 feeder-7$", str(msg["Subject"])).group(1))
    assert "vrms:     3.5" in text and "start_s:  1765000000" in text
    quoted = "\n".join("> " + line for line in text.splitlines())
    bob.send("ack %d\ntoken: %s\n\n%s" % (aid, site["secrets"]["bob@mail.test"], quoted),
             subject="Re: " + str(msg["Subject"]))
    bob.wait("Re: [backchannel] ALARM %d" % aid, "alarm %d acknowledged" % aid)
    alarm = escalation.get(he.hub.db, aid, steps=True)
    assert alarm["state"] == "acked" and alarm["acked_by"] == "bob"
    assert "by bob over email" in alarm["steps"][-1]["detail"]
    assert "notified over log, email" in alarm["steps"][1]["detail"]
