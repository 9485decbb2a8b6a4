"""The email transport end to end with nothing faked: the real firmware (MicroPython unix
port, simulated board, transport=email) submitting by SMTPS and collecting by IMAP IDLE
(one meter) or POP3 polling (the other), a real private dovecot + postfix configured the
way an operator does it (`mail-config`, `mail-account`), and the real head-end process with
its mail gateway. Readings, a read pushed by mail, the latency of each pick-up, a mail server
restart and a head-end kill with mail in its outbox (nothing lost, nothing twice), and
hostile mails to both mailboxes."""

import email
import email.policy
import imaplib
import smtplib
import ssl
import time

import pytest

from lab import mailsite, pki, processes

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(mailsite.missing() is not None,
                                 reason="no private mail server here: %s" % mailsite.missing())]

pytest.importorskip("aioimaplib", reason="aioimaplib is not installed: run make venv")

IM, POP = "m-imap", "m-pop"
POLL_S = 15
PROBE_S = 20


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("email-site")
    pki.init(work / "pki", hosts=[mailsite.DOMAIN], ips=["127.0.0.1"])
    mail = mailsite.MailSite(work / "pki").configure([IM, POP, "mallory"])
    he = processes.Headend(work, extra=mail.serve_args(mail_probe_s=PROBE_S))
    keys = {IM: he.add_device(IM), POP: he.add_device(POP)}
    op = he.add_token("alice", "operator")
    meters = {IM: processes.Meter(work, IM, keys[IM], "", **mail.meter_settings(
                  IM, "imap", mail_send_s=5)),
              POP: processes.Meter(work, POP, keys[POP], "", **mail.meter_settings(
                  POP, "pop3", mail_send_s=5, mail_poll_s=POLL_S))}
    procs = []
    try:
        mail.start()
        procs.append(he.start())
        procs += [m.start() for m in meters.values()]
        api = he.api(op)
        for device in meters:
            processes.wait_until(lambda d=device: api.get(
                "/v1/devices/%s/readings" % d).json(), 60, "the first reading of %s" % device)
        yield {"headend": he, "mail": mail, "meters": meters, "api": api, "keys": keys,
               "token": op}
    finally:
        for p in reversed(procs):
            p.kill()
        mail.remove()
        for m in meters.values():
            print(m.log()[-3000:])


def status(api):
    return api.get("/v1/mail").json()


def readings(api, device):
    return api.get("/v1/devices/%s/readings?limit=1000" % device).json()


def test_readings_arrive_by_mail(site):
    api = site["api"]
    for device in (IM, POP):
        dev = api.get("/v1/devices/%s" % device).json()
        assert dev["transport"] == "email" and dev["presence"] == "available", dev
        assert readings(api, device)[0]["body"]["vrms"] == pytest.approx(230, rel=0.01)
    assert status(api)["meters"]["answered"] >= 2


def test_read_is_pushed_and_picked_up_by_idle_and_by_pop3(site):
    api = site["api"]
    took = {}
    for device, limit in ((IM, 20), (POP, POLL_S + 25)):
        w = processes.run_work(api, device, "read", timeout=limit + 10)
        assert w["status"] == "done", w
        assert w["result"]["reading"]["vrms"] == pytest.approx(230, rel=0.01)
        took[device] = w["finished_at"] - w["created"]
        assert took[device] < limit, (device, took)
    print("read by email: IMAP IDLE %.1f s, POP3 (every %d s) %.1f s"
          % (took[IM], POLL_S, took[POP]))
    assert status(api)["meters"]["pushed"] >= 2


def test_presence_is_probed_by_mail_on_a_schedule(site):
    api = site["api"]

    def answered():
        meters = status(api)["probes"]["meters"]
        return all(meters.get(d, {}).get("answered") for d in (IM, POP)) and meters
    meters = processes.wait_until(answered, PROBE_S + POLL_S + 30, "a probe of each answered")
    assert meters[IM]["last_rtt_s"] < 10 and meters[POP]["last_rtt_s"] < PROBE_S, meters
    print("probe round trip: IMAP IDLE %.1f s, POP3 %.1f s"
          % (meters[IM]["last_rtt_s"], meters[POP]["last_rtt_s"]))
    probes = [w for w in api.get("/v1/devices/%s/work" % IM).json()
              if w["op"] == "read" and w.get("from") == "probe:email"]
    assert probes and probes[0]["status"] in ("done", "queued", "delivered"), probes[:2]


def test_a_mail_server_restart_loses_nothing(site):
    api, mail = site["api"], site["mail"]
    before = len(readings(api, IM))
    mail.stop()
    r = api.post("/v1/devices/%s/work" % IM, json={"op": "read", "args": {}})
    assert r.status_code == 202
    wid = r.json()["id"]
    time.sleep(8)                   # the meter fails, backs off; the gateway keeps the push
    assert status(api)["outbox"] >= 1
    mail.start()
    w = processes.wait_until(lambda: (lambda w: w if w["status"] == "done" else None)(
        api.get("/v1/work/%s" % wid).json()), 120, "the read after the restart")
    assert w["result"]["reading"]["vrms"] == pytest.approx(230, rel=0.01)
    processes.wait_until(lambda: len(readings(api, IM)) > before + 8, 90,
                         "the readings held while the server was down")
    ts = [r["body"]["t"] for r in readings(api, IM)]
    assert len(ts) == len(set(ts)), "a reading stored twice"


def test_a_headend_killed_with_mail_in_its_outbox_sends_it_after(site):
    api, mail, he = site["api"], site["mail"], site["headend"]
    mail.stop()
    r = api.post("/v1/devices/%s/work" % IM, json={"op": "read", "args": {}})
    wid = r.json()["id"]
    processes.wait_until(lambda: status(api)["outbox"] >= 1, 10, "the push in the outbox")
    he.kill()                       # kill -9: only what is on disk survives
    he.start()
    api = site["api"] = he.api(site["token"])
    mail.start()
    w = processes.wait_until(lambda: (lambda w: w if w["status"] == "done" else None)(
        api.get("/v1/work/%s" % wid).json()), 120, "the read pushed before the kill")
    assert w["status"] == "done"


def _hostile(mail, to, raw):
    ctx = ssl.create_default_context(cafile=str(mail.pki["ca_pem"]))
    with smtplib.SMTP_SSL("127.0.0.1", mail.ports["smtps_port"], context=ctx,
                          timeout=15) as s:
        s.login(mail.address("mallory"), mail.passwords["mallory"])
        s.sendmail(mail.address("mallory"), [to], raw)


def _exchange_mail(device, payload, sender=None, extra=b""):
    return (b"From: %s\r\nTo: x@y\r\nSubject: bc\r\nMessage-ID: <%f@x>\r\nX-BC-Device: %s\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: application/x-backchannel-exchange\r\n"
            b"Content-Transfer-Encoding: base64\r\n%s\r\n%s\r\n"
            % ((sender or "%s@%s" % (device, mailsite.DOMAIN)).encode(), time.time(),
               device.encode(), extra, payload))


def test_hostile_mails_have_no_effect_and_block_nothing(site):
    api, mail = site["api"], site["mail"]
    headend = mail.headend_settings()["mail_address"]
    refused = status(api)["rejected"]
    meter_box = mail.address(IM)
    junk = [
        _exchange_mail(IM, b"QUFB" * 10),                                   # not signed
        _exchange_mail(IM, b"not base64 at all!!"),
        _exchange_mail(IM, b"A" * 70000),                                   # huge
        b"From: m-imap@mail.test\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
        _exchange_mail(IM, b"QUFB", sender="mallory@mail.test"),            # spoofed From
    ]
    for raw in junk:
        _hostile(mail, headend, raw)
        _hostile(mail, meter_box, raw)
    # a real meter mail replayed: fetched from the head-end's processed folder
    hs = mail.headend_settings()
    ctx = ssl.create_default_context(cafile=str(mail.pki["ca_pem"]))
    with imaplib.IMAP4_SSL("127.0.0.1", mail.ports["imaps_port"], ssl_context=ctx) as i:
        i.login(hs["mail_address"], hs["mail_password"])
        i.select("processed", readonly=True)
        _, data = i.search(None, "HEADER", "X-BC-Device", IM, "HEADER", "X-BC-Seq", "\"\"")
        _, parts = i.fetch(data[0].split()[-1], "(BODY.PEEK[])")
    original = email.message_from_bytes(parts[0][1], policy=email.policy.default)
    _hostile(mail, headend, parts[0][1])
    _hostile(mail, meter_box, parts[0][1])          # a request is no answer either
    processes.wait_until(lambda: status(api)["rejected"] >= refused + len(junk) + 1, 30,
                         "the head-end to refuse every hostile mail")
    assert original["X-BC-Device"] == IM
    w = processes.run_work(api, IM, "read", timeout=40)     # neither box is blocked
    assert w["status"] == "done", w
    log = site["meters"][IM].log()
    assert log.count("mail refused") + log.count("deleted unread") >= len(junk) + 1, log[-2000:]
    assert "answers no request of this run" in log          # the replayed request
    assert "replay: nonce already seen" in site["headend"].log()
