"""Waveform captures a meter uploaded (`waveform` items, firmware/capture.py): the chunks of
one event put back together, and written as COMTRADE (IEEE C37.111-2013: .cfg + binary .dat).

The .dat holds the meter's raw ADC counts as int16, and each channel's a and b turn them into
volts and amps (value = a * count + b, a = gain, b = -mid * gain): a reader gets the samples
exactly as the meter took them (tools/replay, the `comtrade` library)."""

import array
import base64
import datetime as dt
import struct

from .db import loads

KIND = "waveform"


class WaveformError(ValueError):
    pass


def captures(db, device):
    """[{"event", "kind", "chunks", "have", "samples"}] in the order they arrived."""
    out = {}
    for r in db.all("SELECT body FROM items WHERE device = ? AND kind = ? ORDER BY rowid",
                    device, KIND):
        b = loads(r["body"])
        if not isinstance(b, dict) or not isinstance(b.get("event"), str):
            continue
        c = out.setdefault(b["event"], {"event": b["event"], "kind": b.get("kind"),
                                        "chunks": b.get("chunks"), "have": set(),
                                        "samples": b.get("samples")})
        c["have"].add(b.get("chunk"))
    return [dict(c, have=len(c["have"])) for c in out.values()]


def assemble(db, device, event):
    """The capture of `event`: its head and the counts, {"v": [...], "i": [...]}.
    WaveformError when there is none or a chunk has not arrived yet."""
    parts = {}
    for r in db.all("SELECT body FROM items WHERE device = ? AND kind = ? ORDER BY rowid",
                    device, KIND):
        b = loads(r["body"])
        if isinstance(b, dict) and b.get("event") == event:
            parts.setdefault(b.get("chunk"), b)          # a chunk sent twice: the first
    if not parts:
        raise WaveformError("no waveform for event %s of %s" % (event, device))
    head = next(iter(parts.values()))
    chunks = head.get("chunks")
    missing = [k for k in range(chunks) if k not in parts]
    if missing:
        raise WaveformError("the waveform of event %s is incomplete: chunks %s of %d have not "
                            "arrived yet" % (event, ", ".join(map(str, missing)), chunks))
    v, i = array.array("H"), array.array("H")
    for k in range(chunks):
        v.frombytes(base64.b64decode(parts[k]["v"]))
        i.frombytes(base64.b64decode(parts[k]["i"]))
    if len(v) != head["samples"] or len(i) != head["samples"]:
        raise WaveformError("the waveform of event %s has %d samples, its chunks say %d"
                            % (event, len(v), head["samples"]))
    keep = ("event", "kind", "frequency", "rate", "v_gain", "i_gain", "v_mid", "i_mid", "pre",
            "samples")
    out = {k: head[k] for k in keep if k in head}
    out["v"], out["i"] = v.tolist(), i.tolist()
    return out


def _stamp(t):
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return d.strftime("%d/%m/%Y,%H:%M:%S.%f")


def comtrade(device, cap):
    """(cfg text, dat bytes) of a capture: COMTRADE 2013, BINARY, times in UTC."""
    num, den = cap["rate"]
    rate = num / den
    n = cap["samples"]
    event_s = float(cap["event"])
    start = event_s - cap["pre"] / rate
    lines = ["%s,%s,2013" % (device, "backchannel"), "2,2A,0D"]
    for k, (name, unit, gain, mid) in enumerate((("V", "V", cap["v_gain"], cap["v_mid"]),
                                                 ("I", "A", cap["i_gain"], cap["i_mid"])), 1):
        lines.append("%d,%s,,,%s,%r,%r,0,0,4095,1,1,P" % (k, name, unit, gain, -mid * gain))
    lines += ["%d" % cap.get("frequency", 50), "1", "%r,%d" % (rate, n), _stamp(start),
              _stamp(event_s), "BINARY", "1", "+0,+0", "0,0"]
    cfg = "\r\n".join(lines) + "\r\n"
    rows = []
    for k in range(n):
        stamp_us = round(k * 1e6 / rate)
        rows.append(struct.pack("<IIhh", k + 1, stamp_us, cap["v"][k], cap["i"][k]))
    return cfg, b"".join(rows)
