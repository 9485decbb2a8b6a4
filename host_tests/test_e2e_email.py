"""End-to-end scenarios of the email transport only (docs/e2e.md, docs/email.md), in the
firewall lab over email: the meters' sites may connect out only to the mail server's SMTPS
and IMAPS ports (lab/egress.py). Shares the lab, head-end, mail server and meters of
test_e2e.py (the session fixture `env`; e2e_env.selected keeps these to email).

The operator `bob` reads and sends mail with Python's smtplib and imaplib from the lab's
outside namespace (lab/mail_client.py), with the per-operator secret `mail-config` printed."""

import re
import time

import pytest
from e2e_env import MAIL_PROBE_S, METERS, REPORT_S, read_result

from lab import processes, servers

pytestmark = pytest.mark.root

ALARM_METER = "meter-x"
ALARM_GROUP = "e2e-alarm"


@pytest.fixture(scope="module")
def bob(env):
    """(bob's mail client, his secret): the operator, with a token of role operator."""
    env.headend.add_token(servers.OPERATOR, "operator")
    return env.server.operator()


def test_email_a_presence_polled_by_email(env, bob, record_property):
    """Presence polled by email, both ways.

    a. The head-end probes each meter by mail every MAIL_PROBE_S (a `read` pushed into the
       meter's mailbox through the mail server, taken by IMAP IDLE through the site's
       firewall, its result mailed back): both meters have answered probes, with a round
       trip; each answered probe is a `read` done by the meter in its work history.
    b. The operator mails `presence meter-a` with their secret and gets a reply naming A as
       available with its last contact; a mail without the secret gets no answer at all."""
    def answered():
        probes = env.get("/v1/mail")["probes"]["meters"]
        return probes if all(probes.get(m, {}).get("answered") for m in METERS) else None
    probes = env.wait(answered, 3 * MAIL_PROBE_S + 30, "both meters to answer a probe")
    assert env.get("/v1/mail")["probes"]["every_s"] == MAIL_PROBE_S
    rtts = [probes[m]["last_rtt_s"] for m in METERS]
    assert all(r > 0 for r in rtts), probes
    for name in METERS:     # each probe is work like any other: a `read` the meter ran
        done = [w for w in env.get("/v1/devices/%s/work?limit=500" % name)
                if w["from"] == "probe:email" and w["status"] == "done"]
        assert len(done) >= probes[name]["answered"], (name, probes[name], done)
        assert all(read_result(w["result"]) for w in done), done

    box, secret = bob
    nosecret = box.send(env.server.inner.headend_settings()["mail_address"],
                        "no secret", "presence meter-a\n")
    t0 = time.time()
    box.send(env.server.inner.headend_settings()["mail_address"], "who is there",
             "presence meter-a\ntoken: %s\n" % secret)
    mail = box.wait("Re: who is there", "meter-a:", timeout=60)
    took = time.time() - t0
    assert re.search(r"meter-a: available.*; last contact \d{4}-\d\d-\d\d", mail["body"]), mail
    time.sleep(2)
    replies = [m for m in box.messages() if m["in_reply_to"] == nosecret
               or "no secret" in m["subject"]]
    assert not replies, ("a mail without the secret was answered", replies)
    record_property("evidence", "probe round trips %s s (every %d s); `presence meter-a` "
                    "answered by mail in %.1f s; no answer without the secret"
                    % ("/".join("%.1f" % r for r in rtts), MAIL_PROBE_S, took))


def test_email_b_alarm_mailed_to_operator_and_acked(env, bob, record_property):
    """An alarm mailed to an operator through the escalation module, acked by reply.

    A third meter, meter-x in site b (confined like the others), runs the interruption
    scenario (the supply drops to 0 V for 2 s every 15 s). It is in a group whose escalation
    list names bob, on duty. Its interruption event travels by mail to the head-end, which
    raises an alarm, and escalation mails it to bob: a greppable subject
    `[backchannel] ALARM N interruption meter-x e2e-alarm` and the event's numbers in plain
    text. bob replies `ack N` with his secret: the reply says it is acknowledged, and the
    alarm is `acked` by bob over email."""
    reg = env.admin.post("/v1/devices", json={"id": ALARM_METER})
    assert reg.status_code == 201, reg.text
    r = env.admin.post("/v1/groups", json={"name": ALARM_GROUP, "members": [ALARM_METER]})
    assert r.status_code in (200, 201), r.text
    r = env.admin.put("/v1/escalation/%s" % ALARM_GROUP,
                      json={"operators": [servers.OPERATOR], "timeout_s": 600,
                            "kinds": ["interruption"]})
    assert r.status_code == 200, r.text
    r = env.admin.put("/v1/operators/%s/duty" % servers.OPERATOR, json={"windows": ["always"]})
    assert r.status_code == 200, r.text
    box, secret = bob
    env.server.add_meter(ALARM_METER)
    meter = env.meters[ALARM_METER] = processes.Meter(
        env.dir, ALARM_METER, reg.json()["key"], "", lab=env.lab, ns="b", report_s=REPORT_S,
        scenario=processes.ROOT / "tools/sim/scenarios/interruption.json",
        **env.server.meter_settings(ALARM_METER))
    try:
        t0 = time.time()
        env.start(ALARM_METER)
        mail = box.wait("interruption %s %s" % (ALARM_METER, ALARM_GROUP), "kind:", timeout=90)
        mailed = time.time() - t0
        aid = int(re.search(r"^\[backchannel\] ALARM (\d+) interruption %s %s$"
                            % (ALARM_METER, ALARM_GROUP), mail["subject"]).group(1))
        body = dict(re.findall(r"^(\w+):\s+(.*)$", mail["body"], re.M))
        assert body["alarm"] == str(aid) and body["kind"] == "interruption", mail
        assert body["meter"] == ALARM_METER and body["group"] == ALARM_GROUP, mail
        assert abs(int(body["start_s"]) - t0) < 120, mail
        alarm = env.get("/v1/alarms/%d" % aid)
        assert alarm["kind"] == "interruption" and alarm["device"] == ALARM_METER, alarm
        assert env.device(ALARM_METER)["transport"] == "email"

        quoted = "\n".join("> " + line for line in mail["body"].splitlines())
        box.send(env.server.inner.headend_settings()["mail_address"], "Re: " + mail["subject"],
                 "ack %d\ntoken: %s\n\n%s" % (aid, secret, quoted),
                 in_reply_to=mail["message_id"])
        box.wait("Re: [backchannel] ALARM %d" % aid, "alarm %d acknowledged" % aid, timeout=60)
        alarm = env.get("/v1/alarms/%d" % aid)
        assert alarm["state"] == "acked" and alarm["acked_by"] == servers.OPERATOR, alarm
        assert any("over email" in s["detail"] for s in alarm["steps"]), alarm["steps"]
    finally:
        meter.kill()
        del env.meters[ALARM_METER]
    record_property("evidence", "alarm %d (interruption at meter-x behind its firewall) "
                    "mailed to %s %.1f s after the meter started; acked by reply"
                    % (aid, box.address, mailed))
