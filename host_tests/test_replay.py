"""tools/replay: CSV and COMTRADE waveforms through the firmware's metering engine."""

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim import waveform

ROOT = Path(__file__).resolve().parent.parent
REPLAY = ROOT / "tools" / "replay"

pytestmark = pytest.mark.system

V_RMS, I_RMS, PF, FREQ = 230.0, 10.0, 0.9, 50.0
PHI = math.acos(PF)
EXPECTED = {"vrms": V_RMS, "irms": I_RMS, "p": V_RMS * I_RMS * PF,
            "q": V_RMS * I_RMS * math.sin(PHI), "s": V_RMS * I_RMS, "pf": PF, "f": FREQ}


def signal(rate, seconds, event=None):
    """t, v, i of a 230 V / 10 A load at PF 0.9 lagging; event = (start_s, cycles, scale)
    scales the voltage over whole cycles."""
    t = np.arange(int(round(seconds * rate))) / rate
    w = 2 * math.pi * FREQ
    v = V_RMS * math.sqrt(2) * np.sin(w * t)
    i = I_RMS * math.sqrt(2) * np.sin(w * t - PHI)
    if event:
        start, cycles, scale = event
        v[(t >= start) & (t < start + cycles / FREQ)] *= scale
    return t, v, i


def write_csv(path, t, v, i):
    # columns out of order, plus one to ignore
    np.savetxt(path, np.c_[v, t, np.zeros_like(t), i], delimiter=",", fmt="%.10g",
               header="V,t,note,i", comments="")
    return path


def write_comtrade(path_cfg, rate, channels, ft="ASCII", rev="1999"):
    """channels: list of (name, phase, unit, a, values, primary, secondary, p_or_s); the
    values are stored as round(values / a) (int16 in the BINARY format)."""
    n = len(channels[0][4])
    lines = ["replay test,pytest,%s" % rev, "%d,%dA,0D" % (len(channels), len(channels))]
    for k, (name, ph, unit, a, _, primary, secondary, ps) in enumerate(channels, 1):
        lines.append("%d,%s,%s,,%s,%r,0,0,-32767,32767,%r,%r,%s"
                     % (k, name, ph, unit, a, primary, secondary, ps))
    lines += ["%g" % FREQ, "1", "%g,%d" % (rate, n),
              "01/06/2024,12:00:00.000000", "01/06/2024,12:00:00.000000", ft, "1"]
    if rev == "2013":
        lines += ["+0,+0", "0,0"]
    Path(path_cfg).write_text("\r\n".join(lines) + "\r\n")
    counts = np.array([np.round(np.asarray(c[4]) / c[3]) for c in channels]).astype(np.int64)
    assert np.all(np.abs(counts) <= 32767)
    stamps = np.round(np.arange(n) * 1e6 / rate).astype(np.int64)
    dat = Path(str(path_cfg)[:-4] + ".dat")
    if ft == "ASCII":
        rows = np.c_[np.arange(1, n + 1), stamps, counts.T]
        dat.write_text("\r\n".join(",".join(map(str, r)) for r in rows.tolist()) + "\r\n")
    else:
        fmt = "<II" + "h" * len(channels)
        dat.write_bytes(b"".join(struct.pack(fmt, k + 1, int(stamps[k]), *counts[:, k].tolist())
                                 for k in range(n)))
    return path_cfg


def run_replay(*args, direct=False):
    cmd = [str(REPLAY)] if direct else [sys.executable, "-m", "sim.replay"]
    p = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                       timeout=300)
    return p


def records(p):
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return [json.loads(line) for line in p.stdout.splitlines()]


def check_readings(recs, expected_count):
    # The last reading is the partial one closed at the end of input; it may hold the event.
    readings = [r for r in recs if r["type"] == "reading"]
    assert len(readings) == expected_count
    for r in readings[1:-1]:
        assert list(r)[:9] == ["type", "t", "vrms", "irms", "p", "q", "s", "pf", "f"]
        for key, want in EXPECTED.items():
            assert r[key] == pytest.approx(want, rel=0.002), (key, r)
    return readings


def test_csv_round_trip_and_dip(tmp_path, interpreter):
    # 3 s at 3200 Hz (64 samples/cycle) with a 50% dip for 5 cycles at 2.3 s. Readings
    # close at the first zero crossing after each second; the end of input closes a third.
    csv = write_csv(tmp_path / "dip.csv", *signal(3200, 3.0, event=(2.3, 5, 0.5)))
    # micropython run via the shebang, cpython via the venv python
    p = run_replay(csv, "--interpreter", interpreter, direct=interpreter == "micropython")
    recs = records(p)
    readings = check_readings(recs, 3)
    assert [round(r["t"]) for r in readings] == [1, 2, 3]
    events = [r for r in recs if r["type"] == "event"]
    assert len(events) == 1
    dip = events[0]
    assert list(dip) == ["type", "kind", "start_s", "duration_ms", "residual_v",
                         "extreme_pct", "category"]
    assert dip["kind"] == "dip" and dip["category"] == "instantaneous"
    assert dip["start_s"] == pytest.approx(2.3, abs=0.015)
    assert dip["duration_ms"] == pytest.approx(100, abs=15)
    assert dip["extreme_pct"] == pytest.approx(50, abs=1.0)
    assert dip["residual_v"] == pytest.approx(115, abs=2.5)
    assert not [r for r in recs if r["type"] == "event_start"]


def test_events_start_flag_and_file_time(tmp_path):
    t, v, i = signal(3200, 2.6, event=(2.3, 5, 0.5))
    csv = write_csv(tmp_path / "dip.csv", t + 100.0, v, i)  # times are reported on the file's axis
    recs = records(run_replay(csv, "--interpreter", "cpython", "--events-start"))
    others = [r for r in recs if r["type"] != "reading"]
    assert [r["type"] for r in others] == ["event_start", "event"]
    assert others[1]["start_s"] == pytest.approx(102.3, abs=0.015)
    assert recs[0]["t"] == pytest.approx(101.02, abs=0.02)


def test_voltage_only_recording(tmp_path):
    # No current at all: the current gain is raised to what the energy registers accept.
    t, v, i = signal(3200, 2.5)
    recs = records(run_replay(write_csv(tmp_path / "v.csv", t, v, 0 * i),
                              "--interpreter", "cpython"))
    assert [r["vrms"] for r in recs] == pytest.approx([V_RMS] * 3, rel=0.002)
    assert all(r["irms"] == 0 and r["p"] == 0 for r in recs)


COMTRADE_CASES = [
    # ASCII 1999: current channel first, plain V and A, primary values
    ("ASCII", "1999", []),
    # BINARY 1999: a decoy voltage channel first, kV, a CT in secondary units (100/5 A)
    ("BINARY", "1999", ["--v-channel", "VA"]),
    ("BINARY", "2013", ["--v-channel", "VA", "--i-channel", "IA"]),
]


@pytest.mark.parametrize("ft, rev, opts", COMTRADE_CASES)
def test_comtrade_swell_with_decimation(tmp_path, ft, rev, opts):
    rate = 12800.0  # 256 samples/cycle: replay decimates by 2
    t, v, i = signal(rate, 3.0, event=(2.3, 10, 1.2))
    if ft == "ASCII":
        chans = [("IA", "A", "A", 0.001, i, 1, 1, "P"),
                 ("VA", "A", "V", 0.02, v, 1, 1, "P")]
    else:
        chans = [("VN", "N", "V", 0.01, 0.5 * np.sin(2 * math.pi * 150 * t), 1, 1, "P"),
                 ("VA", "A", "kV", 2e-5, v / 1000, 1, 1, "P"),
                 ("IA", "A", "A", 5e-5, i * 5 / 100, 100, 5, "S")]
    cfg = write_comtrade(tmp_path / "rec.cfg", rate, chans, ft, rev)
    got_rate, wv, wi = waveform.load(cfg, *(["VA", None] if opts else []))
    assert got_rate == rate and len(wv) == len(t)
    assert np.max(np.abs(wv - v)) < 0.02 and np.max(np.abs(wi - i)) < 0.002
    recs = records(run_replay(cfg, *opts))
    check_readings(recs, 3)
    events = [r for r in recs if r["type"] == "event"]
    assert len(events) == 1, events
    swell = events[0]
    assert swell["kind"] == "swell" and swell["category"] == "instantaneous"
    assert swell["start_s"] == pytest.approx(2.3, abs=0.015)
    assert swell["duration_ms"] == pytest.approx(200, abs=15)
    assert swell["extreme_pct"] == pytest.approx(120, abs=1.0)


def test_decimate_keeps_the_fundamental_and_removes_aliases():
    rate, factor = 12800.0, 4
    t = np.arange(int(rate)) / rate
    x = np.sin(2 * math.pi * 50 * t) + 0.3 * np.sin(2 * math.pi * 2950 * t)
    y = waveform.decimate(x, factor)
    start = waveform.decimation_delay(factor)
    ref = np.sin(2 * math.pi * 50 * t[start::factor][:len(y)])
    assert np.max(np.abs(y - ref)) < 1e-3  # 2950 Hz would alias to 250 Hz at 3200 Hz


def bad_inputs(tmp_path):
    """(name, args) for each kind of bad input."""
    good = write_csv(tmp_path / "good.csv", *signal(3200, 0.2))
    t, v, i = signal(3200, 0.2)
    t_jump = t.copy()
    t_jump[100:] += 0.0001
    files = {
        "missing.csv": None,
        "undecodable.csv": b"\xff\xfe\x00\x81t,v,i\n",
        "no_i.csv": "t,v\n0,1\n0.001,2\n",
        "text.csv": "t,v,i\n0,1,2\n0.0003125,abc,3\n",
        "nan.csv": "t,v,i\n0,1,2\n0.0003125,nan,3\n",
        "short_row.csv": "t,v,i\n0,1,2\n0.0003125,3\n",
        "empty.csv": "",
        "header_only.csv": "t,v,i\n",
        "one_sample.csv": "t,v,i\n0,1,2\n",
    }
    cases = []
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        cases.append((name, [path]))
    cases.append(("directory", [tmp_path]))
    cases.append(("non-uniform", [write_csv(tmp_path / "jump.csv", t_jump, v, i)]))
    cases.append(("decreasing", [write_csv(tmp_path / "back.csv", t[::-1], v, i)]))
    cases.append(("rate too low", [write_csv(tmp_path / "slow.csv", *signal(1000, 0.2))]))
    chans = [("VA", "A", "V", 0.02, v, 1, 1, "P"), ("IA", "A", "A", 0.001, i, 1, 1, "P")]
    nodat = write_comtrade(tmp_path / "nodat.cfg", 3200, chans)
    (tmp_path / "nodat.dat").unlink()
    cases.append(("cfg without dat", [nodat]))
    cases.append(("dat given", [Path(str(write_comtrade(tmp_path / "d.cfg", 3200, chans))[:-4]
                                     + ".dat")]))
    garbled = tmp_path / "garbled.cfg"
    garbled.write_text("this is not,a comtrade file\nreally\n")
    (tmp_path / "garbled.dat").write_text("1,2,3\n")
    cases.append(("garbled cfg", [garbled]))
    short = write_comtrade(tmp_path / "short.cfg", 3200, chans, ft="BINARY")
    data = (tmp_path / "short.dat").read_bytes()
    (tmp_path / "short.dat").write_bytes(data[:len(data) // 2])
    cases.append(("truncated dat", [short]))
    ok_cfg = write_comtrade(tmp_path / "ok.cfg", 3200, chans)
    cases.append(("unknown channel", [ok_cfg, "--v-channel", "VZ"]))
    for word in ("nan", "inf", "1e300"):   # the fuzzer's find: a NaN rate was taken as a rate
        cfg = write_comtrade(tmp_path / ("rate-%s.cfg" % word), 3200, chans)
        n = len(chans[0][4])
        text = cfg.read_bytes().replace(b"\r\n3200,%d\r\n" % n, b"\r\n%s,%d\r\n"
                                        % (word.encode(), n))
        assert word.encode() in text
        cfg.write_bytes(text)
        cases.append(("sample rate %s" % word, [cfg]))
    no_amps = write_comtrade(tmp_path / "noamps.cfg", 3200, chans[:1])
    cases.append(("no current channel", [no_amps]))
    cases.append(("unknown interpreter", [good, "--interpreter", "pypy"]))
    cases.append(("bad frequency", [good, "--frequency", "55"]))
    cases.append(("nominal out of range", [good, "--nominal", "2e6"]))  # 50 V..1 MV
    cases.append(("no file argument", []))
    cases.append(("unknown option", [good, "--bogus"]))
    return cases


def test_bad_inputs_fail_cleanly(tmp_path):
    failures = []
    for name, args in bad_inputs(tmp_path):
        p = run_replay(*args)
        lines = p.stderr.strip().splitlines()
        ok = (p.returncode == 2 and len(lines) == 1 and lines[0].startswith("replay: error:")
              and "Traceback" not in p.stderr and p.stdout == "")
        if not ok:
            failures.append((name, p.returncode, p.stderr))
    assert not failures, failures


def feeder_signal(rate, seconds, v_rms, i_rms):
    """A 4.16 kV feeder's phase (or its PT/CT secondaries): 5 % 5th harmonic in V, 20 % 5th
    in I, PF 0.9 lagging, a dip to 70 % for 5 cycles at 2.3 s."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = 2 * math.pi * FREQ * t
    v = v_rms * math.sqrt(2) * (np.sin(x) + 0.05 * np.sin(5 * x))
    i = i_rms * math.sqrt(2) * (np.sin(x - PHI) + 0.2 * np.sin(5 * (x - PHI)))
    v[(t >= 2.3) & (t < 2.3 + 5 / FREQ)] *= 0.7
    return t, v, i


def check_feeder(recs, v_rms, i_rms):
    readings = [r for r in recs if r["type"] == "reading"]
    assert len(readings) == 3
    r = readings[1]
    assert list(r)[:11] == ["type", "t", "vrms", "irms", "p", "q", "s", "pf", "f", "thd_v",
                            "thd_i"]
    assert r["v1"] == pytest.approx(v_rms, rel=0.002)
    assert r["i1"] == pytest.approx(i_rms, rel=0.002)
    assert r["q"] == pytest.approx(v_rms * i_rms * math.sin(PHI), rel=0.005)
    assert r["thd_v"] == pytest.approx(5.0, rel=0.05)
    assert r["thd_i"] == pytest.approx(20.0, rel=0.05)
    assert readings[2]["import_wh"] > readings[1]["import_wh"] > 1.0  # primary Wh
    (dip,) = [e for e in recs if e["type"] == "event"]
    assert dip["kind"] == "dip" and dip["extreme_pct"] == pytest.approx(70, abs=1.0)
    assert dip["residual_v"] == pytest.approx(0.7 * 2401.8 * math.sqrt(1 + 0.05**2), rel=0.02)


def test_primary_feeder_at_its_true_nominal(tmp_path):
    # 4.16 kV line to line: 2401.8 V phase, 300 A
    csv = write_csv(tmp_path / "feeder.csv", *feeder_signal(3200, 3.0, 2401.8, 300.0))
    recs = records(run_replay(csv, "--nominal", "2401.8", "--interpreter", "cpython"))
    check_feeder(recs, 2401.8, 300.0)


def test_secondary_recording_with_pt_and_ct_ratios(tmp_path):
    # the same feeder through a 20:1 PT and a 300:5 CT
    csv = write_csv(tmp_path / "sec.csv", *feeder_signal(3200, 3.0, 2401.8 / 20, 5.0))
    recs = records(run_replay(csv, "--nominal", "2401.8", "--pt-ratio", "20",
                              "--ct-ratio", "60"))
    check_feeder(recs, 2401.8, 300.0)


@pytest.mark.parametrize("args,message", [
    (["--nominal", "2e6"], "--nominal"), (["--pt-ratio", "0"], "--pt-ratio"),
    (["--ct-ratio", "-5"], "--ct-ratio")])
def test_out_of_range_ratios_and_nominal_are_refused(tmp_path, args, message):
    csv = write_csv(tmp_path / "a.csv", *signal(3200, 1.0))
    p = run_replay(csv, *args)
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    assert p.stderr.startswith("replay: error:") and message in p.stderr


def test_primary_comtrade_feeder_at_its_true_nominal(tmp_path):
    # a recorder on a 4.16 kV feeder: COMTRADE 2013 binary, the voltage channel in primary
    # kV, the current channel as CT secondary amps (300/5 A): replayed at 2401.8 V nominal,
    # its dip is classified against that nominal
    t, v, i = feeder_signal(3200, 3.0, 2401.8, 300.0)
    chans = [("VA", "A", "kV", 2e-4, v / 1000, 1, 1, "P"),
             ("IA", "A", "A", 5e-4, i * 5 / 300, 300, 5, "S")]
    cfg = write_comtrade(tmp_path / "feeder.cfg", 3200, chans, "BINARY", "2013")
    recs = records(run_replay(cfg, "--nominal", "2401.8"))
    check_feeder(recs, 2401.8, 300.0)
