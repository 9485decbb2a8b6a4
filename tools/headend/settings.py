"""Head-end settings: defaults, an optional JSON config file, the token file and the
transform hook loader."""

import importlib
import importlib.util
import json
import os
from dataclasses import dataclass, fields

# operator: reads and sends operational work; utility: also utility-only ops (reset_energy)
# and registers devices; admin: registers devices (and manages tokens), sends as an operator
ROLES = ("operator", "utility", "admin")


@dataclass
class Settings:
    db: str = "backchannel.db"        # a SQLite file, or a postgresql:// URL (docs/scaling.md)
    db_key: str | None = None         # the device-key file (sealed.py): default <db>.key for
                                      #   SQLite; required on PostgreSQL, the same for all
    replay_window: float = 300.0      # seconds either side of the head-end clock
    max_body: int = 256 * 1024        # bytes; larger exchange bodies get 413
    max_wait: float = 25.0            # long-poll cap (seconds)
    default_poll: int = 0             # `next`: 0 = call again at once (continuous long-poll)
    margin_min: float = 10.0          # presence: unavailable after next + max(margin_min,
    margin_factor: float = 0.5        #   next * margin_factor) without contact
    sweep_interval: float = 1.0       # background expiry / presence task period (seconds)
    leader_lease_s: float = 10.0      # PostgreSQL: a sweep leader silent this long is replaced
    # retention of readings (retention.py, docs/scaling.md): raw this many days after they
    # arrive, then 15-minute and daily aggregates; 15-minute rows kept this many days, daily
    # rows for good; 0 raw days: readings are never downsampled
    retention_raw_days: float = 7.0
    retention_15m_days: float = 400.0   # 0: kept for good
    retention_batch: int = 2000       # readings per transaction (one per sweep tick)
    retention_interval_s: float = 300.0   # how often the leader looks once caught up
    peer_expires: int = 600           # expiry of work a meter sends to another meter
    message_expires: int = 3600       # expiry of routed `message` work
    transform: str | None = None      # "module:function" rendezvous hook
    token_file: str | None = None     # JSON file of operator/utility bearer tokens
    releases: str | None = None       # published releases (default: `releases` by the db)
    # MQTT bridge (docs/headend.md "MQTT"): enabled by mqtt_host or mqtt_dir
    mqtt_dir: str | None = None       # a `broker-config` directory: host, port, user, password
    mqtt_host: str | None = None
    mqtt_port: int | None = None      # default 1883, or 8883 with TLS
    mqtt_user: str | None = None      # default "backchannel-headend"
    mqtt_password: str | None = None
    mqtt_password_file: str | None = None
    mqtt_cafile: str | None = None    # TLS to the broker, verified against this CA
    mqtt_tls: bool = False            # TLS with the system's CAs (implied by mqtt_cafile)
    mqtt_client_id: str = "backchannel-headend"
    mqtt_keepalive: int = 30
    mqtt_heartbeat: int = 60          # `next` for an MQTT meter whose poll is 0
    # MQTT over a NATS cluster (docs/scaling.md "A NATS cluster"), instead of mosquitto
    nats_dir: str | None = None       # a `nats-config` directory: servers, user, password
    nats_servers: str | None = None   # nats://host:port,... (default: nats_dir's)
    nats_user: str | None = None      # default "backchannel-headend"
    nats_password_file: str | None = None
    # power and time (policy.py): peers denied unless a rule allows; relay rate per token
    peer_rules: list | None = None    # [{"from": group or "*", "to": ..., "ops": [...]}]
    peer_sends_per_minute: int = 30   # a meter's `send`s that become peer work
    relay_per_minute: int = 6         # an operator token's relay commands
    # quotas (policy.py, ipgate.py): 429 with Retry-After beyond them; 0 turns one off
    max_open_work: int = 1000         # work items a meter has queued or delivered, not run
    max_open_bytes: int = 4 * 1024 * 1024   # their args' bytes
    unauth_per_minute: int = 60       # failed authentications (401) per client address
    xmpp_component: str | None = None  # the head-end's XMPP component (docs/xmpp.md)
    xmpp_secret: str | None = None
    xmpp_host: str = "127.0.0.1"
    xmpp_port: int = 5347
    xmpp_operators: dict | None = None  # {"bare JID": "token name"}: who may chat, as whom
    xmpp_domain: str | None = None  # meters' accounts (id@domain) exchange with the component
    xmpp_probe_s: float = 0         # ping meters on XMPP through their session this often; 0: never
    # the mail gateway (docs/email.md): enabled by mail_address and mail_password
    mail_address: str | None = None   # the head-end's own mailbox (IMAP login, SMTP AUTH)
    mail_password: str | None = None
    mail_host: str = "127.0.0.1"
    mail_imap_port: int = 993         # IMAPS (direct TLS)
    mail_smtp_port: int = 465         # SMTPS submission (direct TLS)
    mail_cafile: str | None = None    # verify the server against this CA (default: system's)
    mail_operators: dict | None = None  # {address: {"token": name, "secret": "sha256:..."}}
    mail_outbox: str | None = None    # the gateway's durable outbox (default: by the db)
    mail_probe_s: float = 0           # probe meters on email by mail this often; 0: never


def load_config(path):
    """Settings fields from a JSON object file; unknown keys are an error."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError("%s: config must be a JSON object" % path)
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError("%s: unknown config keys: %s" % (path, ", ".join(unknown)))
    return data


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise ValueError("%s: %s" % (path, e.strerror or e)) from None
    except ValueError as e:
        raise ValueError("%s: not valid JSON: %s" % (path, e)) from None


def load_transform(spec):
    """The callable named by "package.module:function": an installed module, or a .py file
    of that name in the current directory."""
    module_name, sep, func_name = (spec or "").partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError("transform must be module:function, got %r" % (spec,))
    try:
        module = _import(module_name)
    except ImportError as e:
        raise ValueError("transform module %r: %s" % (module_name, e)) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError("transform %r: no callable %r in %s" % (spec, func_name, module_name))
    return func


def _import(module_name):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        local = os.path.join(os.getcwd(), *module_name.split(".")) + ".py"
        if not os.path.isfile(local):
            raise
    spec = importlib.util.spec_from_file_location(module_name, local)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_token_file(path):
    """[(name, role, token)] from a JSON file: a list of {"name", "role", "token"} objects,
    or {"tokens": [...]}."""
    data = _read_json(path)
    if isinstance(data, dict):
        data = data.get("tokens")
    if not isinstance(data, list):
        raise ValueError("%s: expected a list of {name, role, token}" % path)
    out = []
    for entry in data:
        if not isinstance(entry, dict):
            raise ValueError("%s: each token must be an object" % path)
        name, role, token = entry.get("name"), entry.get("role"), entry.get("token")
        if not (isinstance(name, str) and name and isinstance(token, str) and len(token) >= 16):
            raise ValueError("%s: each token needs a name and a token of 16+ chars" % path)
        if role not in ROLES:
            raise ValueError("%s: token %r: role must be one of %s" % (path, name, ROLES))
        out.append((name, role, token))
    return out
