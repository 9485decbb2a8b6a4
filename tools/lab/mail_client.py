"""An operator's mail client in a netlab namespace (the e2e lab's mail server listens only
in `out`): SMTPS to send, IMAPS to read, with Python's smtplib and imaplib (an independent
client, not the head-end's). Each call runs `python -m lab.mail_client '<json>'` inside the
namespace and reads its JSON answer.

    box = LabMailbox(lab, "out", host, ports, ca, "bob@mail.test", password)
    box.send("headend@mail.test", "commands", "presence meter-a\\ntoken: S")
    mail = box.wait("Re: commands", "meter-a")    # {"subject", "body", "from", ...}
"""

import email
import email.policy
import imaplib
import json
import smtplib
import ssl
import subprocess
import sys
import time
from email.message import EmailMessage
from email.utils import make_msgid


class LabMailbox:
    def __init__(self, lab, ns, host, ports, ca, address, password):
        self.lab, self.ns = lab, ns
        self.conn = {"host": host, "smtps_port": ports["smtps_port"],
                     "imaps_port": ports["imaps_port"], "ca": str(ca),
                     "address": address, "password": password}
        self.address = address

    def _call(self, op, timeout=30, **args):
        req = dict(self.conn, op=op, **args)
        try:
            out = self.lab.check_output(self.ns, [sys.executable, "-m", "lab.mail_client",
                                                  json.dumps(req)], timeout=timeout + 15,
                                        stderr=subprocess.STDOUT)
        except subprocess.CalledProcessError as e:
            raise AssertionError("mail client %s as %s: %s" % (op, self.address,
                                                              e.output.strip())) from None
        return json.loads(out.strip().splitlines()[-1])

    def send(self, to, subject, body, in_reply_to=None):
        """Submit a plain-text mail; returns its Message-ID."""
        return self._call("send", to=to, subject=subject, body=body,
                          in_reply_to=in_reply_to)["message_id"]

    def wait(self, subject_has, body_has="", timeout=30):
        """The first mail in INBOX whose subject and body contain these, within timeout s."""
        return self._call("wait", timeout=timeout, subject_has=subject_has,
                          body_has=body_has, wait_s=timeout)

    def messages(self):
        return self._call("list")["messages"]


def _ctx(req):
    return ssl.create_default_context(cafile=req["ca"])


def send(req):
    msg = EmailMessage()
    msg["From"] = req["address"]
    msg["To"] = req["to"]
    msg["Subject"] = req["subject"]
    msg["Message-ID"] = make_msgid(domain=req["address"].split("@")[1])
    if req.get("in_reply_to"):
        msg["In-Reply-To"] = req["in_reply_to"]
    msg.set_content(req["body"])
    with smtplib.SMTP_SSL(req["host"], req["smtps_port"], context=_ctx(req), timeout=15) as s:
        s.login(req["address"], req["password"])
        s.send_message(msg)
    return {"message_id": msg["Message-ID"]}


def messages(req):
    with imaplib.IMAP4_SSL(req["host"], req["imaps_port"], ssl_context=_ctx(req),
                           timeout=15) as i:
        i.login(req["address"], req["password"])
        i.select("INBOX", readonly=True)
        _, data = i.search(None, "ALL")
        out = []
        for num in data[0].split():
            _, parts = i.fetch(num, "(BODY.PEEK[])")
            m = email.message_from_bytes(parts[0][1], policy=email.policy.default)
            body = m.get_body(preferencelist=("plain",))
            out.append({"subject": str(m["Subject"]), "from": str(m["From"]),
                        "message_id": str(m["Message-ID"]),
                        "in_reply_to": str(m["In-Reply-To"] or ""),
                        "body": body.get_content().replace("\r\n", "\n") if body else ""})
        return {"messages": out}


def wait(req):
    deadline = time.monotonic() + req["wait_s"]
    while True:
        got = messages(req)["messages"]
        for m in got:
            if req["subject_has"] in m["subject"] and req["body_has"] in m["body"]:
                return m
        if time.monotonic() > deadline:
            raise SystemExit("no mail to %s with %r / %r within %s s; INBOX: %s" % (
                req["address"], req["subject_has"], req["body_has"], req["wait_s"],
                [m["subject"] for m in got]))
        time.sleep(0.3)


def main(argv):
    req = json.loads(argv[0])
    op = {"send": send, "wait": wait, "list": messages}[req["op"]]
    print(json.dumps(op(req)))


if __name__ == "__main__":
    main(sys.argv[1:])
