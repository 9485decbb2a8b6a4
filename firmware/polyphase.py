# Three-phase and multi-circuit metering (issue 14, item 1): one single-phase engine
# (metering.Meter, the integer kernel and its harmonics) per measuring element, a voltage
# channel paired with a current channel, all on one frequency-locked reference.
#
#   3p4w   three elements (Va, Ia), (Vb, Ib), (Vc, Ic): phase-to-neutral voltages; with
#          neutral_ct a fourth current channel In, metered for its rms and THD only
#   3p3w   two elements (Vab, Ia), (Vcb, Ic): the two-wattmeter (Aron) connection; only
#          totals exist (and the line voltages and the two currents measured)
#   1vnct  one voltage and N current channels (circuits), N = config "circuits"
#
# Sampling contract: a block holds every channel's samples, one array('H') per channel, in
# the board's channel order: voltages first (va, vb, vc / vab, vcb / v), then currents
# (ia, ib, ic / ia, ic / i1..iN). board.channel_offsets_s gives each channel's sampling
# instant within a round-robin frame (seconds after the first voltage): each element
# corrects its own V-to-I delay (as the single-phase engine does), and a voltage sampled
# after the reference phase's has its phasor turned back by that delay (poly_reading.py).
#
# The first element leads: its zero crossings lock the reference frequency. After every
# kernel step of the leader, the followers run to the same sample and take its phase step,
# so the phases of all fundamental phasors are on one reference (phase A voltage's).
# Nothing here allocates per sample or per cycle: the loop indexes preallocated lists.

import metering
from energy import NAMES, Registers

WIRINGS = ("1p2w", "3p4w", "3p3w", "1vnct")
PHASES = {"3p4w": ("a", "b", "c"), "3p3w": ("ab", "cb")}


def layout(config):
    """[(voltage channel, current channel)] per element, and the number of voltage
    channels, for the config's wiring (ValueError with the reason if it cannot work)."""
    wiring = config.get("wiring", "1p2w")
    if wiring == "3p4w":
        if config.get("neutral_ct"):  # In rides on an element of its own, out of the totals
            return [(0, 3), (1, 4), (2, 5), (0, 6)], 3
        return [(0, 3), (1, 4), (2, 5)], 3
    if wiring == "3p3w":
        return [(0, 2), (1, 3)], 2
    if wiring == "1vnct":
        n = config.get("circuits", 1)
        return [(0, 1 + j) for j in range(n)], 1
    raise ValueError("wiring %r is not polyphase (one of %s)" % (wiring, ", ".join(WIRINGS)))


def channel_count(config):
    pairs, nv = layout(config)
    return nv + len(pairs)


def check_board(config, board):
    """The number of channels the wiring needs, or ValueError if the board has fewer."""
    need = channel_count(config)
    have = getattr(board, "channels", 2)
    if need > have:
        raise ValueError("wiring %s with %d circuit(s) needs %d ADC channels; this board has "
                         "%d" % (config.get("wiring"), config.get("circuits", 1), need, have))
    return need


class _Element:
    """What metering.Meter reads of a board, for one element: a board may give per-channel
    gains and bias points (v_gains, i_gains, v_mids, i_mids; else v_gain, i_gain, ...)."""

    def __init__(self, board, delay_s, v, i):
        self.sample_rate = board.sample_rate
        self.channel_delay_s = delay_s
        self.v_gain = _of(board, "v_gains", v, board.v_gain)
        self.i_gain = _of(board, "i_gains", i, board.i_gain)
        self.v_mid = _of(board, "v_mids", v, board.v_mid)
        self.i_mid = _of(board, "i_mids", i, board.i_mid)


def _of(board, name, k, default):
    values = getattr(board, name, None)
    return default if values is None else values[k]


class PolyMeter:
    def __init__(self, config, board):
        check_board(config, board)
        self.config = config
        self.wiring = config["wiring"]
        pairs, nv = layout(config)
        offsets = getattr(board, "channel_offsets_s", None) or [0.0] * (nv + len(pairs))
        self.v_channel = [v for v, _ in pairs]
        self.i_channel = [i for _, i in pairs]
        # each voltage's sampling instant after the reference voltage's
        self.v_offset_s = [offsets[v] - offsets[0] for v, _ in pairs]
        self.meters = []
        for v, i in pairs:
            m = metering.Meter(config, _Element(board, offsets[i] - offsets[v], v, i - nv))
            if self.meters:
                # one voltage (or the neutral's element): the leader's events only
                m.follow(pq=self.wiring != "1vnct" and len(self.meters) < 3)
            self.meters.append(m)
        self.count = len(self.meters)
        # the elements that meter power (not the neutral current's)
        self.elements = 3 if self.wiring == "3p4w" else self.count
        self.nv = nv
        self.channels = nv + self.count
        self.leader = self.meters[0]
        self.ts = self.leader.ts
        self.harmonic_order = self.leader.harmonic_order
        self.handler = None
        self.said_start = 0     # the sample an event said last started at (App stamps it)
        self.pq = self          # App reads meter.pq.said_start
        # the totals: exact mWh and mvarh, the elements netted at each fold (see fold_energy)
        self.registers = Registers(1)
        self.registers.parts = [m.registers for m in self.meters[:self.elements]]
        self.last_net = [[0, 0] for _ in self.meters]

    @property
    def on_event(self):
        return self.handler

    @on_event.setter
    def on_event(self, handler):
        self.set_event_handler(handler)

    def set_event_handler(self, handler):
        """handler(record): every element's PQ events, tagged with its phase, and the
        polyphase events of IEC 61000-4-30 (poly_events.py) with phase "poly"."""
        self.handler = handler
        final = _Final(self, handler)
        names = PHASES.get(self.wiring)
        if not names:  # one voltage: the leader's events as they are
            self.leader.on_event = _Tagger(final, None, self.leader.pq)
            return
        from poly_events import PolyEvents

        c = self.config
        poly = PolyEvents(final, names, c["nominal_v"], c["frequency"])
        for j in range(self.elements):
            self.meters[j].on_event = _Tagger(poly, names[j], self.meters[j].pq)

    def feed(self, bufs, n):
        """Consume n frames: bufs is a list of array('H'), one per channel (board order)."""
        meters = self.meters
        lead = self.leader
        vb = bufs[self.v_channel[0]]
        ib = bufs[self.i_channel[0]]
        st = lead.st
        k = 0
        while k < n:
            end = lead.step(vb, ib, k, n)
            j = 1
            while j < self.count:
                m = meters[j]
                m.feed(bufs[self.v_channel[j]], bufs[self.i_channel[j]], end, k)
                j += 1
            lead.attend()
            inc = st[metering.K.INC]
            j = 1
            while j < self.count:
                meters[j].st[metering.K.INC] = inc
                j += 1
            k = end

    def finish(self):
        for m in self.meters:
            m.finish()

    def fold_energy(self):
        """Fold each element's energy into its registers, then net the elements' energy
        since the last fold into the totals before splitting it into import and export (so
        the two wattmeters of 3p3w give the load's direction). Exact mWh."""
        dp = dq = 0
        for j in range(self.elements):
            m = self.meters[j]
            m.fold_energy()
            regs = m.registers
            p = regs.import_wh.total_mwh() - regs.export_wh.total_mwh()
            q = regs.import_varh.total_mwh() - regs.export_varh.total_mwh()
            last = self.last_net[j]
            dp += p - last[0]
            dq += q - last[1]
            last[0] = p
            last[1] = q
        t = self.registers
        if dp > 0:
            t.import_wh.add_mwh(dp)
        elif dp < 0:
            t.export_wh.add_mwh(-dp)
        if dq > 0:
            t.import_varh.add_mwh(dq)
        elif dq < 0:
            t.export_varh.add_mwh(-dq)

    def restore_energy(self, state):
        """Load persisted registers: the totals, and each element's from the same record
        (zero where the record has none: saved before they were, or a reset). The netting
        then starts from the elements' restored values, so they are not counted twice."""
        self.fold_energy()
        parts = state.get("elements")
        if not isinstance(parts, list) or len(parts) != self.elements:
            parts = None  # none saved, or another wiring's (a console change): from zero
        zero = {n: [0, 0, 0] for n in NAMES}
        for j in range(self.elements):
            m = self.meters[j]
            m.restore_energy(parts[j] if parts is not None else zero)
            regs = m.registers
            self.last_net[j][0] = regs.import_wh.total_mwh() - regs.export_wh.total_mwh()
            self.last_net[j][1] = regs.import_varh.total_mwh() - regs.export_varh.total_mwh()
        self.registers.restore(state)


class _Tagger:
    """An element's events: tagged with its phase, and with the sample its detector said the
    event started at (an int, "_n": _Final takes it off)."""

    def __init__(self, handler, phase, detector):
        self.handler = handler
        self.phase = phase
        self.detector = detector

    def __call__(self, record):
        if self.phase is not None:
            record["phase"] = self.phase
        record["_n"] = self.detector.said_start
        self.handler(record)


class _Final:
    def __init__(self, poly, handler):
        self.poly = poly
        self.handler = handler

    def __call__(self, record):
        self.poly.said_start = record.pop("_n", self.poly.said_start)
        if self.handler is not None:
            self.handler(record)
