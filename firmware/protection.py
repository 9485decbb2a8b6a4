# What the meter does on its own about what it measures: its alarms (alarms.py) and load
# shedding (shedding.py), checked on every reading in that order (a shedding rule may name
# an alarm). Each is loaded only when the configuration asks for it, and remade when its
# keys change over the back channel, keeping its state (docs/alarms.md).

ALARM_KEYS = ("rated_a", "demand_alarm_w", "f_alarm_pct", "alarm_delay_s", "alarm_hysteresis_pct")
ALARM_SWITCHES = ALARM_KEYS[:3]
SHED_KEYS = ("shed_on_alarm", "shed_demand_w", "shed_price", "shed_min_off_s", "shed_min_on_s",
             "shed_restore_window_s", "shed_on_rate")
SHED_STATE = ("shed", "since", "restore_at", "price", "override", "override_applied")
LIVE_KEYS = ALARM_KEYS + SHED_KEYS      # applied at once, no restart


class Protection:
    def __init__(self, cfg, set_relay):
        self.set_relay = set_relay
        self.alarms = None
        self.shedder = None
        self.configure(cfg, ())

    def configure(self, cfg, changes):
        self.cfg = cfg
        if self.alarms is not None or any(cfg[k] > 0 for k in ALARM_SWITCHES):
            import alarms

            self.alarms = alarms.Alarms(cfg, self.alarms)
        wanted = (cfg["shed_on_alarm"] or cfg["shed_demand_w"] > 0 or cfg["shed_price"] > 0
                  or cfg["shed_on_rate"])
        if self.shedder is not None or wanted or any(k in changes for k in SHED_KEYS):
            self.load_shedder()

    def load_shedder(self):
        """The shedder, made or remade from the config (a price signal or an override needs
        one even without rules); a shed load, a price and an override carry over."""
        import shedding

        old = self.shedder
        self.shedder = shedding.Shedder(self.cfg, self.set_relay)
        if old is not None:
            for name in SHED_STATE:
                setattr(self.shedder, name, getattr(old, name))
        return self.shedder

    def check(self, reading):
        """The `alarm` and `shed` records this reading starts or ends."""
        out = []
        if self.alarms is not None:
            out = self.alarms.check(reading)
        if self.shedder is not None:
            on = self.alarms.active() if self.alarms is not None else ()
            out += self.shedder.check(reading, on)
        return out
