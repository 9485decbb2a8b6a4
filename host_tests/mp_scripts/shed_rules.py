# firmware/shedding.py on synthetic readings (one a second): what it does to a relay, printed
# as JSON; host_tests/test_load_shedding.py checks it on every interpreter.

import json

import config
from shedding import Shedder

T0 = 1796000000


class Rng:
    """A fixed draw: the restore delay is this share of the window."""
    def randint(self, a, b):
        return a + (b - a) // 2


def run(cfg, steps, actions=()):
    relay = []
    s = Shedder(config.validate(cfg), relay.append, Rng())
    out = []
    for k, (demand, alarms) in enumerate(steps):
        for at, what, args in actions:
            if at == k:
                # ints are seconds after T0 (expiry times); the rest as given
                getattr(s, what)(*[T0 + a if isinstance(a, int) else a for a in args])
        reading = {"t": T0 + k, "demand_w": demand}
        if isinstance(alarms, str):         # a tariff rate, not alarms
            reading["rate"], alarms = alarms, ()
        for rec in s.check(reading, alarms):
            out.append([rec["at_s"] - T0, rec["action"], rec["cause"]])
    return out, relay


def main():
    base = {"shed_demand_w": 5000.0, "shed_min_off_s": 10, "shed_min_on_s": 20,
            "shed_restore_window_s": 30}
    # over 5 kW for 3 s: open at once; cleared at 3: restore after max(min_off, 15 s draw)
    steps = [(6000.0, ())] * 3 + [(1000.0, ())] * 20
    print(json.dumps(run(base, steps)))
    # back over the threshold 5 s after a restore: min_on (20 s) holds the load on
    steps = [(6000.0, ())] + [(1000.0, ())] * 16 + [(6000.0, ())] * 30
    print(json.dumps(run(dict(base, shed_restore_window_s=0), steps)))
    # an alarm kind named in shed_on_alarm; another is ignored
    alarm = dict(base, shed_demand_w=0.0, shed_on_alarm="load_95,no_load",
                 shed_restore_window_s=0, shed_min_off_s=2)
    steps = [(0.0, ("load_80",))] * 2 + [(0.0, ("load_80", "load_95"))] * 2 + [(0.0, ())] * 4
    print(json.dumps(run(alarm, steps)))
    # a price signal at the threshold sheds until it expires; an override wins, then expires
    price = dict(base, shed_demand_w=0.0, shed_price=0.30, shed_restore_window_s=0,
                 shed_min_off_s=0, shed_min_on_s=0)
    steps = [(0.0, ())] * 12
    print(json.dumps(run(price, steps, [(1, "set_price", (0.35, 4)),
                                        (6, "set_override", ("open", 9))])))
    print(json.dumps(run({}, [(1e9, ("load_95",))] * 3)))    # defaults: never sheds
    # a tariff rate named in shed_on_rate sheds while it is in force; another rate does not
    rate = dict(base, shed_demand_w=0.0, shed_on_rate="peak,critical", shed_restore_window_s=0,
                shed_min_off_s=0, shed_min_on_s=0)
    steps = [(0.0, "offpeak")] * 2 + [(0.0, "peak")] * 3 + [(0.0, "shoulder")] * 2
    print(json.dumps(run(rate, steps)))


main()
