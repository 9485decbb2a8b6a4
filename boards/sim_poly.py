"""A simulated polyphase or multi-circuit board (firmware/polyphase.py's channel order), made
of one sim_board.SimBoard per phase or circuit. The scenario is SimBoard's; its config's
`wiring` picks the channels:

  3p4w   phases a, b, c, 120 degrees apart, each with the scenario's loads and events;
         "phases": [{...}, {...}, {...}] overrides keys per phase (loads, events, harmonics)
  3p3w   the same three phases, metered as Vab, Vcb and Ia, Ic (nominal_v is line to line)
  1vnct  one voltage; "circuits": [{"loads": [...]}, ...] gives each CT circuit its loads
"""

import array
import math

from boards.sim_board import SimBoard

SHIFT = 2 * math.pi / 3


def board_for(scenario, cfg=None):
    """The board a scenario and config need: SimBoard, or SimPolyBoard for a polyphase
    wiring."""
    wiring = (cfg or {}).get("wiring", "1p2w")
    if wiring == "1p2w":
        return SimBoard(scenario)
    return SimPolyBoard(scenario, wiring, cfg)


def _merged(scenario, over):
    s = dict(scenario)
    s.update(over or {})
    return s


class SimPolyBoard:
    def __init__(self, scenario, wiring, cfg=None):
        self.wiring = wiring
        self.neutral = wiring == "3p4w" and bool((cfg or {}).get("neutral_ct"))
        base = dict(scenario)
        if wiring == "3p3w":
            # phases at nominal / sqrt(3); the ADC spans the line voltage
            line = float(base.get("nominal_v", 400.0))
            adc = dict(base.get("adc", {}))
            adc.setdefault("v_peak_fullscale", line * math.sqrt(2) * 1.6)
            base["adc"] = adc
            base["nominal_v"] = line / math.sqrt(3)
        if wiring == "1vnct":
            specs = scenario.get("circuits") or [{}]
            self.parts = [SimBoard(_merged(base, c), seed=1 + j) for j, c in enumerate(specs)]
            self.nv = 1
        else:
            over = scenario.get("phases") or [{}, {}, {}]
            self.parts = [SimBoard(_merged(base, over[k]), seed=1 + k) for k in range(3)]
            for k, b in enumerate(self.parts):
                b.theta = -SHIFT * k
            self.nv = 3 if wiring == "3p4w" else 2
        first = self.parts[0]
        for name in ("sample_rate", "channel_delay_s", "v_gain", "i_gain", "v_mid", "i_mid"):
            setattr(self, name, getattr(first, name))
        if wiring == "3p3w":
            self.nominal_v = float(scenario.get("nominal_v", 400.0))
        ni = len(self.parts) if wiring != "3p3w" else 2
        ni += 1 if self.neutral else 0
        self.channels = self.nv + ni
        # each element's I is read channel_delay_s after its V, all at the frame's instant
        self.channel_offsets_s = [0.0] * self.nv + [self.channel_delay_s] * ni
        self.scratch = None

    def set_relay(self, closed):
        for b in self.parts:
            b.set_relay(closed)

    def read(self, bufs):
        n = len(bufs[0])
        if self.scratch is None or len(self.scratch[0]) != n:
            self.scratch = [array.array("H", [0] * n) for _ in range(2)]
        if self.wiring == "3p4w":
            for k in range(3):
                self.parts[k].read(bufs[k], bufs[3 + k])
            if self.neutral:  # In = Ia + Ib + Ic (a four-wire load returns it)
                mid = self.i_mid
                ia, ib, ic, out = bufs[3], bufs[4], bufs[5], bufs[6]
                for k in range(n):
                    out[k] = max(0, min(4095, ia[k] + ib[k] + ic[k] - 2 * mid))
        elif self.wiring == "1vnct":
            self.parts[0].read(bufs[0], bufs[1])
            for j in range(1, len(self.parts)):
                self.parts[j].read(self.scratch[0], bufs[1 + j])
        else:  # 3p3w: Vab = Va - Vb, Vcb = Vc - Vb; Ia, Ic
            va, vc = bufs[0], bufs[1]
            vb = self.scratch[0]
            self.parts[0].read(va, bufs[2])
            self.parts[1].read(vb, self.scratch[1])
            self.parts[2].read(vc, bufs[3])
            mid = self.v_mid
            for k in range(n):
                b = vb[k]
                va[k] = max(0, min(4095, va[k] - b + mid))
                vc[k] = max(0, min(4095, vc[k] - b + mid))
        return n
