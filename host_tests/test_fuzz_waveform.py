"""Fuzz tools/sim/waveform.py's CSV and COMTRADE replay input with hypothesis: only
WaveformError (with a reason) or a usable recording. Budgets and statistics: fuzz_common.py.
"""

import struct

import pytest
from fuzz_common import FUZZ, Stats
from hypothesis import given
from hypothesis import strategies as st

from sim import waveform

pytestmark = pytest.mark.unit

csv_cell = st.sampled_from(["0", "1", "-1", "1e-3", "nan", "inf", "", " ", "x", "0x1", "1,5",
                            '"1"', "\x00", "\ufeff", "1e999", "t", "v", "i", "T", " V "]) | \
    st.floats().map(repr) | st.text(max_size=6)


@st.composite
def csv_files(draw):
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=300))
    header = draw(st.sampled_from(["t,v,i", "V,t,note,i", "t,v", "T, V, I", ""])
                  | st.lists(csv_cell, max_size=4).map(",".join))
    if draw(st.booleans()):              # mostly numeric, roughly uniform rows
        n = draw(st.integers(0, 30))
        step = draw(st.sampled_from([1e-3, 1.0, 0.0, -1e-3, 1e-300]))
        rows = ["%r,%r,%r" % (k * step * draw(st.sampled_from([1, 1, 1, 1.02])),
                              draw(st.floats(-1e6, 1e6)), draw(st.floats(-1e6, 1e6)))
                for k in range(n)]
    else:
        rows = draw(st.lists(st.lists(csv_cell, max_size=5).map(",".join), max_size=8))
    nl = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = nl.join([header] + rows) + draw(st.sampled_from(["", nl]))
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8-sig"])), "surrogatepass")


def _comtrade_cfg_fields(ft, rate, n, nch):
    lines = [["fuzz", "pytest", "1999"], [str(nch), "%dA" % nch, "0D"]]
    units = ["V", "A", "kV", "kA"]
    for k in range(1, nch + 1):
        lines.append([str(k), "ch%d" % k, "A", "", units[(k - 1) % 4], "0.1", "0", "0",
                      "-32767", "32767", "1", "1", "P"])
    lines += [["50"], ["1"], [rate, n], ["01/06/2024", "12:00:00.000000"],
              ["01/06/2024", "12:00:00.000000"], [ft], ["1"]]
    return lines


@st.composite
def comtrade_files(draw):
    """(cfg bytes, dat bytes): a valid-shaped recording with fields mutated."""
    nch = draw(st.integers(0, 3))
    n = draw(st.integers(0, 8))
    ft = draw(st.sampled_from(["ASCII", "BINARY", "BINARY32", "FLOAT32", "ascii", "JUNK"]))
    lines = _comtrade_cfg_fields(ft, draw(st.sampled_from(["3200", "0", "-1", "1e9", "x"])),
                                 str(draw(st.sampled_from([n, n + 1, 0, -1, 10**6]))), nch)
    for _ in range(draw(st.integers(0, 4))):       # mutate fields
        li = draw(st.integers(0, len(lines) - 1))
        fi = draw(st.integers(0, len(lines[li])))
        val = draw(st.sampled_from(["", "x", "-1", "0", "1e400", "nan", "99999999999"])
                   | st.text(max_size=5))
        if fi < len(lines[li]):
            lines[li][fi] = val
        else:
            lines[li].append(val)
    if draw(st.integers(0, 5)) == 0:
        del lines[draw(st.integers(0, len(lines) - 1)):]
    cfg = "\r\n".join(",".join(f.replace(",", "") if f else f for f in line)
                      for line in lines).encode("utf-8", "surrogatepass") + b"\r\n"
    if ft.upper() == "ASCII" and draw(st.booleans()):
        rows = ["%d,%d,%s" % (k + 1, k * 312, ",".join(str(draw(st.integers(-40000, 40000)))
                                                        for _ in range(nch)))
                for k in range(n)]
        dat = "\r\n".join(rows).encode()
    elif ft.upper().startswith(("BINARY", "FLOAT")) and draw(st.booleans()):
        fmt = "<II" + ("h" if ft.upper() == "BINARY" else "i" if ft.upper() == "BINARY32"
                       else "f") * nch + "H"
        dat = b"".join(struct.pack(fmt, k + 1, k * 312, *([0] * nch), 0) for k in range(n))
        dat = dat[:len(dat) - draw(st.integers(0, 3))]
    else:
        dat = draw(st.binary(max_size=200))
    return cfg, dat


def _waveform(path):
    try:
        rate, v, i, t0 = waveform.load_timed(path)
    except waveform.WaveformError as exc:
        assert str(exc), "a WaveformError must say why"
        return "err:WaveformError"
    assert rate > 0 and len(v) == len(i) > 0
    return "ok"


def test_waveform_csv(tmp_path):
    stats = Stats("csv")
    path = tmp_path / "w.csv"

    @FUZZ
    @given(csv_files())
    def check(data):
        path.write_bytes(data)
        stats.case(_waveform, path)

    stats.run(check)


def test_waveform_comtrade(tmp_path):
    stats = Stats("comtrade")
    cfg_path, dat_path = tmp_path / "r.cfg", tmp_path / "r.dat"

    @FUZZ
    @given(comtrade_files())
    def check(files):
        cfg_path.write_bytes(files[0])
        dat_path.write_bytes(files[1])
        stats.case(_waveform, cfg_path)

    stats.run(check)
