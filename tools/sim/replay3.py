"""Three-phase replay (tools/replay on a file with va, vb, vc, ia, ib, ic: waveform3.py):
the engine runs as 3p4w (firmware/polyphase.py) and prints readings with per-phase objects
under "a", "b" and "c" plus totals p, q, s, pf, u2_pct and sequence, and per-phase and
polyphase events. Values are primary, as for one phase (replay.Scale)."""

import json
import sys

import numpy as np

from lab import runner
from sim import METERING_MAIN, replay, waveform3


def frames(channels):
    data = np.empty((len(channels[0]), len(channels)), dtype="<f4")
    for j, x in enumerate(channels):
        data[:, j] = x
    return data.tobytes()


def run(path, nominal, frequency, interpreter, events_start, pt_ratio=1.0, ct_ratio=1.0,
        out=sys.stdout):
    rate0, vs, is_, t0 = waveform3.load(path)
    vs = [v * pt_ratio for v in vs]
    is_ = [i * ct_ratio for i in is_]
    i_peak = max(float(np.max(np.abs(i))) for i in is_)
    scale = replay.Scale.choose(nominal, i_peak)
    conditioned = [replay.condition(path, rate0, v / scale.v, i / scale.i, t0, nominal / scale.v,
                                    frequency) for v, i in zip(vs, is_)]
    rate, _, _, t0, _, _ = conditioned[0]
    v_gain = max(c[4] for c in conditioned)
    i_gain = max(c[5] for c in conditioned)
    channels = [c[1] for c in conditioned] + [c[2] for c in conditioned]
    config = {"nominal_v": nominal / scale.v, "frequency": frequency, "wiring": "3p4w"}
    try:
        cmd, env = runner.command(interpreter, METERING_MAIN, "--replay", "rate=%r" % float(rate),
                                  "v_gain=%r" % float(v_gain), "i_gain=%r" % float(i_gain),
                                  "config=" + json.dumps(config))
    except runner.RunnerError as e:
        raise replay.ReplayError(str(e)) from None
    replay.replay(cmd, env, None, None, t0, events_start, out=out, scale=scale,
                  data=frames(channels))
