"""Waveform captures at the head-end (issue 14, item 3): the chunks a meter uploads (made by
the firmware's own capture.py here) are stored with the event, put back together, and
`backchannel waveform METER EVENT --out NAME` writes COMTRADE 2013 that the `comtrade`
library and tools/replay read back sample-exact."""

import array
import math
import subprocess
import sys

import comtrade
import pytest
from fastapi.testclient import TestClient
from headend_harness import client, headend, op  # noqa: F401

from headend import client as client_mod
from headend.cli import main
from lab import runner
from sim import waveform

pytestmark = pytest.mark.unit
capture = runner.import_firmware("capture")
config = runner.import_firmware("config")


class Board:
    sample_rate = 3200.0
    v_gain = 0.2541164994889155
    i_gain = 0.048828125
    v_mid = 2048
    i_mid = 2047


def chunks():
    """A capture of a dip as the meter uploads it, and the counts it holds."""
    cfg = config.validate({"capture": True})
    cap = capture.Capture(cfg, Board, 64, (3200000, 1000))
    fed = array.array("H")
    vb, ib = array.array("H", [0] * 128), array.array("H", [0] * 128)
    k = 0
    out = []
    for block in range(40):
        for j in range(128):
            x = 2 * math.pi * 50 * k / 3200
            amp = 0.5 if 2560 <= k < 2880 else 1.0      # a 50 % dip for 5 cycles
            vb[j] = int(2048 + 1279 * amp * math.sin(x) + 0.5)
            ib[j] = int(2047 + 400 * math.sin(x - 0.3) + 0.5)
            k += 1
        fed.extend(vb)
        if block == 20:
            cap.trigger({"kind": "dip", "start_s": 1796000000, "start_ms": 800})
        cap.feed(vb, ib, 128)
        body = cap.chunk()
        if body is not None:
            out.append(body)
    return out, fed


@pytest.fixture
def cli(client, headend, capsys, monkeypatch):
    monkeypatch.setattr(client_mod.httpx, "Client", lambda base_url, timeout, verify, headers:
                        TestClient(headend.app, base_url=base_url, headers=headers))
    monkeypatch.setenv("BACKCHANNEL_URL", "http://testserver")
    monkeypatch.setenv("BACKCHANNEL_TOKEN", headend.op_token)

    def run(*argv):
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        out, err = capsys.readouterr()
        return e.value.code, out, err
    return run


def test_capture_round_trip_to_comtrade_is_sample_exact(client, headend, op, cli, tmp_path):
    items, fed = chunks()
    assert len(items) == 3 and items[0]["pre"] == 256
    m = headend.meter(client, "m1")
    m.add("waveform", items[0])
    m.add("waveform", items[2])
    m.exchange()
    event = items[0]["event"]
    r = op.get("/v1/devices/m1/waveforms/%s" % event)
    assert r.status_code == 409 and "chunks 1 of 3" in r.json()["error"]
    m.add("waveform", items[1])
    m.add("waveform", items[1])                    # sent twice (a retry): kept once
    m.exchange()
    listed = op.get("/v1/devices/m1/waveforms").json()
    assert listed == [{"event": event, "kind": "dip", "chunks": 3, "have": 3, "samples": 768}]
    cap = op.get("/v1/devices/m1/waveforms/%s" % event).json()
    # triggered before block 20: 2 blocks before it (pre 256) and 4 after (post 512)
    assert cap["v"] == list(fed[18 * 128:24 * 128])

    code, out, err = cli("waveform", "m1", event, "--out", str(tmp_path / "dip"))
    assert code == 0, err
    rec = comtrade.Comtrade()
    rec.load(str(tmp_path / "dip.cfg"), str(tmp_path / "dip.dat"))
    assert rec.cfg.rev_year in (2013, "2013") and rec.cfg.ft == "BINARY"
    assert rec.total_samples == 768 and rec.cfg.sample_rates[0][0] == 3200.0
    a = rec.cfg.analog_channels[0]
    counts = [round((x - a.b) / a.a) for x in rec.analog[0]]
    assert counts == cap["v"]                       # sample-exact
    assert rec.analog[0][300] == pytest.approx((cap["v"][300] - 2048) * Board.v_gain, rel=1e-6)
    # tools/replay's loader reads the same volts and amps
    rate, v, i = waveform.load(tmp_path / "dip.cfg")
    assert rate == 3200.0 and len(v) == 768
    assert [round(x / Board.v_gain + 2048) for x in v] == cap["v"]
    assert [round(x / Board.i_gain + 2047) for x in i] == cap["i"]
    # and tools/replay runs the metering engine on it (the dip within 12 cycles)
    p = subprocess.run([sys.executable, "-m", "sim.replay", str(tmp_path / "dip.cfg"),
                        "--interpreter", "cpython"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr


def test_waveform_cli_refuses_clearly(client, headend, cli):
    headend.meter(client, "m1")
    code, out, err = cli("waveform", "m1", "1796000000.800", "--out", "x")
    assert code != 0 and "no waveform for event" in err and "Traceback" not in err
    code, out, err = cli("waveform", "m1", "1796000000.800")
    assert code != 0 and "--out NAME" in err
