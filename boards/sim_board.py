# The simulated board: a virtual 12-bit ADC fed by a scenario generator or a replayed stream
# (the board contract: boards/contract.py). DEFAULT_SCENARIO is what a meter without
# hardware meters (make_board on a desktop port).

import math
import random

ADC_MAX = 4095
SQRT2 = 1.4142135623730951
TWO_PI = 2 * math.pi


def _adc(x, gain, offset):
    c = int(x / gain + offset + 0.5)
    return 0 if c < 0 else ADC_MAX if c > ADC_MAX else c


DEFAULT_SCENARIO = {"nominal_v": 230, "frequency": 50, "samples_per_cycle": 64,
                    "loads": [{"at_s": 0, "p_w": 1500, "pf": 0.95}]}


class ScenarioError(ValueError):
    pass


def _load(spec):
    p = spec.get("p_w", 0.0)
    pf = spec.get("pf", 1.0)
    if not 0 < abs(pf) <= 1:
        raise ScenarioError("load pf must be in (0, 1], got %r" % (pf,))
    phi = math.acos(abs(pf))
    if not spec.get("lagging", True):
        phi = -phi
    if p < 0:
        phi += math.pi
    return abs(p) / abs(pf), phi  # apparent power (VA), current phase lag (rad)


class SimBoard:
    def __init__(self, scenario, seed=1):
        s = scenario
        self.nominal_v = float(s.get("nominal_v", 230.0))
        self.frequency = float(s.get("frequency", 50))
        spc = int(s.get("samples_per_cycle", 64))
        self.sample_rate = self.frequency * spc
        adc = s.get("adc", {})
        self.channel_delay_s = adc.get("channel_delay_us", 20.0) * 1e-6
        self.v_gain = adc.get("v_peak_fullscale", self.nominal_v * SQRT2 * 1.6) / 2048.0
        self.i_gain = adc.get("i_peak_fullscale", 100.0) / 2048.0
        self.v_mid = adc.get("v_offset", 2048)
        self.i_mid = adc.get("i_offset", 2048)
        self.v_harm = s.get("v_harmonics", [])
        self.i_harm = s.get("i_harmonics", [])
        self.noise_v = s.get("noise_v", 0.0) * 3.4641016  # uniform noise with this rms
        self.noise_i = s.get("noise_i", 0.0) * 3.4641016
        self.drift = s.get("drift_hz_per_s", 0.0)
        self.f_offset = s.get("frequency_offset_hz", 0.0)
        self.period = s.get("period_s")
        self.loads = sorted([(ld.get("at_s", 0.0), _load(ld)) for ld in s.get("loads", [])])
        self.events = []
        for e in s.get("events", []):
            if e.get("kind") not in ("dip", "swell", "interruption"):
                raise ScenarioError("event kind must be dip, swell or interruption: %r" % (e,))
            dur = e.get("duration_s")
            if dur is None:
                dur = e["duration_cycles"] / self.frequency
            self.events.append((e["at_s"], e["at_s"] + dur, e["residual_pct"] / 100.0))
        self.n = 0
        self.theta = 0.0
        self.closed = True      # the relay; with "relay_cuts_load" open means no load
        self.relay_cuts = bool(s.get("relay_cuts_load", False))
        random.seed(seed)

    def set_relay(self, closed):
        self.closed = closed or not self.relay_cuts

    def _at(self, t):
        va, phi = 0.0, 0.0
        for at, load in self.loads:
            if at <= t and self.closed:
                va, phi = load
        scale = 1.0
        for start, end, residual in self.events:
            if start <= t < end:
                scale = residual
        return va, phi, scale

    def read(self, vbuf, ibuf):
        ts = 1.0 / self.sample_rate
        dt = self.channel_delay_s
        vpk = self.nominal_v * SQRT2
        for k in range(len(vbuf)):
            t = self.n * ts
            tt = t % self.period if self.period else t
            va, phi, scale = self._at(tt)
            f = self.frequency + self.f_offset + self.drift * t
            w = TWO_PI * f
            th = self.theta
            v = math.sin(th)
            for h, mag, ph in self.v_harm:
                v += mag * math.sin(h * th + ph)
            v = v * vpk * scale + self.noise_v * (random.random() - 0.5)
            thi = th + w * dt
            ipk = va / self.nominal_v * SQRT2 * scale
            i = math.sin(thi - phi)
            for h, mag, ph in self.i_harm:
                i += mag * math.sin(h * (thi - phi) + ph)
            i = i * ipk + self.noise_i * (random.random() - 0.5)
            vbuf[k] = _adc(v, self.v_gain, self.v_mid)
            ibuf[k] = _adc(i, self.i_gain, self.i_mid)
            self.theta = (th + w * ts) % TWO_PI
            self.n += 1
        return len(vbuf)


class ReplayBoard:
    """Replays physical samples: a stream of little-endian float32 pairs (v, i)."""

    def __init__(self, stream, sample_rate, v_gain, i_gain):
        self.stream = stream
        self.sample_rate = sample_rate
        self.channel_delay_s = 0.0
        self.v_gain = v_gain
        self.i_gain = i_gain
        self.v_mid = 2048
        self.i_mid = 2048
        self.raw = None

    def read(self, vbuf, ibuf):
        import struct

        size = 8 * len(vbuf)
        if self.raw is None or len(self.raw) != size:
            self.raw = bytearray(size)
        view = memoryview(self.raw)
        got = 0
        while got < size:
            r = self.stream.readinto(view[got:])
            if not r:
                break
            got += r
        pairs = got // 8
        for k in range(pairs):
            v, i = struct.unpack_from("<ff", self.raw, 8 * k)
            vbuf[k] = _adc(v, self.v_gain, 2048)
            ibuf[k] = _adc(i, self.i_gain, 2048)
        return pairs


class PolyReplayBoard:
    """Replays physical samples for polyphase.py: frames of `channels` little-endian float32
    values (voltages then currents, the wiring's channel order)."""

    def __init__(self, stream, sample_rate, v_gain, i_gain, channels, nv, offsets_s=None):
        self.stream = stream
        self.sample_rate = sample_rate
        self.v_gain = v_gain
        self.i_gain = i_gain
        self.v_mid = 2048
        self.i_mid = 2048
        self.channels = channels
        self.nv = nv
        self.channel_offsets_s = offsets_s or [0.0] * channels
        self.raw = None

    def read(self, bufs):
        import struct

        c = self.channels
        size = 4 * c * len(bufs[0])
        if self.raw is None or len(self.raw) != size:
            self.raw = bytearray(size)
        view = memoryview(self.raw)
        got = 0
        while got < size:
            r = self.stream.readinto(view[got:])
            if not r:
                break
            got += r
        frames = got // (4 * c)
        for k in range(frames):
            for j in range(c):
                x = struct.unpack_from("<f", self.raw, 4 * (c * k + j))[0]
                if j < self.nv:
                    bufs[j][k] = _adc(x, self.v_gain, 2048)
                else:
                    bufs[j][k] = _adc(x, self.i_gain, 2048)
        return frames
