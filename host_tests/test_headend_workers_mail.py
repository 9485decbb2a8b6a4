"""The mail reader runs once across `serve --workers 2` (issue 19, item 2;
headend/singleton.py): one IMAP mailbox, read by the worker holding the `gateways` lease.
When that worker is killed with kill -9 the lease moves (to the other worker or the
restarted one), the new holder reads the mailbox, and an operator's mailed command is
answered again; each mail is answered once. Real processes: PostgreSQL, the private mail
server (dovecot + postfix), haproxy, the supervisor and its workers; the operator uses
smtplib and imaplib over TLS."""

import json
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

import gateways_lease
import pytest
from test_mail_gateway import DOMAIN, Mailbox

from headend import lb_server, mail_server, pg_server
from headend.cli import main
from lab import pki, processes
from lab.processes import free_ports

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(mail_server.missing() is not None,
                                 reason="no private mail server here: %s (CI installs "
                                        "them)" % mail_server.missing())]
pytest.importorskip("aioimaplib", reason="aioimaplib is not installed: run make venv")
STARTUP_S = 120


def _cli(*argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 0, argv


def _answers(box, subject):
    return [m for m in box.messages() if str(m["Subject"]) == "Re: " + subject]


def test_the_mail_reader_runs_on_one_worker_and_moves_when_it_dies(tmp_path, capsys):
    for reason in (pg_server.missing_reason(), lb_server.missing_reason()):
        if reason:
            pytest.skip(reason)
    pki.init(tmp_path / "pki", hosts=[DOMAIN], ips=["127.0.0.1"])
    p = pki.paths(tmp_path / "pki")
    names = ("imaps_port", "pop3s_port", "smtps_port", "lmtp_port")
    ports = dict(zip(names, free_ports(len(names))))
    d = Path(tempfile.mkdtemp(prefix="backchannel-mail-"))     # reachable by postfix
    d.chmod(0o711)
    capsys.readouterr()
    _cli("mail-config", "--dir", d, "--domain", DOMAIN, "--certfile", p["server_pem"],
         "--keyfile", p["server_key"], "--cafile", p["ca_pem"],
         *[x for k, v in ports.items() for x in ("--" + k.replace("_", "-"), v)],
         "--operator", "alice@mail.test=alice")
    secret = re.search(r"operator secret, shown once: \S+ \(\w+\): token: (\S+)",
                       capsys.readouterr().out).group(1)
    _cli("mail-account", "--dir", d, "alice@" + DOMAIN, "--password", "alice-pw")
    mail = mail_server.start(d, [ports["imaps_port"], ports["smtps_port"]])
    cluster = pg_server.temporary(fast=True).start()
    lb_dir = tmp_path / "lb"
    he = processes.Headend(tmp_path, db=cluster.url(), db_key=tmp_path / "hub.key",
                           config=json.loads((d / "headend-mail.json").read_text()),
                           extra=["--workers", "2", "--lb-dir", str(lb_dir)])
    try:
        he.add_device("m1")
        he.add_token("alice", "operator")
        he.start(STARTUP_S)
        pid, token = gateways_lease.holder(cluster.url(), lb_dir)
        alice = Mailbox("alice@" + DOMAIN, "alice-pw", ports, p["ca_pem"])
        alice.send("presence m1\ntoken: %s\n" % secret, subject="before")
        alice.wait("Re: before", "m1:", timeout=90)
        os.kill(pid, signal.SIGKILL)
        assert gateways_lease.holder(cluster.url(), lb_dir, after=token)[0] != pid
        alice.send("presence m1\ntoken: %s\n" % secret, subject="after")
        alice.wait("Re: after", "m1:", timeout=120)
        assert len(_answers(alice, "before")) == 1 and len(_answers(alice, "after")) == 1
        assert he.log().count("gateways: this process runs them") == 2, he.log()[-3000:]
    finally:
        he.kill(signal.SIGTERM)
        pg_server.remove(cluster)
        mail_server.stop(mail)
        shutil.rmtree(d, ignore_errors=True)
