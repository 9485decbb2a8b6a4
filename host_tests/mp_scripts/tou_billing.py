# firmware/tou.py and firmware/billing.py on a stand-in App (registers fed by hand, a clock
# set by hand, the real energy store on disk), printed as one JSON object;
# host_tests/test_tou_billing.py checks it on every interpreter.
#   tou_billing.py STATE_DIR

import json
import sys

from billing import Billing
from energy import Registers, RegisterStore
from tou import Tariff

T0 = 1796000000     # a Unix time past 2**30: boxed ints on MicroPython, as on a board


def tariff(**over):
    args = {"id": "tou-1", "rates": ["peak", "offpeak"], "t0": T0, "end": 86400,
            "switches": [[0, 1], [7 * 3600, 0], [22 * 3600, 1]], "freezes": [12 * 3600]}
    args.update(over)
    return args


def refusals():
    bad = [
        ("unordered", tariff(switches=[[0, 1], [100, 0], [100, 1]])),
        ("not at 0", tariff(switches=[[5, 1]])),
        ("rate out of range", tariff(switches=[[0, 2]])),
        ("nine rates", tariff(rates=["r%d" % k for k in range(9)])),
        ("rate twice", tariff(rates=["a", "a"])),
        ("offset past end", tariff(switches=[[0, 0], [86400, 1]])),
        ("bool offset", tariff(switches=[[0, 0], [True, 1]])),
        ("float t0", tariff(t0=1796000000.5)),
        ("freeze order", tariff(freezes=[100, 50])),
        ("not an object", [1, 2]),
    ]
    out = {}
    for name, args in bad:
        try:
            Tariff(args)
            out[name] = None
        except ValueError as exc:
            out[name] = str(exc)
    return out


def edges():
    t = Tariff(tariff())
    at = [T0 - 1, T0, T0 + 7 * 3600 - 1, T0 + 7 * 3600, T0 + 7 * 3600 + 1,
          T0 + 22 * 3600 - 1, T0 + 22 * 3600, T0 + 86400 + 5, T0 + 10 ** 9]
    return [t.rate_at(x) for x in at]


class Outbox:
    def __init__(self):
        self.items = []

    def offer(self, kind, body):
        self.items.append([kind, json.loads(json.dumps(body))])
        return len(self.items)


class Clock:
    def __init__(self):
        self.ms = T0 * 1000

    def now_ms(self):
        return self.ms

    def now(self):
        return self.ms // 1000


class Meter:
    def __init__(self):
        self.registers = Registers(1)

    def fold_energy(self):
        pass

    def restore_energy(self, state):
        self.registers.restore(state)


class App:
    """What Billing uses of the App; a new one is a restart after a power cut."""

    def __init__(self, state_dir, clock):
        self.meter = Meter()
        self.energy_store = RegisterStore(state_dir + "/energy")
        saved = self.energy_store.load()
        if saved is not None:
            self.meter.restore_energy(saved)
        self.outbox = Outbox()
        self.clock = clock
        self.comms = None
        self.billing = Billing(self, state_dir + "/tariff")

    def save_energy(self, flush=True):
        self.energy_store.save(self.meter.registers)

    def second(self, import_mwh, export_mwh=0):
        """One second of metering: energy into the totals, then the reading's check."""
        self.clock.ms += 1000
        regs = self.meter.registers
        regs.import_wh.add_mwh(import_mwh)
        regs.export_wh.add_mwh(export_mwh)
        r = {"t": self.clock.now(), "t_ms": 0}
        self.billing.check(r)
        return r.get("rate")


def totals(app):
    regs = app.meter.registers
    return [regs.import_wh.total_mwh(), regs.export_wh.total_mwh()]


def per_rate(app):
    m = app.billing.tou.mwh()
    return [m["import_mwh"], m["export_mwh"]]


def boundary_and_power_loss(state_dir):
    clock = Clock()
    clock.ms = (T0 + 7 * 3600 - 3) * 1000      # 3 s before the switch to peak
    app = App(state_dir, clock)
    out = {"set": app.billing.set_tariff(tariff())}
    rates = [app.second(1000) for _ in range(2)]     # 2 s of 1 Wh each, offpeak
    app.save_energy()                                # the last save before the cut
    rates += [app.second(1000, 7) for _ in range(3)]  # across the switch: lost in the cut
    out["rates_life1"] = rates
    out["life1"] = {"totals": totals(app), "per_rate": per_rate(app)}
    # the power cut: a new App from flash, 2 s later
    clock.ms += 2000
    app = App(state_dir, clock)
    out["restored"] = {"totals": totals(app), "per_rate": per_rate(app),
                       "tariff": app.billing.tou.tariff.id}
    out["rates_life2"] = [app.second(500) for _ in range(4)]
    out["life2"] = {"totals": totals(app), "per_rate": per_rate(app)}
    # a scheduled freeze at 12:00: run up to it in one jump of the clock
    clock.ms = (T0 + 12 * 3600 - 2) * 1000
    app.second(0)
    app.second(250)                                  # the reading at 12:00:00 exactly
    out["scheduled"] = [i for i in app.outbox.items if i[0] == "billing"]
    app.outbox.items = []
    app.second(0)
    out["no_second_freeze"] = [i for i in app.outbox.items if i[0] == "billing"]
    # a freeze on demand, then a power cut before the snapshot reached the outbox
    app.outbox.offer = lambda kind, body: None        # the cut: never written
    snap = app.billing.freeze(clock.now_ms(), "utility")
    app = App(state_dir, clock)
    out["reoffered"] = [i for i in app.outbox.items if i[0] == "billing"]
    out["demand_id"] = snap["id"]
    # a new tariff (other id): the old registers are frozen, the new ones start at zero
    out["changed"] = app.billing.set_tariff(tariff(id="tou-2", rates=["a", "b", "c"],
                                                   switches=[[0, 2]]))
    out["change_freeze"] = [i[1]["cause"] for i in app.outbox.items if i[0] == "billing"]
    app.second(100)
    out["after_change"] = per_rate(app)
    # reset_energy zeroes the totals and the per-rate registers, not the freezes taken
    done = app.billing.done
    app.meter.restore_energy({n: [0, 0, 0] for n in ("import_wh", "export_wh", "import_varh",
                                                     "export_varh")})
    out["after_reset"] = [per_rate(app), app.billing.done == done]
    return out


def main(argv):
    out = {"refusals": refusals(), "edges": edges()}
    out.update(boundary_and_power_loss(argv[0]))
    print(json.dumps(out))


main(sys.argv[1:])
