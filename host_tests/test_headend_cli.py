"""The `backchannel` CLI: admin commands on the database, the rest through the operator
API of a real server; errors are one line, never a traceback."""

import re
import subprocess
import threading

import pytest
from headend_fake_meter import FakeMeter
from headend_harness import ROOT, headend, server  # noqa: F401

from headend.cli import main

pytestmark = pytest.mark.system


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.fixture
def cli(server, headend, capsys, monkeypatch):
    monkeypatch.setenv("BACKCHANNEL_URL", server.url)
    monkeypatch.setenv("BACKCHANNEL_TOKEN", headend.op_token)
    monkeypatch.setenv("BACKCHANNEL_DB", headend.settings.db)
    monkeypatch.setenv("COLUMNS", "200")
    return lambda *argv: run(capsys, *argv)


RESULT = {"reset_cause": "brownout", "uptime_s": 86400, "version": "1.4.2",
          "relay": False, "presence": "available",
          "registers": {"import_wh": 12345.678, "export_wh": 0.0, "import_varh": 10.0},
          "reading": {"t": 1765000000.0, "vrms": 231.5, "irms": 4.2, "p": 960.0,
                      "pf": 0.987, "f": 50.01}}


def test_admin_and_api_commands(cli, server):
    import httpx
    rc, key, _ = cli("add-device", "meter-a")
    key = key.strip()
    assert rc == 0 and re.fullmatch(r"[0-9a-f]{64}", key)
    rc, token, _ = cli("add-token", "bob", "--role", "utility")
    assert rc == 0 and len(token.strip()) >= 32
    rc, out, _ = cli("devices")
    assert rc == 0 and "meter-a" in out
    rc, out, _ = cli("send", "meter-a", "relay", '{"state": "open"}', "--expires-in", "60")
    wid = out.strip()
    assert rc == 0 and re.fullmatch(r"w-\d{8}", wid)
    rc, out, _ = cli("work", wid)
    assert rc == 0 and "relay" in out and "queued" in out
    rc, out, _ = cli("cancel", wid)
    assert rc == 0 and out.strip() == "%s cancelled" % wid
    rc, _, err = cli("cancel", wid)
    assert rc == 1 and err == "backchannel: error: HTTP 409: work %s is already cancelled\n" % wid

    with httpx.Client(base_url=server.url, timeout=30) as http:
        meter = FakeMeter(http, "meter-a", key)
        meter.presence("available")
        meter.reading(231.5)
        meter.add("event", {"kind": "swell"})
        meter.exchange()

        def answer():            # the meter long-polls, runs the work, reports the result
            meter.execute(meter.exchange(wait=10)["work"], lambda w: ("done", RESULT))
            meter.exchange()
        t = threading.Thread(target=answer)
        t.start()
        rc, out, err = cli("send", "meter-a", "read", "--wait", "--timeout", "10")
        t.join(10)
    assert rc == 0 and "done" in out and "231.5" in out, err
    # the whole result, readable: every field on its own line, nothing cut off
    for text in ("reset_cause", "brownout", "reading.vrms", "reading.pf", "0.987",
                 "registers.import_wh", "12345.678", "uptime_s", "version", "1.4.2"):
        assert text in out, (text, out)
    assert "…" not in out and '"' not in out, out
    rc, out, _ = cli("readings", "meter-a")
    assert rc == 0 and "231.5" in out
    rc, out, _ = cli("events", "meter-a")
    assert rc == 0 and "swell" in out
    rc, out, _ = cli("presence")
    assert rc == 0 and "available" in out
    rc, out, _ = cli("presence", "meter-a")
    assert rc == 0 and "meter" in out

    rc, out, _ = cli("group", "create", "g1", "meter-a")
    assert rc == 0 and out.strip() == "g1: meter-a"
    rc, out, _ = cli("group", "send", "g1", "read", "--when-available", "--deadline", "60")
    gid = out.strip()
    assert rc == 0 and gid.isdigit()
    rc, out, _ = cli("group", "status", "g1", gid)
    assert rc == 0 and "queued" in out and "meter-a" in out


@pytest.mark.parametrize("argv,message", [
    (["send", "meter-a", "read", "[1]"], "ARGS must be a JSON object"),
    (["send", "meter-a", "read", "{nope"], "ARGS must be a JSON object"),
    (["work", "w-99999999"], "HTTP 404: unknown work w-99999999"),
    (["send", "nope", "read"], "HTTP 404: unknown device nope"),
    (["devices", "--token", "not-a-real-token-1234"], "HTTP 401: invalid token"),
    (["devices", "--url", "http://127.0.0.1:9"], "cannot connect to http://127.0.0.1:9"),
    (["send", "meter-a", "reset_energy"], "HTTP 403: reset_energy requires a utility token"),
    (["add-token", "x", "--role", "root"], "Invalid value for '--role'"),
    (["add-device", "bad id"], "device id must be"),
    (["add-device", "m2", "--key", "zz"], "key must be"),
    (["group", "status", "g", "x"], "'x' is not a valid integer"),
])
def test_errors_are_one_line(cli, headend, argv, message):
    cli("add-device", "meter-a")
    rc, out, err = cli(*argv)
    assert rc != 0
    assert err.startswith("backchannel: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


def test_wrapper_script_runs_without_token(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "BACKCHANNEL_TOKEN": ""}
    p = subprocess.run([str(ROOT / "tools" / "backchannel"), "devices"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 1
    assert p.stderr == "backchannel: error: no token: use --token or BACKCHANNEL_TOKEN\n"
