"""Operator mail, in-process: the strict parser (size, MIME defects, one sender, a
Message-ID, a text part), the secret check, the command lines, the alarm mail, and the
CLI's one-line errors, and the gateway's handling of mails without a server (replays,
another operator's secret, a token out of scope or revoked). The real servers are in
test_mail_gateway.py."""

import email
import email.policy

import pytest
from budget import examples
from headend_harness import Headend
from hypothesis import given, settings
from hypothesis import strategies as st

from headend import devices, groups, tokens
from headend import mail_commands as mc
from headend.cli import main

pytestmark = pytest.mark.unit

# a venv made before the pin (make venv installs them)
pytest.importorskip("aioimaplib", reason="aioimaplib is not installed: run make venv")
pytest.importorskip("aiosmtplib", reason="aiosmtplib is not installed: run make venv")
from headend.mail_gateway import alarm_mail  # noqa: E402

GOOD = (b"From: Alice <Alice@Mail.test>\r\nTo: headend@mail.test\r\nSubject: x\r\n"
        b"Message-ID: <1@mail.test>\r\nContent-Type: text/plain\r\n\r\n"
        b"read m1\r\ntoken: s3cret\r\n")


def test_a_good_mail_parses():
    mail = mc.parse(GOOD)
    assert (mail.sender, mail.message_id) == ("alice@mail.test", "<1@mail.test>")
    assert mc.lines_of(mail.text) == ("s3cret", ["read m1"])


@pytest.mark.parametrize("raw, reason", [
    (GOOD + b"x" * mc.MAX_MAIL, "too large"),
    (GOOD.replace(b"Message-ID: <1@mail.test>\r\n", b""), "no Message-ID"),
    (GOOD.replace(b"From: Alice <Alice@Mail.test>", b"From: a@x.test, b@y.test"), "sender"),
    (GOOD.replace(b"From: Alice <Alice@Mail.test>\r\n", b""), "sender"),
    (GOOD.replace(b"text/plain", b"multipart/mixed; boundary=\"zz\""), "malformed MIME"),
    (GOOD.replace(b"text/plain", b"image/png"), "no text/plain part"),
    (b"\xff\xfe\x00garbage", "malformed MIME"),
])
def test_bad_mail_is_rejected_with_a_reason(raw, reason):
    with pytest.raises(mc.Rejected, match=reason):
        mc.parse(raw)


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=2000))
def test_the_parser_only_ever_rejects(raw):
    try:
        mc.parse(GOOD[:200] + raw)
    except mc.Rejected:
        pass


def test_quoted_lines_and_the_signature_are_not_commands():
    text = "ack 12\r\n> read m1\r\n> token: old\r\ntoken: new\r\n-- \r\nread m2\r\n"
    assert mc.lines_of(text) == ("new", ["ack 12"])


def test_secret_check():
    stored = mc.hash_secret("s3cret")
    assert stored.startswith("sha256:") and "s3cret" not in stored
    assert mc.secret_ok(stored, "s3cret")
    for wrong in ("s3cre", "s3cret ", "", None):
        assert not mc.secret_ok(stored, wrong)
    assert not mc.secret_ok(None, "s3cret") and not mc.secret_ok("", "")


def test_alarm_mail_has_a_greppable_subject_and_the_numbers():
    alarm = {"id": 12, "kind": "interruption", "device": "m1", "grp": "feeder-7",
             "state": "open", "raised": 1765000000, "body": {"vrms": 3.5, "start_s": 17}}
    subject, body = alarm_mail(alarm)
    assert subject == "[backchannel] ALARM 12 interruption m1 feeder-7"
    assert "vrms:     3.5" in body and "raised:   2025-12-06" in body and "ack 12" in body


@pytest.mark.parametrize("argv, says", [
    (["mail-config", "--dir", "D", "--certfile", __file__, "--keyfile", __file__,
      "--cafile", __file__, "--operator", "not an address"], "ADDRESS=TOKEN_NAME"),
    (["mail-account", "--dir", "D", "x@y@z"], "not an address"),
    (["mail-serve", "--dir", "D"], "run mail-config first"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, says):
    argv = [str(tmp_path / a) if a == "D" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code != 0 and says in err and err.count("\n") == 1, err


def mail_from(sender, body, message_id="<1@mail.test>"):
    return ("From: %s\r\nTo: headend@mail.test\r\nSubject: s\r\nMessage-ID: %s\r\n"
            "Content-Type: text/plain\r\n\r\n%s\r\n" % (sender, message_id, body)).encode()


@pytest.fixture
def gateway(tmp_path):
    secret = {"alice@mail.test": {"token": "alice", "secret": mc.hash_secret("a-secret")},
              "bob@mail.test": {"token": "bob", "secret": mc.hash_secret("b-secret")}}
    he = Headend(tmp_path, mail_address="headend@mail.test", mail_password="x",
                 mail_operators=secret)
    devices.add_token(he.hub.db, "bob", "operator", groups=["feeder-9"])
    devices.create(he.hub.db, "m1", poll=0)
    groups.create(he.hub.db, "feeder-7", ["m1"])
    return he, he.app.state.mail


def spooled(gw):
    """The mails in the gateway's outbox on disk, oldest first."""
    return [email.message_from_bytes(gw.spool.read(n)[1], policy=email.policy.default)
            for n in gw.spool.names()]


def test_the_gateway_answers_an_operator_once_and_nobody_else(gateway):
    he, gw = gateway
    gw.handle(mail_from("alice@mail.test", "read m1\ntoken: a-secret"))
    (reply,) = spooled(gw)
    assert reply["To"] == "alice@mail.test" and reply["In-Reply-To"] == "<1@mail.test>"
    assert "queued read as" in reply.get_content() and len(gw.pending) == 1
    gw.handle(mail_from("alice@mail.test", "read m1\ntoken: a-secret"))     # a replay
    gw.handle(mail_from("alice@mail.test", "read m1\ntoken: b-secret", "<2@m>"))   # bob's
    gw.handle(mail_from("bob@mail.test", "presence m1\ntoken: b-secret", "<3@m>"))
    assert "refused: no meter or group m1" in spooled(gw)[-1].get_content()  # out of scope
    tokens.revoke(he.hub.db, "alice")
    gw.handle(mail_from("alice@mail.test", "read m1\ntoken: a-secret", "<4@m>"))
    assert len(spooled(gw)) == 2 and gw.counts["rejected"] == 3 and he.count("work") == 1
