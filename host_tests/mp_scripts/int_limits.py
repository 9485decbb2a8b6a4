# Integer ranges of the metering hot path, run under MicroPython and CPython.
#   int_limits.py < JSON [case, ...]     prints one JSON result per case
# A case: {"name", "nominal", "spc", "delay_us", "phase_cal", "segments": [[seconds, v, i]]}
# with v, i pattern names (see PATTERNS). kernel.run is driven one sample per call, exactly as
# Meter.feed drives it, and after every call the largest |value| of every state slot is kept,
# with the values the half-cycle bookkeeping forms from them (exact, as Python ints).

import array
import json
import math
import sys

import config
import kernel as K
import metering
import wide


class Board:
    def __init__(self, rate, delay_s):
        self.sample_rate = rate
        self.channel_delay_s = delay_s
        self.v_gain = 230.0 * 1.41421356 * 1.6 / 2048
        self.i_gain = 100.0 / 2048
        self.v_mid = 2048
        self.i_mid = 2048


def _sine(k, cyc, amp, shift):
    c = int(2048 + amp * math.sin(2 * math.pi * (k * cyc + shift)) + 0.5)
    return 0 if c < 0 else 4095 if c > 4095 else c


PATTERNS = {  # name: counts at sample k, given cycles per sample at the nominal frequency
    "alt": lambda k, cyc: 4095 * (k & 1),
    "alt_inv": lambda k, cyc: 4095 * (1 - (k & 1)),
    "alt4": lambda k, cyc: 4095 * ((k >> 1) & 1),
    "square": lambda k, cyc: 4095 if (k * cyc) % 1.0 < 0.5 else 0,
    "square_inv": lambda k, cyc: 0 if (k * cyc) % 1.0 < 0.5 else 4095,
    "square_slow": lambda k, cyc: 4095 if (k * cyc * 0.3) % 1.0 < 0.5 else 0,
    "sine": lambda k, cyc: _sine(k, cyc, 2047, 0.0),
    "sine_90": lambda k, cyc: _sine(k, cyc, 2047, 0.25),
    "sine_45hz": lambda k, cyc: _sine(k, cyc * 0.9, 2047, 0.0),
    "sine_65hz": lambda k, cyc: _sine(k, cyc * 1.3, 2047, 0.0),
    "sine_clipped": lambda k, cyc: _sine(k, cyc, 3500, 0.0),
    "sine_nominal": lambda k, cyc: _sine(k, cyc, 1280, 0.0),  # 230 V on the sim board
    "rail_hi": lambda k, cyc: 4095,
    "rail_lo": lambda k, cyc: 0,
    "rail_mid": lambda k, cyc: 4095 * (k & 1) + 2048 * (1 - (k & 1)),  # v never below 0
    "mid": lambda k, cyc: 2048,
    "noise": lambda k, cyc: ((k * 1103515245 + 12345) >> 11) & 4095,  # same on both ports
    "noise2": lambda k, cyc: ((k * 22695477 + 1) >> 9) & 4095,
}


def samples(case, rate):
    cyc = case["nominal"] / rate
    vb = array.array("H")
    ib = array.array("H")
    for seconds, vp, ip in case["segments"]:
        fv = PATTERNS[vp]
        fi = PATTERNS[ip]
        for k in range(len(vb), len(vb) + int(seconds * rate)):
            vb.append(fv(k, cyc))
            ib.append(fi(k, cyc))
    return vb, ib


def _wide_values(st, start, count):
    return [st[start + 2 * j] * wide.LOW + st[start + 2 * j + 1] for j in range(count)]


def _amax(a, m):
    for x in a:
        if abs(x) > m:
            m = abs(x)
    return m


def run_case(case):
    rate = case["nominal"] * case["spc"]
    cfg = config.validate({"frequency": case["nominal"], "interval_s": 0.25,
                           "phase_cal_deg": case.get("phase_cal", 0.0)})
    meter = metering.Meter(cfg, Board(rate, case.get("delay_us", 0.0) * 1e-6))
    st = meter.st
    vb, ib = samples(case, rate)
    F = K.FIELDS
    out = {"name": case["name"], "slots": [0] * K.SLOTS, "half": [0] * F, "wide_lo": 0,
           "energy": 0, "urms_products": 0, "arrays": 0, "halves": 0, "max_half_n": 0,
           "per_sample": 0, "error": None}
    slots = out["slots"]
    half = out["half"]
    # per-sample terms: v, i within +/-4095 (the offset can sit anywhere in 0..4095)
    coef = abs(st[K.COEF_A]) + abs(st[K.COEF_B])
    vs_max = (coef * 4095 + (1 << (K.COEF_BITS - 1))) >> K.COEF_BITS
    out["per_sample"] = max(coef * 4095 + (1 << K.COEF_BITS), vs_max * 4095, 4095 * 4095)
    before = None
    try:
        for k in range(len(vb)):
            if before is None:  # sums and remainders as they were before this half cycle
                before = (_wide_values(st, K.READING, F), st[K.READING:K.PH],
                          max(st[K.IMP_REM], st[K.EXP_REM]))
            K.run(st, vb, ib, k, k + 1)  # harmonics.py's ranges: test_harmonics.py
            for j in range(K.TAB):  # the cosine table after it is constant (and < 2**13)
                x = st[j]
                if x > slots[j]:
                    slots[j] = x
                elif -x > slots[j]:
                    slots[j] = -x
            if st[K.N] == 0:  # a half cycle ended at this sample
                sums = [a - b for a, b in zip(_wide_values(st, K.READING, F), before[0])]
                out["halves"] += 1
                out["max_half_n"] = max(out["max_half_n"], sums[0])
                for j in range(F):
                    half[j] = max(half[j], abs(sums[j]))
                    for lo in (before[1][2 * j + 1], before[1][2 * F + 2 * j + 1]):
                        out["wide_lo"] = max(out["wide_lo"], abs(lo + sums[j]))
                out["energy"] = max(out["energy"], before[2] + abs(sums[K.SP - K.N]))
                nn = st[K.URMS_N]
                out["urms_products"] = max(out["urms_products"], st[K.PQ_LOW] * nn,
                                           st[K.PQ_HIGH] * nn)
                before = None
            attn = st[K.ATTN]
            if attn:
                st[K.ATTN] = 0
                meter._attend(attn)  # what Meter.feed does
                before = None
                for a in (meter.minmax, meter.last_window, meter.ready_sums, meter.ready_ext):
                    out["arrays"] = _amax(a, out["arrays"])
    except Exception as e:  # e.g. OverflowError storing into array('i') on CPython
        out["error"] = "%s: %s" % (type(e).__name__, e)
    return out


def main():
    for case in json.loads(sys.stdin.read()):
        sys.stdout.write(json.dumps(run_case(case)))
        sys.stdout.write("\n")


main()
