"""The meter's email transport without a server (issue 16): the mail layout and the SMTP,
POP3 and IMAP clients against scripted servers on the three interpreters
(mp_scripts/mail_checks.py); the head-end's and the meter's MIME code read each other's
mails; the gateway's durable outbox on disk (mail_spool.py); the meter's config keys. The
real dovecot + postfix with real meters are in test_meter_email.py; the fuzzing of the
meter's parsers in test_fuzz_firmware.py (parsers mime, imap, pop3)."""

import json
import os

import pytest

from headend import mail_meters, mail_spool
from lab import runner

pytestmark = pytest.mark.unit

CHECKS = runner.ROOT / "host_tests" / "mp_scripts" / "mail_checks.py"


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def checks(request):
    return json.loads(runner.run(request.param, CHECKS, timeout=120))


def test_the_mail_layout_survives_relays_and_refuses_the_rest(checks):
    assert checks["roundtrip"] and checks["rewrapped"] and checks["relayed"]
    assert checks["footer"]         # a relay that adds a footer part changes nothing
    assert checks["errors"] == [
        "mail of 65537 bytes (at most 65536)", "no blank line after the headers",
        "base64 of a length that is not a multiple of 4",
        "the exchange part is not base64 (b'8bit')", "content-type given twice",
        "a continuation line before any header", "nested multipart",
        "multipart without a usable boundary", "payload over 45056 bytes"]
    assert checks["envelope"] == "payload is not '<signature> <body>'"


def test_smtp_submission_dot_stuffs_and_reports_refusals(checks):
    assert checks["smtp_data"] == "A: b\r\n\r\n..starts with a dot\r\n.\r\n"
    assert checks["smtp_refused"] == "SMTP: 535 b'5.7.8 authentication failed'"
    assert "is not a plain address" in checks["smtp_inject"]    # no command injection


def test_pop3_takes_every_mail_and_deletes_even_the_ones_it_refuses(checks):
    assert checks["pop3_counts"] == [2, 1]          # handled, too large (read no further)
    assert checks["pop3_deleted"] == [1, 2, 3]
    assert checks["pop3_bodies"] == [True, True]    # dot-stuffing undone
    assert checks["pop3_refused"] == "POP3: b'-ERR [AUTH] failed'"


def test_imap_drains_expunges_idles_and_bounds_literals(checks):
    assert checks["imap_counts"] == [2, 1] and checks["imap_bodies"] == [True, True]
    assert checks["imap_expunged"] == [3, 7, 9]     # the refused one too: nothing blocks
    assert checks["imap_idle_new"] is True
    assert checks["imap_arrived"] == [2, 0, 3, 5]   # the one that came mid-drain too
    assert checks["imap_literal"] == "IMAP: a literal of 1000100 bytes (at most 4096)"
    assert checks["fetch_fields"] == [True, False, False, False, False]
    assert checks["literal_size"][0] is None and "at most 100" in checks["literal_size"][1]
    assert checks["search"] and "cannot be sent" in checks["login_quote"]


def test_headend_and_meter_read_each_others_mail():
    mime = runner.import_firmware("mail_mime")
    payload = b"f" * 64 + b' {"v": 2}'
    answer = mail_meters.compose("headend@mail.test", "m1@mail.test", "m1", payload)
    assert mime.parse(answer)[1] == payload
    request = mime.compose("m1@mail.test", "headend@mail.test", "m1", 7, "abc", payload)
    assert mail_meters.parse(request, "mail.test") == ("m1", "f" * 64, b'{"v": 2}')
    assert mail_meters.is_meter_mail(request) and not mail_meters.is_meter_mail(b"A: b\r\n\r\n")
    with pytest.raises(mail_meters.Refused, match="is not meter m1's address"):
        mail_meters.parse(request.replace(b"From: m1@", b"From: m2@"), "mail.test")
    with pytest.raises(mail_meters.Refused, match="not base64"):
        mail_meters.parse(request.replace(b"\r\n\r\n", b"\r\n\r\n!!!!", 1), "mail.test")
    with pytest.raises(mail_meters.Refused, match="too large"):
        mail_meters.parse(request + b"A" * mail_meters.MAX_MAIL, "mail.test")


def test_the_outbox_on_disk_survives_a_restart_and_sets_bad_files_aside(tmp_path):
    spool = mail_spool.Spool(str(tmp_path / "out"))
    first = spool.put("m1@mail.test", b"Subject: one\r\n\r\nx\r\n")
    spool.put("alice@mail.test", b"Subject: two\r\n\r\ny\r\n")
    (tmp_path / "out" / "cut-short.mail.tmp").write_bytes(b"half")     # a crash mid-write
    (tmp_path / "out" / ("%020d-deadbeef.mail" % 1)).write_bytes(b"no recipient line")
    again = mail_spool.Spool(str(tmp_path / "out"))                     # after a restart
    assert not (tmp_path / "out" / "cut-short.mail.tmp").exists()
    names = again.names()
    assert len(names) == 3 and again.read(names[0]) is None              # moved aside
    assert os.listdir(tmp_path / "out" / "bad") == [names[0]]
    assert again.read(first) == ("m1@mail.test", b"Subject: one\r\n\r\nx\r\n")
    again.done(first)
    assert [again.read(n)[0] for n in again.names()] == ["alice@mail.test"]
    with pytest.raises(ValueError):
        again.put("a@b\r\nRCPT TO:<c@d>", b"x")
    pending = mail_spool.Pending(str(tmp_path / "out" / "pending.json"))
    pending[12] = ("alice@mail.test", "Re: read", "<1@x>")
    assert mail_spool.Pending(pending.path).snapshot() == [
        (12, ("alice@mail.test", "Re: read", "<1@x>"))]
    del pending[12]
    assert len(mail_spool.Pending(pending.path)) == 0


def test_meter_config_for_email():
    config = runner.import_firmware("config")
    cfg = config.validate({"transport": "email", "mail_host": "mail.example",
                           "mail_user": "m1@mail.example", "mail_password": "pw",
                           "mail_to": "headend@mail.example", "mail_pickup": "pop3"})
    assert cfg["mail_poll_s"] == 60 and config.public(cfg)["mail_password"] == "(set)"
    for bad, why in (({"mail_pickup": "smtp"}, "imap or pop3"),
                     ({"mail_poll_s": 5}, "between 15"),
                     ({"mail_to": "headend"}, "plain address"),
                     ({"mail_user": "a@b>\r\nRCPT"}, "plain address"),
                     ({"transport": "email", "encoding": "xml"}, "email carries JSON")):
        with pytest.raises(config.ConfigError, match=why):
            config.validate(bad)
    assert config.refusal("mail_password", "utility").startswith("mail_password can only")
