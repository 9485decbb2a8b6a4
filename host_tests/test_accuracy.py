"""Reading accuracy against an independent numpy oracle (no firmware code is imported).

Signals are generated in float64 and replayed through the sim board's virtual 12-bit ADC
(fw.replay). The oracle applies the same ADC model (so the limits measure the firmware, not
quantization) and works over exactly the samples of each reading window: a reading at time t
ends at sample round(t * rate) and starts where the previous reading ended. The first reading
(start-up sync and offset settling) and a partial reading closed at the end of the input are
skipped.

Error limits, for every other reading:
  Vrms, Irms   within 0.1 % of the oracle's offset-removed RMS
  P            within 0.2 % of S = Vrms * Irms, when |PF| >= 0.5 and Irms >= 5 % of full scale
               (P = mean of v * i at the same instant, offsets removed)
  f            within 10 mHz of the generator frequency
The fixed cases also check Q = sign(fundamental reactive) * sqrt(S^2 - P^2) within 0.3 % of S.

Waveforms (hypothesis): 50..400 Vrms using 50..95 % of the ADC peak, I peak 5..97 % of
full scale, any fundamental phase (import and export), up to 3 harmonics per channel of
order 2..15 (V <= 10 %, I <= 30 % of the fundamental), 45..65 Hz (nominal 50 below 55 Hz,
else 60) at 32..128 samples per nominal cycle, gaussian noise up to 2 counts rms, DC offsets
up to 2 % of full scale, I sampled 0..50 us after V (delay_us), 4 s of signal.

Known firmware limitations (strict xfail cases below; the property test stays clear of them):
  * the 2-tap channel-delay correction is exact only for the fundamental: with delay_us > 0,
    harmonic orders present in both V and I give P errors above 0.2 % of S, so P is not
    checked for such waveforms;
  * f comes from zero crossings of unfiltered V: when harmonics make V non-monotonic around
    the crossing (order * magnitude near 1 or more) the crossing jumps between readings, so
    V harmonics are scaled to sum(order * magnitude) <= 0.5.
"""

import math
import os
from collections import namedtuple

import numpy as np
import pytest
from budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.replay import replay_samples

pytestmark = pytest.mark.unit

V_LIMIT = 1e-3
I_LIMIT = 1e-3
P_LIMIT = 2e-3      # of S
Q_LIMIT = 3e-3      # of S (fixed cases)
F_LIMIT = 0.010     # Hz
V_SLOPE = 0.5       # limit on sum(order * magnitude) of V harmonics (see the docstring)
ADC_PEAK = 2047     # counts either side of mid scale usable without clipping
I_FULL_SCALE = 100.0  # A peak at 2048 counts
I_GAIN = I_FULL_SCALE / 2048
I_FULL_SCALE_RMS = I_FULL_SCALE / math.sqrt(2)
SECONDS = 4.0
EXAMPLES = examples(int(os.environ.get("ACCURACY_EXAMPLES", "80")))  # per interpreter

Wave = namedtuple("Wave", "f nominal spc vrms v_fill i_fill phi theta v_harm i_harm "
                          "v_noise i_noise v_dc i_dc delay_us seed")


def wave(f=50.0, spc=64, vrms=230.0, v_fill=0.625, i_fill=0.14, phi=0.0, theta=0.3,
         v_harm=(), i_harm=(), v_noise=0.0, i_noise=0.0, v_dc=0.0, i_dc=0.0, delay_us=0.0,
         seed=0):
    """phi: current phase lag (rad); fills are peak fractions of ADC_PEAK; noise in counts rms;
    DC offsets as fractions of full scale; harmonics (order, magnitude, phase)."""
    return Wave(f, 50 if f < 55 else 60, spc, vrms, v_fill, i_fill, phi, theta, tuple(v_harm),
                tuple(i_harm), v_noise, i_noise, v_dc, i_dc, delay_us, seed)


def _shape(w, t, lag, harmonics):
    x = 2 * math.pi * w.f * t + w.theta - lag
    y = np.sin(x)
    for order, mag, phase in harmonics:
        y += mag * np.sin(order * x + phase)
    return y


def _crest(harmonics):
    return 1 + sum(mag for _, mag, _ in harmonics)  # bound on the peak of _shape


def signals(w, seconds=SECONDS):
    """rate, v_gain, v, i as sampled (at t + delay), i at the V sample instants."""
    rate = float(w.spc * w.nominal)
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(w.seed)
    v_shape = _shape(w, t, 0.0, w.v_harm)
    vpk = w.vrms * math.sqrt(2)
    v_gain = vpk * _crest(w.v_harm) / (w.v_fill * ADC_PEAK)
    i_shape = _shape(w, t + w.delay_us * 1e-6, w.phi, w.i_harm)
    ipk = w.i_fill * ADC_PEAK * I_GAIN / _crest(w.i_harm)
    v = vpk * v_shape + (w.v_dc * 2048 + rng.normal(0, w.v_noise, t.size)) * v_gain
    i_extra = (w.i_dc * 2048 + rng.normal(0, w.i_noise, t.size)) * I_GAIN
    i_sampled = ipk * i_shape + i_extra
    i_true = ipk * _shape(w, t, w.phi, w.i_harm) + i_extra
    return rate, v_gain, v, i_sampled, i_true


def adc(x, gain):
    """What the firmware sees, back in physical units: the sim board's 12-bit ADC applied to
    the float32 stream (so the limits measure the firmware, not quantization)."""
    counts = np.floor(x.astype(np.float32).astype(np.float64) / gain + 2048.5)
    return (np.clip(counts, 0, 4095) - 2048) * gain


def oracle(v, i_sampled, i_true, start, end):
    """Vrms, Irms, P over samples [start, end), offsets removed."""
    vw = v[start:end] - v[start:end].mean()
    iw = i_true[start:end] - i_true[start:end].mean()
    return vw.std(), i_sampled[start:end].std(), float(np.mean(vw * iw))


def readings(w, interpreter):
    """[(reading, oracle (Vrms, Irms, P))] for every complete reading after the first."""
    rate, v_gain, v, i_sampled, i_true = signals(w)
    cfg = {"frequency": w.nominal, "nominal_v": round(w.vrms, 1)}
    out = replay_samples(v, i_sampled, rate, v_gain, I_GAIN, interpreter, w.delay_us, cfg)
    v, i_sampled, i_true = adc(v, v_gain), adc(i_sampled, I_GAIN), adc(i_true, I_GAIN)
    result, start = [], None
    for r in out:
        if r["type"] != "reading":
            continue
        end = int(round(r["t"] * rate))
        if start is not None and end - start >= rate:  # skip a partial end-of-input reading
            result.append((r, oracle(v, i_sampled, i_true, start, end)))
        start = end
    assert len(result) >= int(SECONDS) - 2, "expected a reading per second: %r" % out
    return result


def shared_harmonics(w):
    return {h for h, _, _ in w.v_harm} & {h for h, _, _ in w.i_harm}


def check(w, interpreter, check_p=True):
    for r, (vrms, irms, p) in readings(w, interpreter):
        s = vrms * irms
        assert r["vrms"] == pytest.approx(vrms, rel=V_LIMIT)
        assert r["irms"] == pytest.approx(irms, rel=I_LIMIT)
        assert r["f"] == pytest.approx(w.f, abs=F_LIMIT)
        if check_p and abs(p) >= 0.5 * s and irms >= 0.05 * I_FULL_SCALE_RMS:
            assert abs(r["p"] - p) <= P_LIMIT * s, "P error %.3g%% of S" % (
                100 * (r["p"] - p) / s)


def _limit_slope(hs, max_slope):
    slope = sum(h * m for h, m, _ in hs)  # harmonics' largest slope, per unit fundamental slope
    scale = min(1.0, max_slope / slope) if slope else 1.0
    return [(h, m * scale, p) for h, m, p in hs]


def harmonics(max_mag, max_slope=None):
    one = st.tuples(st.integers(2, 15), st.floats(0, max_mag), st.floats(0, 2 * math.pi))
    hs = st.lists(one, max_size=3, unique_by=lambda h: h[0])
    return hs if max_slope is None else hs.map(lambda hs: _limit_slope(hs, max_slope))


waves = st.builds(
    wave,
    f=st.floats(45, 65),
    spc=st.integers(32, 128),
    vrms=st.floats(50, 400),
    v_fill=st.floats(0.5, 0.95),
    i_fill=st.floats(0.05, 0.97),
    phi=st.floats(-math.pi, math.pi),
    theta=st.floats(0, 2 * math.pi),
    v_harm=harmonics(0.10, V_SLOPE),
    i_harm=harmonics(0.30),
    v_noise=st.floats(0, 2),
    i_noise=st.floats(0, 2),
    v_dc=st.floats(-0.02, 0.02),
    i_dc=st.floats(-0.02, 0.02),
    delay_us=st.floats(0, 50),
    seed=st.integers(0, 2**32 - 1),
)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(w=waves)
def test_random_waveforms(interpreter, w):
    check(w, interpreter, check_p=w.delay_us == 0 or not shared_harmonics(w))


PF08 = math.acos(0.8)
FIXED = {
    # name: (current lag, expected P, expected Q) for 230 V, 10 A
    "lagging": (PF08, 1840.0, 1380.0),
    "leading": (-PF08, 1840.0, -1380.0),
    "export_lagging": (math.pi + PF08, -1840.0, -1380.0),
    "export_leading": (math.pi - PF08, -1840.0, 1380.0),
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_sine(interpreter, name):
    phi, p, q = FIXED[name]
    w = wave(phi=phi, i_fill=10 * math.sqrt(2) / (ADC_PEAK * I_GAIN), delay_us=20.0)
    rate, v_gain, v, i, _ = signals(w)
    out = replay_samples(v, i, rate, v_gain, I_GAIN, interpreter, w.delay_us)
    rs = [r for r in out if r["type"] == "reading"][1:]
    assert len(rs) >= 2
    for r in rs:
        assert r["vrms"] == pytest.approx(230.0, rel=V_LIMIT)
        assert r["irms"] == pytest.approx(10.0, rel=I_LIMIT)
        assert r["s"] == pytest.approx(2300.0, rel=V_LIMIT + I_LIMIT)
        assert r["p"] == pytest.approx(p, abs=P_LIMIT * 2300)
        assert r["q"] == pytest.approx(q, abs=Q_LIMIT * 2300)
        assert r["pf"] == pytest.approx(p / 2300, abs=P_LIMIT)
        assert r["f"] == pytest.approx(50.0, abs=F_LIMIT)


def test_low_order_harmonics_with_delay(interpreter):
    # 3rd and 5th in both channels at the largest delay: within limits at 64 samples/cycle
    w = wave(f=50.2, v_fill=0.9, i_fill=0.9, phi=0.5, delay_us=50.0,
             v_harm=[(3, 0.1, 0.0), (5, 0.1, 1.0)], i_harm=[(3, 0.3, 0.0), (5, 0.3, 1.0)])
    check(w, interpreter)


@pytest.mark.xfail(strict=True, reason="2-tap channel-delay correction is exact only for the "
                   "fundamental: 15th harmonic power with delay_us=50 at 64 spc is off by "
                   "0.43% of S")
def test_shared_harmonic_with_channel_delay(interpreter):
    w = wave(f=60.0, v_fill=0.9, i_fill=0.9, delay_us=50.0,
             v_harm=[(15, 0.1, 0.0)], i_harm=[(15, 0.3, 0.0)])
    check(w, interpreter)


@pytest.mark.xfail(strict=True, reason="f from zero crossings of unfiltered V: a 10% 13th "
                   "harmonic that makes V non-monotonic at the crossing puts f off by 24 mHz")
def test_frequency_with_steep_voltage_harmonic(interpreter):
    check(wave(f=46.5, v_harm=[(13, 0.1, 3.0)]), interpreter)


def test_frequency_after_offset_correction(interpreter):
    # a 100-count V offset is corrected at the first reading close; the next reading's
    # first crossing was sampled before that correction
    check(wave(f=50.3, v_dc=100 / 2048), interpreter)
