"""Waveform files (CSV, COMTRADE) as numpy arrays, and integer decimation.

    load(path, v_channel=None, i_channel=None) -> (rate_hz, v, i)
    load_timed(...) -> (rate_hz, v, i, t0): also the time of the first sample (s)

CSV: a header row naming columns t, v, i (seconds, volts, amps; any order, any case, extra
columns ignored), then one sample per row. The sample period comes from t and must be
uniform within 1%.

COMTRADE (IEEE C37.111, 1991/1999/2013; ASCII, BINARY, BINARY32 or FLOAT32 .dat): give the
.cfg path. Channels are picked by name, or else by unit: the first V/kV channel and the
current channel (A/kA) on the same phase, or the first one. Values are converted to
primary volts and amps (kV, kA and secondary-unit channels are scaled).
"""

import csv
import math
import os
import warnings

import numpy as np

UNIFORM_TOLERANCE = 0.01
MAX_RATE_HZ = 1e7     # above any recorder's rate: a larger figure in a .cfg is damage
TAPS_PER_FACTOR = 64  # anti-alias FIR length per unit of decimation factor
_UNITS = {"v": ("V", 1.0), "kv": ("V", 1e3), "mv": ("V", 1e-3),
          "a": ("A", 1.0), "ka": ("A", 1e3), "ma": ("A", 1e-3)}


class WaveformError(ValueError):
    pass


def load(path, v_channel=None, i_channel=None):
    """(rate_hz, v, i): float64 arrays of volts and amps. Raises WaveformError."""
    return load_timed(path, v_channel, i_channel)[:3]


def load_timed(path, v_channel=None, i_channel=None):
    """(rate_hz, v, i, t0): as load(), plus the time of the first sample (s)."""
    path = str(path)
    if not os.path.exists(path):
        raise WaveformError("no such file: %s" % path)
    if os.path.isdir(path):
        raise WaveformError("%s is a directory, not a waveform file" % path)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".cfg", ".cff"):
        return _load_comtrade(path, v_channel, i_channel)
    if ext == ".dat":
        raise WaveformError("%s: give the COMTRADE .cfg file, not the .dat" % path)
    if v_channel or i_channel:
        raise WaveformError("channel names apply to COMTRADE files only")
    return _load_csv(path)


def uniform_rate(t, what="t"):
    """Sample rate from sample times, which must be uniform within UNIFORM_TOLERANCE."""
    if len(t) < 2:
        raise WaveformError("%s: need at least 2 samples, got %d" % (what, len(t)))
    if not np.all(np.isfinite(t)):
        raise WaveformError("%s has a time that is not a finite number" % what)
    dt = np.diff(t)
    step = (t[-1] - t[0]) / (len(t) - 1)
    if not 0 < step < np.inf:
        raise WaveformError("%s must increase" % what)
    bad = np.flatnonzero(np.abs(dt - step) > UNIFORM_TOLERANCE * step)
    if len(bad):
        k = int(bad[0])
        raise WaveformError("%s is not uniform: step %d is %.6g s, but the mean step is %.6g s "
                            "(must agree within 1%%)" % (what, k + 1, dt[k], step))
    return 1.0 / step


def decimation_delay(factor):
    """Samples of the input dropped before decimate()'s first output (the FIR half length)."""
    return (TAPS_PER_FACTOR * factor) // 2 if factor > 1 else 0


def decimate(x, factor):
    """Low-pass then keep every factor-th sample. The anti-alias filter is a linear-phase
    Blackman-windowed sinc FIR (TAPS_PER_FACTOR * factor + 1 taps, cutoff at 80% of the new
    Nyquist, unity gain at DC, flat to well under 0.01% across the power-frequency
    harmonics that survive). Only fully-overlapped outputs are kept, so output k is input
    decimation_delay(factor) + k * factor: the edges lose half a filter length each."""
    if factor <= 1:
        return np.asarray(x, dtype=float)
    half = decimation_delay(factor)
    n = np.arange(-half, half + 1)
    cutoff = 0.4 / factor  # cycles per input sample
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.blackman(len(n))
    taps /= taps.sum()
    if len(x) < len(taps):
        raise WaveformError("too short to decimate: %d samples, need at least %d"
                            % (len(x), len(taps)))
    return np.convolve(x, taps, mode="valid")[::factor]


def _load_csv(path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError) as e:
        raise WaveformError("cannot read %s: %s" % (path, _reason(e))) from None
    if not header or not any(h.strip() for h in header):
        raise WaveformError("%s is empty: expected a header row with columns t, v, i" % path)
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("t", "v", "i") if c not in names]
    if missing:
        raise WaveformError("%s: missing column%s %s (header has: %s)"
                            % (path, "s" if len(missing) > 1 else "", ", ".join(missing),
                               ", ".join(h.strip() for h in header)))
    cols = [names.index(c) for c in ("t", "v", "i")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns about files with no data rows
        try:
            data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=cols, ndmin=2,
                              encoding="utf-8-sig", comments=None)
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            try:
                problem = _csv_problem(path, cols)
            except (OSError, UnicodeDecodeError):
                problem = None
            raise WaveformError(problem or "cannot read %s: %s" % (path, _reason(e))) from None
    if len(data) == 0:
        raise WaveformError("%s has a header but no samples" % path)
    if not np.all(np.isfinite(data)):
        row = int(np.flatnonzero(~np.all(np.isfinite(data), axis=1))[0])
        raise WaveformError("%s line %d: values must be finite numbers" % (path, row + 2))
    t, v, i = data[:, 0], data[:, 1], data[:, 2]
    return uniform_rate(t, "%s: column t" % path), v, i, float(t[0])


def _csv_problem(path, cols):
    """The first bad line of a CSV file that numpy would not parse, as a message."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader)
        for row in reader:
            where = "%s line %d" % (path, reader.line_num)
            if not any(c.strip() for c in row):
                continue
            for c in cols:
                if c >= len(row):
                    return "%s: %d values, header has %d columns" % (where, len(row), len(header))
                try:
                    float(row[c])
                except ValueError:
                    return "%s: column %s is not a number: %r" % (where, header[c].strip(), row[c])
    return None


def _load_comtrade(path, v_channel, i_channel):
    try:
        import comtrade
    except ImportError:
        raise WaveformError("reading COMTRADE needs the comtrade package "
                            "(pip install comtrade)") from None
    base, ext = os.path.splitext(path)
    dat = base + (".dat" if ext.islower() else ".DAT")
    if ext.lower() == ".cfg" and not os.path.isfile(dat):
        raise WaveformError("COMTRADE data file not found: %s" % dat)
    rec = comtrade.Comtrade(ignore_warnings=True, use_numpy_arrays=True,
                            use_double_precision=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec.load(path)
    except Exception as e:  # the library raises many kinds on malformed files
        raise WaveformError("%s is not a readable COMTRADE .cfg/.dat pair: %s"
                            % (path, _reason(e))) from None
    cfg = rec.cfg
    if rec.analog_count == 0:
        raise WaveformError("%s has no analog channels" % path)
    _check_complete(rec, dat)
    chans = cfg.analog_channels
    vk = _pick(chans, "V", v_channel, "voltage", path)
    ik = _pick(chans, "A", i_channel, "current", path, like=chans[vk])
    v = _primary(chans[vk], rec.analog[vk])
    i = _primary(chans[ik], rec.analog[ik])
    for ch, x in ((chans[vk], v), (chans[ik], i)):
        if len(x) == 0:
            raise WaveformError("%s has no samples" % path)
        if not np.all(np.isfinite(x)):
            raise WaveformError("%s: channel %r has missing samples" % (path, ch.name))
    rates = {r for r, _ in cfg.sample_rates}
    if len(rates) > 1:
        raise WaveformError("%s has %d different sample rates; only one is supported"
                            % (path, len(rates)))
    rate = rates.pop()
    t = np.asarray(rec.time, dtype=float)
    if not np.isfinite(rate) or rate > MAX_RATE_HZ:
        raise WaveformError("%s: sample rate %r Hz is not a usable number" % (path, rate))
    if rate <= 0:  # timestamped samples: derive the rate from the time stamps
        rate = uniform_rate(t, "%s: time stamps" % path)
    if not np.isfinite(t[0]):
        raise WaveformError("%s: the first time stamp is not a finite number" % path)
    return float(rate), v, i, float(t[0])


def _check_complete(rec, dat):
    # The library zero-fills samples a short .dat lacks; refuse those files instead.
    expected = rec.total_samples
    ft = rec.ft.upper()
    if not os.path.isfile(dat):
        return
    if ft == "ASCII":
        with open(dat, "rb") as f:
            got = sum(1 for line in f if line.strip(b" \t\r\n\x1a"))
    else:
        size = 2 if ft == "BINARY" else 4
        row = 8 + size * rec.analog_count + 2 * math.ceil(rec.status_count / 16)
        got = os.path.getsize(dat) // row
    if got < expected:
        raise WaveformError("%s is truncated: %d of the %d samples its .cfg declares"
                            % (dat, got, expected))


def _unit(ch):
    return _UNITS.get(ch.uu.strip().lower(), (None, 1.0))


def channel_unit(ch):
    """"V", "A" or None: what a COMTRADE analog channel measures, by its unit."""
    return _unit(ch)[0]


def primary(ch, values):
    """A COMTRADE channel's values in primary volts or amps."""
    return _primary(ch, values)


def _pick(chans, unit, name, what, path, like=None):
    option = "--%s-channel" % ("v" if unit == "V" else "i")
    names = ", ".join("%s (%s)" % (c.name, c.uu) for c in chans)
    if name is not None:
        for match in (lambda c: c.name == name, lambda c: c.name.strip().lower() == name.lower()):
            found = [k for k, c in enumerate(chans) if match(c)]
            if found:
                return found[0]
        raise WaveformError("%s: no analog channel named %r (channels: %s)" % (path, name, names))
    found = [k for k, c in enumerate(chans) if _unit(c)[0] == unit]
    if not found:
        raise WaveformError("%s: no %s channel (unit %s or k%s); name one with %s "
                            "(channels: %s)" % (path, what, unit, unit, option, names))
    if like is not None:
        same_phase = [k for k in found
                      if like.ph.strip() and chans[k].ph.strip() == like.ph.strip()]
        if same_phase:
            return same_phase[0]
    return found[0]


def _primary(ch, values):
    x = np.asarray(values, dtype=float) * _unit(ch)[1]
    if str(ch.pors).strip().upper() == "S" and ch.primary > 0 and ch.secondary > 0:
        x = x * (ch.primary / ch.secondary)
    return x


def _reason(e):
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__
