"""Three-phase waveform files for tools/replay: (rate_hz, [va, vb, vc], [ia, ib, ic], t0).

CSV: a header naming columns t, va, vb, vc, ia, ib, ic (any order and case; extra columns
ignored). COMTRADE: the voltage channels (V or kV) on phases A, B and C (the .cfg's `ph`
field, e.g. A, B, C or AN, BN, CN) and the current channels (A or kA) on the same phases,
converted to primary as waveform.py does for one phase. is_three_phase(path) tells whether a
file has all six.
"""

import csv
import os
import warnings

import numpy as np

from sim import waveform
from sim.waveform import WaveformError

COLUMNS = ("t", "va", "vb", "vc", "ia", "ib", "ic")


def is_three_phase(path):
    path = str(path)
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext in (".cfg", ".cff"):
            return _comtrade_channels(_open_comtrade(path)) is not None
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None) or []
    except (OSError, UnicodeDecodeError, WaveformError):
        return False
    names = {h.strip().lower() for h in header}
    return all(c in names for c in COLUMNS)


def load(path):
    path = str(path)
    if not os.path.exists(path):
        raise WaveformError("no such file: %s" % path)
    if os.path.splitext(path)[1].lower() in (".cfg", ".cff"):
        return _load_comtrade(path)
    return _load_csv(path)


def _load_csv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = [h.strip().lower() for h in next(csv.reader(f))]
    cols = [header.index(c) for c in COLUMNS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=cols, ndmin=2,
                              encoding="utf-8-sig", comments=None)
        except (ValueError, IndexError) as e:
            raise WaveformError("cannot read %s: %s" % (path, e)) from None
    if len(data) == 0:
        raise WaveformError("%s has a header but no samples" % path)
    if not np.all(np.isfinite(data)):
        raise WaveformError("%s: values must be finite numbers" % path)
    t = data[:, 0]
    rate = waveform.uniform_rate(t, "%s: column t" % path)
    return rate, [data[:, k] for k in (1, 2, 3)], [data[:, k] for k in (4, 5, 6)], float(t[0])


def _open_comtrade(path):
    import comtrade

    rec = comtrade.Comtrade(ignore_warnings=True, use_numpy_arrays=True,
                            use_double_precision=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec.load(path)
    except Exception as e:  # the library raises many kinds on malformed files
        raise WaveformError("%s is not a readable COMTRADE .cfg/.dat pair: %s"
                            % (path, e)) from None
    return rec


def _phase(ch):
    p = ch.ph.strip().upper()
    return p[0] if p[:1] in ("A", "B", "C") and p not in ("AB", "BC", "CA") else None


def _comtrade_channels(rec):
    """([va, vb, vc], [ia, ib, ic]) channel indexes, or None."""
    chans = rec.cfg.analog_channels
    v, i = {}, {}
    for k, ch in enumerate(chans):
        unit = waveform.channel_unit(ch)
        phase = _phase(ch)
        if phase is None:
            continue
        if unit == "V":
            v.setdefault(phase, k)
        elif unit == "A":
            i.setdefault(phase, k)
    if len(v) == 3 and len(i) == 3:
        return [v[p] for p in "ABC"], [i[p] for p in "ABC"]
    return None


def _load_comtrade(path):
    rec = _open_comtrade(path)
    found = _comtrade_channels(rec)
    if found is None:
        raise WaveformError("%s: no voltage and current channels on phases A, B and C" % path)
    chans = rec.cfg.analog_channels
    vs = [waveform.primary(chans[k], rec.analog[k]) for k in found[0]]
    is_ = [waveform.primary(chans[k], rec.analog[k]) for k in found[1]]
    for x in vs + is_:
        if len(x) == 0 or not np.all(np.isfinite(x)):
            raise WaveformError("%s: a phase channel has missing samples" % path)
    rates = {r for r, _ in rec.cfg.sample_rates}
    if len(rates) > 1:
        raise WaveformError("%s has %d different sample rates; only one is supported"
                            % (path, len(rates)))
    rate = rates.pop()
    t = np.asarray(rec.time, dtype=float)
    if rate <= 0:
        rate = waveform.uniform_rate(t, "%s: time stamps" % path)
    return float(rate), vs, is_, float(t[0])
