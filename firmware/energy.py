# Exact energy registers: integer counters with a carried remainder, never float += delta.
#
# A register holds kWh (int), mWh within the kWh (0..999_999) and a raw remainder in the
# metering kernel's units (< units_per_mwh). Adding per-cycle raw energy uses small ints
# only; 10 years at 100 kW is 8.8e6 kWh, far below 2**30.

MWH_PER_KWH = 1000000
MAX_UNITS_PER_MWH = 1 << 28


class Register:
    def __init__(self, units_per_mwh=1):
        if not 1 <= units_per_mwh <= MAX_UNITS_PER_MWH:
            raise ValueError("units_per_mwh out of range: %r" % (units_per_mwh,))
        self.units_per_mwh = units_per_mwh
        self.kwh = 0
        self.mwh = 0
        self.rem = 0

    def add_units(self, units):
        """Add raw units (an int >= 0). Per-cycle amounts keep every intermediate below 2**30."""
        r = self.rem + units
        u = self.units_per_mwh
        if r >= u:
            q = r // u
            r -= q * u
            self.add_mwh(q)
        self.rem = r

    def add_mwh(self, mwh):
        m = self.mwh + mwh
        if m >= MWH_PER_KWH:
            k = m // MWH_PER_KWH
            m -= k * MWH_PER_KWH
            self.kwh += k
        self.mwh = m

    def total_mwh(self):
        return self.kwh * MWH_PER_KWH + self.mwh

    def wh(self):
        return round(self.kwh * 1000.0 + self.mwh / 1000.0, 3)

    def state(self):
        return [self.kwh, self.mwh, self.rem]

    def restore(self, state):
        kwh, mwh, rem = state
        for x in state:
            if not isinstance(x, int) or x < 0:
                raise ValueError("register state must be non-negative ints: %r" % (state,))
        if mwh >= MWH_PER_KWH:
            raise ValueError("register state out of range: %r" % (state,))
        # A calibration change alters the units; a remainder that no longer fits is under
        # one mWh and is dropped rather than refusing the register.
        self.kwh, self.mwh, self.rem = kwh, mwh, rem if rem < self.units_per_mwh else 0


NAMES = ("import_wh", "export_wh", "import_varh", "export_varh")


class Registers:
    """The four registers. Active energy is added per half cycle in kernel units;
    reactive energy per reading in mvarh with a carried fraction."""

    def __init__(self, units_per_mwh):
        self.import_wh = Register(units_per_mwh)
        self.export_wh = Register(units_per_mwh)
        self.import_varh = Register(1)
        self.export_varh = Register(1)
        self.varh_carry = 0.0  # fraction of one mvarh, always in (-1, 1)
        # billing.Billing when a tariff or a freeze is in use: its per-rate registers are
        # saved in the same record as these, so a power cut never splits them from the totals
        self.extra = None
        # a polyphase meter's totals: each element's (phase's, circuit's) Registers, saved
        # in the same record under "elements" (polyphase.py restores them)
        self.parts = None

    def add_active(self, units):
        if units >= 0:
            self.import_wh.add_units(units)
        else:
            self.export_wh.add_units(-units)

    def add_reactive_mvarh(self, mvarh):
        x = mvarh + self.varh_carry
        whole = int(x)
        self.varh_carry = x - whole
        if whole > 0:
            self.import_varh.add_mwh(whole)
        elif whole < 0:
            self.export_varh.add_mwh(-whole)

    def all(self):
        return [getattr(self, n) for n in NAMES]

    def state(self):
        out = {n: getattr(self, n).state() for n in NAMES}
        if self.extra is not None:
            out["tou"] = self.extra.state()
        if self.parts is not None:
            out["elements"] = [p.state() for p in self.parts]
        return out

    def restore(self, state):
        for n in NAMES:
            getattr(self, n).restore(state[n])
        if self.extra is not None:
            self.extra.restore(state.get("tou"), self)

    def as_wh(self):
        return {n: getattr(self, n).wh() for n in NAMES}


class RegisterStore:
    """Persists Registers with write-then-rename into two alternating slots, and keeps the
    state last saved (or loaded): what the meter reports as its registers (see report())."""

    def __init__(self, path):
        self.path = path
        self.gen = 0
        self.damaged = 0
        self.saved = None   # {name: [kwh, mwh, rem]} on flash; None: nothing yet (all zero)

    def load(self):
        """The newest intact state (a dict for Registers.restore), or None."""
        import json

        import store

        gen, payload, self.damaged = store.read_latest_generation(self.path)
        if gen is None:
            return None
        self.gen = gen
        self.saved = json.loads(payload)
        return self.saved

    def save(self, registers):
        import json

        import store

        state = registers.state()
        self.gen += 1
        store.write_generation(self.path, self.gen, json.dumps(state).encode())
        self.saved = state

    def report(self, registers):
        """(registers, unsaved): the saved registers in Wh, which a restart after any stop
        (kill -9, power cut) recovers, so a value reported never goes backwards; and the
        energy metered since that save, Wh, reported apart (docs/reliability.md)."""
        out, unsaved = {}, {}
        for n in NAMES:
            kwh, mwh = self.saved[n][:2] if self.saved is not None else (0, 0)
            live = getattr(registers, n)
            out[n] = round(kwh * 1000.0 + mwh / 1000.0, 3)
            unsaved[n] = ((live.kwh - kwh) * MWH_PER_KWH + live.mwh - mwh) / 1000.0
        return out, unsaved


# When to save the registers (docs/reliability.md, "Energy of short lives"). Without a
# brown-out warning, what a power cut loses is what is unsaved at that moment; these bound it
# per life while capping flash writes at one per MIN_GAP_S.
SAVE_WH = 5       # save once this much active energy is unsaved...
MIN_GAP_S = 5     # ...but never sooner than this after the boot (the life's first save)...
LOAD_GAP_S = 20   # ...or, once the life has run persist_s, than this after the previous save:
                  # the flash-life budget under load (4,320 saves a day at most, about as
                  # many as minutes a day of short lives keep, docs/reliability.md)


class SavePolicy:
    """due(t) says whether to save at metering time t (seconds since boot): every persist_s
    since the last save, as before, and sooner if this life has not saved yet (once
    MIN_GAP_S has passed) or SAVE_WH of active energy is unsaved (once MIN_GAP_S has passed
    early in a life, which keeps short lives' energy, and LOAD_GAP_S once the life has run
    persist_s). The caller saves when it is True."""

    def __init__(self, persist_s, meter):
        self.persist_s = persist_s
        self.meter = meter
        self.gap = min(MIN_GAP_S, persist_s)
        self.load_gap = min(LOAD_GAP_S, persist_s)
        self.last = 0
        self.saved = False
        self.base = [0, 0, 0, 0]   # import kWh, mWh, export kWh, mWh at the last save
        self._mark()
        self.writes = 0            # saves this policy asked for (flash writes)

    def _mark(self):
        self.meter.fold_energy()
        regs = self.meter.registers
        b = self.base
        b[0], b[1] = regs.import_wh.kwh, regs.import_wh.mwh
        b[2], b[3] = regs.export_wh.kwh, regs.export_wh.mwh

    def unsaved_mwh(self):
        """Active energy metered since the last save (small ints: the kWh differ little)."""
        self.meter.fold_energy()
        regs, b = self.meter.registers, self.base
        return ((regs.import_wh.kwh - b[0]) * MWH_PER_KWH + regs.import_wh.mwh - b[1] +
                (regs.export_wh.kwh - b[2]) * MWH_PER_KWH + regs.export_wh.mwh - b[3])

    def due(self, t):
        since = t - self.last
        if since < self.gap:
            return False
        if since < self.persist_s:
            unsaved = self.unsaved_mwh()      # below 0: the registers were reset
            if unsaved == 0 or (self.saved and (0 < unsaved < SAVE_WH * 1000 or (
                    unsaved > 0 and since < self.load_gap and t > self.persist_s))):
                return False
        self.last = t
        self.saved = True
        self.writes += 1
        self._mark()
        return True
