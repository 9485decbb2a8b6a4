"""One owner and one range for the poll rate (issue 13, item 5): the head-end sends it as
every response's `next`; the meter has no set_poll op; the API and the CLI accept exactly
0 (continuous long-poll) or 5..3600 seconds, and docs/protocol.md says so."""

import fuzz_parsers as fz
import ops
import pytest
from headend_harness import ROOT, Server, admin, client, headend, op  # noqa: F401

from headend.cli import main

pytestmark = pytest.mark.unit

BAD = [-1, 1, 4, 3601, 86400, 2**40]
GOOD = [0, 5, 60, 3600]


@pytest.mark.parametrize("seconds", GOOD)
def test_api_accepts_the_range(client, headend, op, admin, seconds):
    m = headend.meter(client, "meter-a")
    r = op.patch("/v1/devices/meter-a", json={"poll": seconds})
    assert r.status_code == 200 and r.json()["poll"] == seconds, r.text
    assert m.exchange()["next"] == seconds
    r = admin.post("/v1/devices", json={"id": "m-%d" % seconds, "poll": seconds})
    assert r.status_code == 201 and r.json()["poll"] == seconds, r.text


@pytest.mark.parametrize("seconds", BAD + [True, 30.5, "x"])
def test_api_refuses_anything_else_with_the_rule(client, headend, op, admin, seconds):
    headend.meter(client, "meter-a")
    for r in (op.patch("/v1/devices/meter-a", json={"poll": seconds}),
              admin.post("/v1/devices", json={"id": "m-new", "poll": seconds})):
        assert r.status_code == 422, r.text
        assert "0 (continuous long-poll) or 5..3600 seconds" in r.json()["error"] \
            or "integer" in r.json()["error"], r.text
    assert op.get("/v1/devices/meter-a").json()["poll"] == 0
    assert op.get("/v1/devices/m-new").status_code == 404


def test_set_poll_work_is_refused_with_where_the_poll_lives(client, headend, op):
    headend.meter(client, "meter-a")
    for path in ("/v1/devices/meter-a/work", "/v1/groups/g/work"):
        r = op.post(path, json={"op": "set_poll", "args": {"seconds": 30}})
        assert r.status_code == 422, r.text
        assert "head-end owns the poll rate" in r.json()["error"], r.text
    assert headend.count("work") == 0


def test_the_meter_has_no_set_poll_op():
    assert "set_poll" not in ops.OPS
    assert all("set_poll" not in allowed for allowed in ops.ROLE_OPS.values())
    outbox = fz.FakeOutbox()
    app = fz.FakeApp(outbox)
    d = ops.Dispatcher(app, fz.KEY, outbox, fz.FakeInbox())
    item = {"id": "w-00000001", "device": fz.DEVICE, "seq": 1, "op": "set_poll",
            "role": "operator", "expires": 2 * 10 ** 9, "from": "operator:al",
            "args": '{"seconds":0}'}
    item["sig"] = fz.envelope.sign(fz.KEY, fz.envelope.work_message(item))
    assert d.handle(item) == "unknown_op"
    assert outbox.items[-1][1]["status"] == "unknown_op"


def _cli(capsys, monkeypatch, url, token, db, *argv):
    monkeypatch.setenv("BACKCHANNEL_URL", url)
    monkeypatch.setenv("BACKCHANNEL_TOKEN", token)
    monkeypatch.setenv("BACKCHANNEL_DB", db)
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_cli_sets_the_poll_and_refuses_the_rest_in_one_line(headend, capsys, monkeypatch):
    with Server(headend.app) as s:
        def cli(*argv):
            return _cli(capsys, monkeypatch, s.url, headend.op_token, headend.settings.db,
                        *argv)
        headend.meter(None, "meter-a")
        rc, out, err = cli("poll", "meter-a", "0")
        assert rc == 0 and out == "meter-a: poll 0 (continuous long-poll)\n", err
        rc, out, err = cli("poll", "meter-a", "3600")
        assert rc == 0 and out == "meter-a: poll 3600\n", err
        assert headend.hub.db.one("SELECT poll FROM devices WHERE id = 'meter-a'")["poll"] == 3600
        for argv in (["poll", "meter-a", "4"], ["poll", "meter-a", "3601"],
                     ["poll", "meter-a", "--", "-1"], ["poll", "meter-a", "ten"],
                     ["add-device", "meter-b", "--poll", "1"],
                     ["serve", "--default-poll", "86400"]):
            rc, out, err = cli(*argv)
            assert rc == 2, (argv, err)
            assert err.startswith("backchannel: error: ") and err.count("\n") == 1, err
            assert "0 (continuous long-poll) or 5..3600 seconds" in err, err
            assert "Traceback" not in err and out == ""
        rc, out, err = cli("send", "meter-a", "set_poll", '{"seconds": 30}')
        assert rc == 1 and "head-end owns the poll rate" in err and err.count("\n") == 1, err
        assert headend.hub.db.one("SELECT poll FROM devices WHERE id = 'meter-a'")["poll"] == 3600


def test_serve_refuses_a_config_files_default_poll(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"default_poll": 2}')
    rc, out, err = _cli(capsys, monkeypatch, "http://127.0.0.1:9", "t", str(tmp_path / "h.db"),
                        "serve", "--config", str(cfg))
    assert rc == 1 and "default_poll: poll must be 0 (continuous long-poll) or 5..3600" in err


def test_protocol_md_states_the_one_range():
    text = (ROOT / "docs" / "protocol.md").read_text()
    assert "`0 | 5..3600`" in text and "`set_poll` |" not in text
    assert "The poll rate" in (ROOT / "docs" / "headend.md").read_text()
