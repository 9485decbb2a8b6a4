# Metering configuration: defaults, validation with clear reasons, atomic persistence.

import json

import store

DEFAULTS = {
    "nominal_v": 230.0,       # declared voltage (V rms)
    "frequency": 50,          # nominal frequency (Hz): 50 or 60
    "interval_s": 1.0,        # reporting interval (s)
    "dip_pct": 90.0,          # of declared voltage
    "swell_pct": 110.0,
    "interruption_pct": 10.0,
    "hysteresis_pct": 2.0,
    "persist_s": 60,          # energy register persist interval (s)
    "demand_block_s": 900,    # block demand period (s)
    "phase_cal_deg": 0.0,     # sensor phase error to correct (+ = current lags more)
    "v_cal": 1.0,             # gain trims on top of the board's nominal gains
    "i_cal": 1.0,
}

# name: (type, low, high)
_RULES = {
    "nominal_v": (float, 50.0, 500.0),
    "frequency": (int, 50, 60),
    "interval_s": (float, 0.2, 60.0),
    "dip_pct": (float, 50.0, 99.0),
    "swell_pct": (float, 101.0, 150.0),
    "interruption_pct": (float, 1.0, 49.0),
    "hysteresis_pct": (float, 0.0, 10.0),
    "persist_s": (int, 5, 3600),
    "demand_block_s": (int, 60, 3600),
    "phase_cal_deg": (float, -20.0, 20.0),
    "v_cal": (float, 0.5, 2.0),
    "i_cal": (float, 0.5, 2.0),
}


class ConfigError(ValueError):
    pass


def check(name, value):
    """The value converted to its type, or ConfigError saying why not."""
    if name not in _RULES:
        raise ConfigError("unknown setting %r" % (name,))
    kind, low, high = _RULES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("%s must be a number, got %r" % (name, value))
    if kind is int and value != int(value):
        raise ConfigError("%s must be a whole number, got %r" % (name, value))
    value = kind(value)
    if name == "frequency" and value not in (50, 60):
        raise ConfigError("frequency must be 50 or 60, got %r" % (value,))
    if not low <= value <= high:
        raise ConfigError("%s must be between %s and %s, got %r" % (name, low, high, value))
    return value


def validate(changes, base=None):
    """A complete config: base (or DEFAULTS) updated with changes, every value checked."""
    cfg = dict(DEFAULTS if base is None else base)
    if not isinstance(changes, dict):
        raise ConfigError("config must be an object of name: value")
    for name in changes:
        cfg[name] = check(name, changes[name])
    if cfg["interruption_pct"] + cfg["hysteresis_pct"] >= cfg["dip_pct"]:
        raise ConfigError("interruption_pct + hysteresis_pct must stay below dip_pct")
    if cfg["swell_pct"] - cfg["hysteresis_pct"] <= 100.0:
        raise ConfigError("swell_pct - hysteresis_pct must stay above 100")
    return cfg


def load(path):
    """Config from a JSON file, validated; defaults if the file does not exist."""
    data = store.read_record(path)
    if data is None:
        return dict(DEFAULTS)
    return validate(json.loads(data))


def save(path, cfg):
    store.write_record(path, json.dumps(validate(cfg)).encode())
