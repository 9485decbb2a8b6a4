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
    "report_s": 10,           # send a reading to the head-end every this many seconds
    "device_id": "",
    "device_key": "",         # hex HMAC key shared with the head-end (secret)
    "server_url": "",         # e.g. https://headend.example:8443
    "ca_file": "",            # the head-end's CA, pinned (PEM or DER)
    "poll_wait_s": 25,        # long-poll wait offered to the head-end
    "transport": "http",      # "http" (server_url) or "mqtt" (mqtt_host)
    "mqtt_host": "",          # the MQTT broker (docs/protocol.md, MQTT transport)
    "mqtt_port": 0,           # 0: 1883, or 8883 with mqtt_tls
    "mqtt_tls": False,        # TLS to the broker, its CA pinned from ca_file
    "mqtt_keepalive": 60,     # MQTT keepalive (s); the meter pings at half of it
    "ha_discovery": False,    # publish Home Assistant discovery configs
    "wdt_s": 60,              # hardware watchdog timeout (s; rp2 caps it at 8.3 s); 0: off
    "update_key": "",         # release public key, 130 hex (docs/ota.md); empty: no updates
    "update_probation_s": 300,  # a new firmware must reach a healthy exchange within this
}

SECRETS = ("device_key",)

# Set only at the serial console (bc.set) or by make deploy, never over the back channel:
# a head-end that could change the release key could make the meter run its own code.
CONSOLE_ONLY = ("update_key",)

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
    "report_s": (int, 1, 3600),
    "poll_wait_s": (int, 0, 25),
    "device_id": (str, 0, 64),
    "device_key": (str, 0, 128),
    "server_url": (str, 0, 200),
    "ca_file": (str, 0, 200),
    "transport": (str, 1, 8),
    "mqtt_host": (str, 0, 100),
    "mqtt_port": (int, 0, 65535),
    "mqtt_tls": (bool, False, True),
    "mqtt_keepalive": (int, 10, 1200),
    "ha_discovery": (bool, False, True),
    "wdt_s": (int, 0, 3600),
    "update_key": (str, 0, 130),
    "update_probation_s": (int, 30, 3600),
}


class ConfigError(ValueError):
    pass


def check(name, value):
    """The value converted to its type, or ConfigError saying why not."""
    if name not in _RULES:
        raise ConfigError("unknown setting %r" % (name,))
    kind, low, high = _RULES[name]
    if kind is str:
        return _check_text(name, value, low, high)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError("%s must be true or false, got %r" % (name, value))
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("%s must be a number, got %r" % (name, value))
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError("%s must be a finite number, got %r" % (name, value))
    if kind is int and value != int(value):
        raise ConfigError("%s must be a whole number, got %r" % (name, value))
    try:
        value = kind(value)
    except OverflowError:  # an int too large for a float
        raise ConfigError("%s must be between %s and %s, got a number too large"
                          % (name, low, high))
    if name == "frequency" and value not in (50, 60):
        raise ConfigError("frequency must be 50 or 60, got %r" % (value,))
    if not low <= value <= high:
        raise ConfigError("%s must be between %s and %s, got %r" % (name, low, high, value))
    return value


def _check_text(name, value, low, high):
    if not isinstance(value, str):
        raise ConfigError("%s must be text, got %r" % (name, value))
    if not low <= len(value) <= high:
        raise ConfigError("%s must be %d to %d characters long" % (name, low, high))
    if name == "transport" and value not in ("http", "mqtt"):
        raise ConfigError("transport must be http or mqtt, got %r" % (value,))
    if name == "device_key" and value:
        if len(value) % 2 or len(value) < 32:
            raise ConfigError("device_key must be an even number (>= 32) of hex digits")
        for c in value:
            if c not in "0123456789abcdefABCDEF":
                raise ConfigError("device_key must be hex digits")
    if name == "update_key" and value:
        if len(value) != 130 or value[:2] != "04":
            raise ConfigError("update_key must be 130 hex digits starting 04 (or empty)")
        for c in value:
            if c not in "0123456789abcdefABCDEF":
                raise ConfigError("update_key must be hex digits")
    if name == "server_url" and value and not (value.startswith("http://") or
                                               value.startswith("https://")):
        raise ConfigError("server_url must start with http:// or https://")
    if name == "mqtt_host" and value:
        for c in value:
            if not (c.isalpha() or c.isdigit() or c in "-_.:"):
                raise ConfigError("mqtt_host must be a host name or an IP address")
    if name == "device_id" and value:
        for c in value:
            if not (c.isalpha() or c.isdigit() or c in "-_."):
                raise ConfigError("device_id may hold letters, digits, - _ and . only")
    return value


def public(cfg):
    """The config with secrets masked, for get_config and the REPL."""
    out = dict(cfg)
    for name in SECRETS:
        if out.get(name):
            out[name] = "(set)"
    return out


def validate(changes, base=None):
    """A complete config: base (or DEFAULTS) updated with changes, every value checked."""
    cfg = dict(DEFAULTS if base is None else base)
    if not isinstance(changes, dict):
        raise ConfigError("config must be an object of name: value")
    for name in changes:
        cfg[name] = check(name, changes[name])
    if cfg["interruption_pct"] + cfg["hysteresis_pct"] >= cfg["dip_pct"]:
        raise ConfigError("interruption_pct + hysteresis_pct must stay below dip_pct")
    if cfg["dip_pct"] + cfg["hysteresis_pct"] > 100.0:
        raise ConfigError("dip_pct + hysteresis_pct must stay at or below 100")
    if cfg["swell_pct"] - cfg["hysteresis_pct"] <= 100.0:
        raise ConfigError("swell_pct - hysteresis_pct must stay above 100")
    return cfg


def load(path):
    """Config from a file, validated; defaults if the file does not exist. The file is a
    store record (as save() writes it) or plain JSON (as a person writes it)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return dict(DEFAULTS)
    if data[:3] == store.MAGIC:
        data = store.decode(data)
    try:
        changes = json.loads(data)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % (path,))
    return validate(changes)


def save(path, cfg):
    store.write_record(path, json.dumps(validate(cfg)).encode())
