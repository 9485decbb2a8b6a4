# Billing on the meter (docs/billing.md): the tariff the utility set (kept on flash), the
# time-of-use registers (tou.py), and billing freezes: a snapshot of every register with its
# time, taken at the tariff's scheduled freeze times or when the utility asks (op `freeze`).
# Imported only when a tariff is kept or a `tariff`/`freeze` op arrives (App.billing_on).
#
# Power loss: the per-rate registers, the last scheduled freeze taken and a snapshot not yet
# in the outbox are saved in the energy record, with the totals (energy.Registers.extra). A
# freeze saves that record before it offers the snapshot; a start offers again a snapshot
# saved as pending, and the head-end keeps one snapshot per id.

import json

import store
from clock import stamp
from energy import NAMES
from tou import Tariff, Tou

# snapshot keys of the total registers: exact ints, mWh and mvarh
TOTAL_KEYS = ("import_mwh", "export_mwh", "import_mvarh", "export_mvarh")


class Billing:
    def __init__(self, app, path):
        self.app = app
        self.path = path
        self.done = 0          # Unix s of the last scheduled freeze taken
        self.pending = None    # a snapshot saved but maybe not yet in the outbox
        self.damaged = False
        tariff = None
        try:
            data = store.read_record(path)
            if data is not None:
                tariff = Tariff(json.loads(data))
        except (ValueError, OSError):   # a damaged record: no tariff, reported
            self.damaged = True
        self.tou = Tou(tariff)
        regs = app.meter.registers
        regs.extra = self
        saved = app.energy_store.saved
        self.restore(saved.get("tou") if isinstance(saved, dict) else None, regs)
        if self.damaged:
            app.outbox.offer("notice", {"what": "tariff record damaged", "count": 1})
        if self.pending is not None:
            self._offer()

    # --- kept in the energy record (energy.Registers.extra) ---
    def state(self):
        out = self.tou.state()
        out["done"] = self.done
        out["pending"] = self.pending
        return out

    def restore(self, state, regs):
        self.tou.restore(state, regs)
        if isinstance(state, dict):    # reset_energy passes none: the freezes taken stay
            done = state.get("done")
            self.done = done if isinstance(done, int) else 0
            pending = state.get("pending")
            self.pending = pending if isinstance(pending, dict) else None

    # --- on every reading (after the App has folded the registers) ---
    def check(self, reading):
        t = reading["t"]
        self.tou.step(t, self.app.meter.registers)
        tariff = self.tou.tariff
        if tariff is None:
            return []
        reading["rate"] = tariff.rates[self.tou.rate]
        due = tariff.freeze_due(self.done, t)
        if due is None:
            return []
        self.done = due
        self.freeze(t * 1000 + reading.get("t_ms", 0), "schedule", due)
        return []       # the snapshot is in the outbox already

    def freeze(self, t_ms, cause, at=None):
        """Snapshot every register now; saved, then offered. Returns the snapshot."""
        app = self.app
        app.meter.fold_energy()
        regs = app.meter.registers
        self.tou.step(t_ms // 1000, regs)
        snap = {"id": "%d.%03d" % (t_ms // 1000, t_ms % 1000), "cause": cause}
        stamp(snap, "t", t_ms)
        if at is not None:
            snap["at"] = at
        for key, name in zip(TOTAL_KEYS, NAMES):
            snap[key] = getattr(regs, name).total_mwh()
        tariff = self.tou.tariff
        if tariff is not None:
            snap["tariff"] = tariff.id
            snap["rates"] = tariff.rates
            per_rate = self.tou.mwh()
            snap["rate_import_mwh"] = per_rate["import_mwh"]
            snap["rate_export_mwh"] = per_rate["export_mwh"]
        self.pending = snap
        app.save_energy(flush=False)
        self._offer()
        return snap

    def _offer(self):
        app = self.app
        if app.outbox.offer("billing", self.pending) is not None:
            self.pending = None         # the next energy save forgets it
        if app.comms is not None:
            app.comms.kick()

    # --- ops ---
    def set_tariff(self, args):
        """A new tariff (ValueError says why not). The same id and rates carry the per-rate
        registers over (a renewed horizon); another tariff freezes them first, then starts
        its registers at zero."""
        new = Tariff(args)
        app = self.app
        now_ms = app.clock.now_ms()
        app.meter.fold_energy()
        regs = app.meter.registers
        self.tou.step(now_ms // 1000, regs)
        old = self.tou.tariff
        if old is not None and old.id == new.id and old.rates == new.rates:
            self.tou.tariff = new
            self.tou.rate = None
        else:
            if old is not None:
                self.freeze(now_ms, "tariff")
            self.tou = Tou(new)
            self.tou.restore(None, regs)
        # freezes already past are not taken (the head-end sends only future ones)
        self.done = max(self.done, now_ms // 1000)
        store.write_record(self.path, json.dumps(new.as_args()).encode())
        app.save_energy(flush=False)
        return {"tariff": new.id, "rates": new.rates, "switches": len(new.switches),
                "freezes": len(new.freezes), "until": new.t0 + new.end}

    def status(self):
        """The per-rate registers (mWh, exact) and the rate now, for `read`."""
        tariff = self.tou.tariff
        if tariff is None:
            return {"tariff": None}
        out = {"tariff": tariff.id, "rates": tariff.rates, "until": tariff.t0 + tariff.end,
               "rate": tariff.rates[self.tou.rate] if self.tou.rate is not None else None}
        out.update(self.tou.mwh())
        return out
