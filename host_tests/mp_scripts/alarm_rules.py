# firmware/alarms.py on synthetic readings (one a second, wall time in int s + ms), printed
# as JSON lines; host_tests/test_meter_alarms.py checks them on every interpreter.

import json

import config
from alarms import Alarms

T0 = 1796000000     # a 2026 Unix time: int seconds, as the App stamps readings


def run(cfg, series):
    a = Alarms(config.validate(cfg))
    out = []
    for k, (irms, f, demand) in enumerate(series):
        r = {"t": T0 + k, "t_ms": 250, "irms": irms, "f": f, "demand_w": demand}
        out += a.check(r)
    return out, a.active()


def main():
    loading = {"rated_a": 10.0, "alarm_delay_s": 3, "alarm_hysteresis_pct": 2.0}
    # 9.6 A for 6 s (load_80, load_95 after 3 s), 9.4 A (95 ends: below 9.3? no: 9.5-0.2),
    # 9.2 A (95 ends), 1 A (80 ends), 0 A for 5 s (no_load)
    series = ([(9.6, 50.0, None)] * 6 + [(9.4, 50.0, None)] * 2 + [(9.2, 50.0, None)] * 2
              + [(1.0, 50.0, None)] * 2 + [(0.0, 50.0, None)] * 5)
    print(json.dumps(run(loading, series)))
    # a spike shorter than the delay raises nothing
    print(json.dumps(run(loading, [(9.9, 50.0, None)] * 2 + [(5.0, 50.0, None)] * 5)))
    freq = {"f_alarm_pct": 1.0, "alarm_delay_s": 0}
    print(json.dumps(run(freq, [(1, 50.0, None), (1, 50.6, None), (1, 50.45, None),
                                (1, 50.2, None), (1, None, None), (1, 49.4, None),
                                (1, 49.9, None)])))
    demand = {"demand_alarm_w": 5000.0, "alarm_delay_s": 0}
    print(json.dumps(run(demand, [(1, 50, None), (1, 50, 5200.0), (1, 50, 4950.0),
                                  (1, 50, 4800.0)])))
    print(json.dumps(run({}, [(100.0, 60.0, 1e9)] * 3)))    # defaults: no alarm at all


main()
