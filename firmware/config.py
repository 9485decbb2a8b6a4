# Metering configuration: defaults, validation with clear reasons, atomic persistence.

import json

import store

# Who may change a key (the trust boundary, docs/security.md):
CONSOLE = "console"     # only at the serial console (bc.set) or by make deploy: identity,
                        # transport and its credentials, CA, release key, watchdog. A head-end
                        # (or an operator token) that could change these could re-home or brick
                        # the meter for good, since it only ever calls out.
UTILITY = "utility"     # over the back channel with a utility token: what a bill depends on
OPERATOR = "operator"   # over the back channel with an operator token too: operational

# One row per key: name, default, type, low, high (length for text), who may change it.
KEYS = (
    ("nominal_v", 230.0, float, 50.0, 500.0, UTILITY),      # declared voltage (V rms)
    ("frequency", 50, int, 50, 60, UTILITY),                # nominal frequency: 50 or 60 Hz
    ("interval_s", 1.0, float, 0.2, 60.0, OPERATOR),        # reading interval (s)
    ("dip_pct", 90.0, float, 50.0, 99.0, OPERATOR),         # of declared voltage
    ("swell_pct", 110.0, float, 101.0, 150.0, OPERATOR),
    ("interruption_pct", 10.0, float, 1.0, 49.0, OPERATOR),
    ("hysteresis_pct", 2.0, float, 0.0, 10.0, OPERATOR),
    ("persist_s", 60, int, 5, 3600, UTILITY),               # energy register persist interval
    ("demand_block_s", 900, int, 60, 3600, UTILITY),        # block demand period (s)
    ("harmonic_order", 0, int, 0, 50, OPERATOR),            # THD to this order; 0: the highest
                                                            # the sampling supports, 1: none
    ("harmonic_spectrum", False, bool, False, True, OPERATOR),  # readings carry hv, hi per order
    ("harmonic_groups", False, bool, False, True, OPERATOR),  # IEC 61000-4-7 groups, subgroups
    ("phase_cal_deg", 0.0, float, -20.0, 20.0, UTILITY),    # sensor phase error (+ = I lags)
    ("v_cal", 1.0, float, 0.5, 2.0, UTILITY),               # gain trims on the board's gains
    ("i_cal", 1.0, float, 0.5, 2.0, UTILITY),
    ("report_s", 10, int, 1, 3600, OPERATOR),               # a reading to the head-end every
    ("rated_a", 0.0, float, 0.0, 10000.0, OPERATOR),        # loading alarms (alarms.py); 0: off
    ("demand_alarm_w", 0.0, float, 0.0, 1e7, OPERATOR),     # block demand alarm; 0: off
    ("f_alarm_pct", 0.0, float, 0.0, 10.0, OPERATOR),       # frequency band alarm; 0: off
    ("alarm_delay_s", 10, int, 0, 3600, OPERATOR),          # a condition holds this long first
    ("alarm_hysteresis_pct", 2.0, float, 0.0, 20.0, OPERATOR),  # back past the threshold by
    ("shed_on_alarm", "", str, 0, 64, UTILITY),             # alarm kinds that shed, e.g. load_95
    ("shed_demand_w", 0.0, float, 0.0, 1e7, UTILITY),       # shed at this block demand; 0: off
    ("shed_price", 0.0, float, 0.0, 1e6, UTILITY),          # shed at this price signal; 0: off
    ("shed_on_rate", "", str, 0, 64, UTILITY),              # tariff rates that shed, e.g. peak
    ("shed_min_off_s", 300, int, 0, 86400, UTILITY),        # a shed load stays off this long
    ("shed_min_on_s", 300, int, 0, 86400, UTILITY),         # and on this long before shedding
    ("shed_restore_window_s", 120, int, 0, 3600, UTILITY),  # restore after a random delay
    ("pulse_pins", "", str, 0, 32, CONSOLE),                # pulse input GPIOs: "4,5" (wiring)
    ("pulse_mwh", 1000, int, 1, 10000000, UTILITY),         # energy a pulse stands for (mWh)
    ("pulse_debounce_ms", 20, int, 1, 1000, UTILITY),       # an input still this long first
    ("pulse_report_s", 900, int, 10, 86400, OPERATOR),      # pulses item to the head-end every
    ("pulse_only", False, bool, False, True, CONSOLE),      # a transport box: no CT or PT
    ("wiring", "1p2w", str, 4, 5, CONSOLE),                 # 1p2w, 3p4w, 3p3w, 1vnct: polyphase.py
    ("circuits", 1, int, 1, 8, CONSOLE),                    # current channels of 1vnct
    ("neutral_ct", False, bool, False, True, CONSOLE),      # 3p4w: a CT on the neutral too
    ("capture", False, bool, False, True, OPERATOR),        # waveform capture on PQ events
    ("capture_pre_cycles", 4, int, 0, 50, OPERATOR),        # cycles kept before the trigger
    ("capture_post_cycles", 8, int, 0, 100, OPERATOR),      # and after it
    ("device_id", "", str, 0, 64, CONSOLE),
    ("device_key", "", str, 0, 128, CONSOLE),               # hex HMAC key (secret)
    ("server_url", "", str, 0, 200, CONSOLE),               # e.g. https://headend.example:8443
    ("ca_file", "", str, 0, 200, CONSOLE),                  # the head-end's CA, pinned
    ("poll_wait_s", 25, int, 0, 25, OPERATOR),              # long-poll wait offered
    ("transport", "http", str, 1, 8, CONSOLE),              # http, mqtt, email or xmpp
    ("encoding", "json", str, 1, 8, CONSOLE),               # json, xml, soap or wbxml (HTTP)
    ("mqtt_host", "", str, 0, 100, CONSOLE),                # broker, or nodes "a,b:1884,c"
    ("mqtt_port", 0, int, 0, 65535, CONSOLE),               # 0: 1883, or 8883 with mqtt_tls
    ("mqtt_tls", True, bool, False, True, CONSOLE),         # TLS to the broker, CA from ca_file
    ("ntp_host", "", str, 0, 100, CONSOLE),                 # host[:port]: board RTC from NTP
    ("proxy_url", "", str, 0, 200, CONSOLE),                # http://[user:pass@]host:port
    ("mqtt_keepalive", 60, int, 10, 1200, OPERATOR),        # s; the meter pings at half of it
    ("ha_discovery", False, bool, False, True, OPERATOR),   # Home Assistant discovery configs
    # transport "email" (docs/email.md): SMTPS to send, IMAPS (IDLE) or POP3S to collect
    ("mail_host", "", str, 0, 100, CONSOLE),                # the mail server (direct TLS only)
    ("mail_user", "", str, 0, 100, CONSOLE),                # the meter's address and login
    ("mail_password", "", str, 0, 128, CONSOLE),            # its mailbox password (secret)
    ("mail_to", "", str, 0, 100, CONSOLE),                  # the head-end's address
    ("mail_pickup", "imap", str, 4, 4, CONSOLE),            # imap (IDLE) or pop3 (polling)
    ("mail_smtp_port", 465, int, 1, 65535, CONSOLE),        # SMTPS
    ("mail_imap_port", 993, int, 1, 65535, CONSOLE),        # IMAPS
    ("mail_pop3_port", 995, int, 1, 65535, CONSOLE),        # POP3S
    ("mail_poll_s", 60, int, 15, 3600, OPERATOR),           # POP3 polling (pop3_client.MIN_POLL_S)
    ("mail_send_s", 60, int, 5, 3600, OPERATOR),            # readings go at most this often
    ("xmpp_host", "", str, 0, 100, CONSOLE),                # the IM server (docs/xmpp.md)
    ("xmpp_port", 5223, int, 1, 65535, CONSOLE),            # its Direct TLS port (XEP-0368)
    ("xmpp_domain", "", str, 0, 100, CONSOLE),              # the account: device_id@xmpp_domain
    ("xmpp_component", "", str, 0, 100, CONSOLE),           # the head-end's component
    ("xmpp_scram", "", str, 0, 200, CONSOLE),               # keys from xmpp-account --meter
    ("wdt_s", 60, int, 0, 3600, CONSOLE),                   # watchdog (rp2 caps 8.3 s); 0: off
    ("update_key", "", str, 0, 130, CONSOLE),               # release public key (docs/ota.md)
    ("update_probation_s", 300, int, 30, 3600, UTILITY),    # new firmware must exchange within
)

DEFAULTS = {row[0]: row[1] for row in KEYS}
RULES = {row[0]: (row[2], row[3], row[4]) for row in KEYS}    # name: (type, low, high)
WHO = {row[0]: row[5] for row in KEYS}
CONSOLE_ONLY = tuple(row[0] for row in KEYS if row[5] == CONSOLE)
SECRETS = ("device_key", "mail_password", "proxy_url", "xmpp_scram")   # a proxy URL: a password
ENCODINGS = ("json", "xml", "soap", "wbxml")    # the exchange's encodings (comms.codec)
TRANSPORTS = ("http", "mqtt", "email", "xmpp")


def refusal(name, role):
    """Why `role` may not change `name` over the back channel, or None if it may."""
    who = WHO.get(name)
    if who == CONSOLE:
        return "%s can only be set at the serial console (bc.set)" % (name,)
    if who == UTILITY and role != "utility":
        return "%s needs a utility token (it changes what the meter bills)" % (name,)
    return None


class ConfigError(ValueError):
    pass


def check(name, value):
    """The value converted to its type, or ConfigError saying why not."""
    if name not in RULES:
        raise ConfigError("unknown setting %r" % (name,))
    kind, low, high = RULES[name]
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
    if name == "transport" and value not in TRANSPORTS:
        raise ConfigError("transport must be one of %s, got %r" % (", ".join(TRANSPORTS), value))
    if name == "wiring" and value not in ("1p2w", "3p4w", "3p3w", "1vnct"):
        raise ConfigError("wiring must be 1p2w, 3p4w, 3p3w or 1vnct, got %r" % (value,))
    if name == "mail_pickup" and value not in ("imap", "pop3"):
        raise ConfigError("mail_pickup must be imap or pop3, got %r" % (value,))
    if name in ("mail_user", "mail_to") and value and not _address(value):
        raise ConfigError("%s must be a plain address (name@domain)" % (name,))
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
    if name == "encoding" and value not in ENCODINGS:
        raise ConfigError("encoding must be one of %s, got %r" % (", ".join(ENCODINGS), value))
    if name == "mqtt_host" and value:
        mqtt_hosts_check(value)
    elif name in ("mail_host", "xmpp_host", "xmpp_domain", "xmpp_component") and value:
        for c in value:
            if not (c.isalpha() or c.isdigit() or c in "-_.:"):
                raise ConfigError("%s must be a host name or an IP address" % (name,))
    if name == "ntp_host" and value:
        for c in value:
            if not (c.isalpha() or c.isdigit() or c in "-_.:"):
                raise ConfigError("ntp_host must be a host name or an IP address, :port optional")
    if name == "proxy_url" and value:
        proxy_check(value)
    if name == "xmpp_scram" and value:
        from xmpp_session import parse_keys  # only a meter given XMPP keys loads it

        try:
            parse_keys(value)
        except ValueError as exc:
            raise ConfigError(str(exc))
    if name == "device_id" and value:
        for c in value:
            if not (c.isalpha() or c.isdigit() or c in "-_."):
                raise ConfigError("device_id may hold letters, digits, - _ and . only")
    return value


def _address(text):
    at = text.find("@")
    if at < 1 or at != text.rfind("@") or at == len(text) - 1:
        return False
    for c in text:
        if not (c.isalpha() or c.isdigit() or c in "-_.+@"):
            return False
    return True


def mqtt_hosts_check(value):
    """mqtt_host: a broker, or a cluster's nodes separated by ',', each host or host:port."""
    for part in value.split(","):
        ok = len(part) > 0
        for c in part:
            if not (c.isalpha() or c.isdigit() or c in "-_.:"):
                ok = False
        if ok and part.count(":") == 1:
            host, port = part.split(":")
            ok = len(host) > 0 and 0 < len(port) < 6 and \
                all(c in "0123456789" for c in port) and 0 < int(port) < 65536
        if not ok:
            raise ConfigError("mqtt_host must be a host name or an IP address, or several "
                              "separated by ',' (a cluster), each with :port optional")


def proxy_check(value):
    """An HTTP CONNECT proxy: http://[user:password@]host:port (firmware/httpc.py)."""
    if not value.startswith("http://"):
        raise ConfigError("proxy_url must be http://[user:password@]host:port")
    hostport = value[7:].rstrip("/").rsplit("@", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in hostport:
        raise ConfigError("proxy_url must be http://[user:password@]host:port")


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
    if _downgrade(cfg["server_url"], "" if base is None else base.get("server_url", "")):
        raise ConfigError("server_url: refusing to move from https to http (meter traffic "
                          "would travel in clear); at the console, clear it first with "
                          "bc.set('server_url', '') if you mean it")
    if cfg["interruption_pct"] + cfg["hysteresis_pct"] >= cfg["dip_pct"]:
        raise ConfigError("interruption_pct + hysteresis_pct must stay below dip_pct")
    if cfg["dip_pct"] + cfg["hysteresis_pct"] > 100.0:
        raise ConfigError("dip_pct + hysteresis_pct must stay at or below 100")
    if cfg["encoding"] != "json" and cfg["transport"] != "http":
        raise ConfigError("encoding %s needs transport http: %s carries JSON"
                          % (cfg["encoding"], cfg["transport"]))
    if cfg["swell_pct"] - cfg["hysteresis_pct"] <= 100.0:
        raise ConfigError("swell_pct - hysteresis_pct must stay above 100")
    _check_pins(cfg["pulse_pins"])
    if cfg["pulse_only"] and not cfg["pulse_pins"]:
        raise ConfigError("pulse_only needs pulse_pins: a transport box counts pulses")
    return cfg


def _check_pins(text):
    pins = [p.strip() for p in text.split(",")] if text else []
    if not all(p.isdigit() for p in pins) or len(set(pins)) != len(pins) or len(pins) > 8:
        raise ConfigError("pulse_pins: up to 8 distinct GPIO numbers, e.g. \"4,5\" (got %r)"
                          % (text,))


def _downgrade(new, old):
    # https -> http, in every class (issue 12): the URL never loses TLS in one step
    return old[:8].lower() == "https://" and new[:7].lower() == "http://"


def load(path, defaults=None):
    """Config from a file, validated; DEFAULTS, with the board's `defaults` over them, where
    the file is silent or absent. The file is a store record (as save() writes it) or plain
    JSON (as a person writes it)."""
    merged = dict(defaults or {})
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return validate(merged)
    if data[:3] == store.MAGIC:
        data = store.decode(data)
    try:
        changes = json.loads(data)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % (path,))
    if not isinstance(changes, dict):
        raise ConfigError("%s must hold an object of name: value" % (path,))
    merged.update(changes)
    return validate(merged)


def save(path, cfg):
    store.write_record(path, json.dumps(validate(cfg)).encode())


def utility_changes(old, new, changes):
    """{name: [old, new]} of the keys a bill depends on (class utility) that `changes` moved:
    the App records them as a notice, with who changed them."""
    moved = {}
    for name in changes:
        if WHO.get(name) == UTILITY and old.get(name) != new[name]:
            moved[name] = [old.get(name), new[name]]
    return moved
