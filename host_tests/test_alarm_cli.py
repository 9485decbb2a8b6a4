"""`backchannel alarms`, `alarm show|ack|drill`, `escalation`, `duty` against a real
server: what an operator and the utility type, and one-line errors."""

import pytest
from headend_harness import headend, server  # noqa: F401

from headend import devices, groups
from headend.cli import main

pytestmark = pytest.mark.system


@pytest.fixture
def cli(server, headend, capsys, monkeypatch):
    monkeypatch.setenv("BACKCHANNEL_URL", server.url)
    monkeypatch.setenv("COLUMNS", "200")
    devices.create(headend.hub.db, "m1", poll=30)
    groups.create(headend.hub.db, "feeder-7", ["m1"])

    def run(token, *argv):
        monkeypatch.setenv("BACKCHANNEL_TOKEN", token)
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        out, err = capsys.readouterr()
        return e.value.code, out, err
    return run


def test_utility_sets_up_escalation_and_an_operator_acks_a_drill(cli, headend):
    util, op = headend.util_token, headend.op_token
    rc, out, _ = cli(util, "duty", "alice", "--set", "mon-fri 00:00-24:00", "--set",
                     "sat,sun 00:00-24:00")
    assert rc == 0 and out.startswith("alice: mon-fri 00:00-24:00; sat,sun 00:00-24:00; now "
                                      "available (on duty)")
    rc, out, _ = cli(util, "escalation", "feeder-7", "--set", "bob,alice", "--timeout", "60")
    assert rc == 0 and out.strip() == ("feeder-7: bob -> alice (each 60 s; on interruption, "
                                       "swell)")
    rc, out, _ = cli(util, "alarm", "drill", "m1", "--note", "monthly test")
    assert rc == 0 and "drill" in out and "with alice" in out
    aid = int(out.split()[0])
    rc, out, _ = cli(op, "alarms", "--state", "open")
    assert rc == 0 and str(aid) in out and "with alice" in out
    rc, out, _ = cli(op, "alarm", "ack", str(aid))
    assert rc == 0 and out.strip() == "alarm %d acknowledged by alice" % aid
    rc, out, _ = cli(op, "alarm", "show", str(aid))
    assert rc == 0 and "skipped" in out and "notified" in out and "over cli" in out
    rc, _, err = cli(op, "alarm", "ack", str(aid))
    assert rc == 1 and err == ("backchannel: error: HTTP 409: alarm %d was acknowledged by "
                               "alice\n" % aid)


@pytest.mark.parametrize("argv, message", [
    (("escalation", "feeder-7", "--set", "x"), "HTTP 403: escalation lists and duty schedules "
                                                "need a utility or admin token"),
    (("duty", "carol", "--set", "mon 09:00-08:00"), "HTTP 403"),
    (("alarm", "show", "42"), "HTTP 404: unknown alarm 42"),
    (("alarm", "ack", "0"), "Invalid value"),
])
def test_operator_errors_are_one_line(cli, headend, argv, message):
    rc, out, err = cli(headend.op_token, *argv)
    assert rc != 0 and message in err and "Traceback" not in err + out
    assert err.count("\n") == 1


def test_bad_schedule_is_explained(cli, headend):
    rc, _, err = cli(headend.util_token, "duty", "carol", "--set", "mon 09:00-08:00")
    assert rc == 1 and "must run forward within one day" in err and err.count("\n") == 1
