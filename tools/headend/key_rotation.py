"""Device key rotation, the head-end's side (docs/protocol.md "Key rotation"; issue 12).

A utility starts it (POST /v1/devices/{id}/rotate-key, `backchannel rotate-key`): in one
transaction the head-end makes an ephemeral P-256 key, keeps its private half sealed in
`rekeys`, and queues the `rotate_key` work item with the public half and a rotation id. The
meter's result carries its own public key; both sides derive the new key from the ECDH
secret (firmware/rekey.py), so holding the old key, or a record of the exchange, does not
give it. The head-end then holds both keys and says so in every answer (`rekey`: the rid and
a check value); the first request signed with the new key promotes it and drops the old one.
Every step is one transaction: a crash anywhere loses neither key.

Over MQTT the meter's broker password follows its key (broker.meter_password), and the broker
holds one password per user. So the head-end switches the broker's password file to the new
key's password (broker.rewrite_passwd, under its lock) *before* the transaction that drops the
old key, and answers under the new key only after both: until the meter has an answer under
the new key it holds both keys, and a login refused for one key's password is tried with the
other's (firmware/mqtt_comms.py). A file that cannot be written leaves both keys in place
(logged; tried again on the next request). On a NATS cluster (`serve --nats-dir`) the same
step rewrites the meters' users.conf (nats_config.rewrite_users) and waits until every
running node has reloaded it. A rotation for an MQTT meter therefore needs a head-end that
writes the broker's files (`serve --mqtt-dir`) or the cluster's (`serve --nats-dir`); XMPP
and mail logins are credentials of their own, not derived from the key."""

import hashlib
import hmac
import logging
import os
import time

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import audit, broker, nats_config, workq

log = logging.getLogger("backchannel.rekey")
LOG_EVERY_S = 60        # a switch that keeps failing is logged once a minute per meter
_told = {}

LABEL = b"bc-rekey-2"
ROTATES_OVER = ("http", "mqtt", "xmpp", "email")
EXPIRES_S = 3600
TABLE = """
CREATE TABLE IF NOT EXISTS rekeys (    -- a device key rotation in flight (key_rotation.py)
    device TEXT PRIMARY KEY, rid TEXT NOT NULL,
    secret TEXT NOT NULL,              -- the head-end's ECDH private key, sealed
    work INTEGER NOT NULL,             -- the rotate_key work item's num
    next_key TEXT,                     -- the new key, sealed, once the meter answered
    started REAL NOT NULL
);
"""


class Refused(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status, self.reason = status, reason


def derive(shared_x, device, rid):
    return hmac.new(shared_x, b"|".join((LABEL, device.encode(), rid.encode())),
                    hashlib.sha256).digest()


def check_value(key_hex):
    """What the meter compares with its own new key (firmware/rekey.py check_value)."""
    return hmac.new(bytes.fromhex(key_hex), b"bc-rekey-check", hashlib.sha256).hexdigest()[:16]


def _secret_aad(device):
    return device + "#rekey"            # a sealed secret never opens as a device key


def start(hub, dev, origin, now, expires_in=EXPIRES_S):
    """Queue a rotation for the device row `dev`; returns the work id. Refused (409) while
    one is in flight, before the meter's first exchange, and for an MQTT meter when this
    head-end writes no broker's or cluster's passwords (its password follows the key)."""
    device = dev["id"]
    if dev["transport"] is None:
        raise Refused(409, "%s has not exchanged yet: a key rotation needs its answer; "
                           "set its first key at the console" % device)
    if dev["transport"] not in ROTATES_OVER:
        raise Refused(409, "key rotation runs over %s (%s last exchanged over %s): "
                           "rotate its key at the console"
                      % (", ".join(ROTATES_OVER), device, dev["transport"]))
    if dev["transport"] == "mqtt" and login_files(hub.settings) is None:
        raise Refused(409, "%s talks MQTT, whose broker password follows its key, and this "
                           "head-end writes neither the broker's password file (serve "
                           "--mqtt-dir) nor a NATS cluster's users (serve --nats-dir): "
                           "rotate its key at the console" % device)
    db = hub.db
    row = db.one("SELECT * FROM rekeys WHERE device = ?", device)
    if row is not None:
        work = db.one("SELECT status FROM work WHERE num = ?", row["work"])
        if row["next_key"] or (work is not None and work["status"] in ("queued", "delivered")):
            raise Refused(409, "a key rotation for %s is in flight (%s): it ends when the "
                               "meter exchanges under the new key" % (device,
                                                                      workq.wid(row["work"])))
        db.run("DELETE FROM rekeys WHERE device = ?", device)   # ended without an answer
    priv = ec.generate_private_key(ec.SECP256R1())
    secret = priv.private_numbers().private_value.to_bytes(32, "big").hex()
    pub = priv.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint).hex()
    rid = os.urandom(8).hex()
    wid = workq.enqueue(hub, device, "rotate_key", {"rid": rid, "pub": pub}, "utility",
                        origin, int(now) + expires_in)
    db.run("INSERT INTO rekeys(device, rid, secret, work, started) VALUES (?, ?, ?, ?, ?)",
           device, rid, db.sealer.seal(_secret_aad(device), secret), workq.num_of(wid), now)
    return wid


def on_result(db, device, row, status, body, now):
    """The meter's result for a rotate_key item (its outcome was just settled): derive and
    keep the new key beside the old, or end the rotation."""
    rk = db.one("SELECT * FROM rekeys WHERE device = ? AND work = ?", device, row["num"])
    if rk is None or rk["next_key"]:
        return
    pub = body.get("pub") if isinstance(body, dict) else None
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(pub))
        secret = db.sealer.open(_secret_aad(device), rk["secret"])
        priv = ec.derive_private_key(int(secret, 16), ec.SECP256R1())
        new = derive(priv.exchange(ec.ECDH(), peer), device, rk["rid"]).hex()
    except (TypeError, ValueError):
        status = "rejected"
    if status != "done":
        db.run("DELETE FROM rekeys WHERE device = ?", device)
        audit.record(db, "meter:" + device, "meter", "rotate_key", "device:" + device,
                     "ended: " + status, None, now)
        return
    db.run("UPDATE rekeys SET next_key = ? WHERE device = ?", db.sealer.seal(device, new),
           device)


def next_key(db, device):
    """The new key of a rotation the meter has answered, or None."""
    rk = db.one("SELECT next_key FROM rekeys WHERE device = ?", device)
    return db.sealer.open(device, rk["next_key"]) if rk and rk["next_key"] else None


def directive(db, device, rk=None):
    """`rekey` for an answer while the head-end holds both keys, else None. `rk`: the
    device's rekeys row (rid, next_key) if the caller read it already (a LEFT JOIN: both
    None when there is none)."""
    if rk is None:
        rk = db.one("SELECT rid, next_key FROM rekeys WHERE device = ?", device)
    if rk is None or not rk["next_key"]:
        return None
    return {"rid": rk["rid"], "check": check_value(db.sealer.open(device, rk["next_key"]))}


def login_files(settings):
    """(directory, lock, rewrite) for the MQTT logins this head-end writes: mosquitto's
    password file (serve --mqtt-dir) or a NATS cluster's users.conf (serve --nats-dir);
    None when it writes neither."""
    if settings.mqtt_dir:
        return settings.mqtt_dir, broker.passwd_lock, broker.rewrite_passwd
    if getattr(settings, "nats_dir", None):
        return settings.nats_dir, nats_config.users_lock, nats_config.rewrite_users
    return None


def promote(hub, device, key_hex, old_hex):
    """A request signed with the new key: it becomes the device's key; the old one stops.
    Returns the key to answer with: the new one, or the old one (both kept) when the
    broker's password file, or the NATS nodes' users, could not be switched to the new key
    first."""
    files = login_files(hub.settings)
    if files is None:
        return _promote(hub, device) or key_hex
    directory, lock, rewrite = files
    try:
        with lock(directory):
            rewrite(hub.db, directory, {device: key_hex})
            _promote(hub, device)
    except (OSError, ValueError, broker.BrokerError, nats_config.ReloadError) as e:
        if time.monotonic() - _told.get(device, -LOG_EVERY_S) >= LOG_EVERY_S:
            _told[device] = time.monotonic()
            log.error("key rotation of %s waits: the MQTT logins in %s: %s (both keys kept; "
                      "tried again on its next request)", device, directory, e)
        return old_hex if old_hex else key_hex
    return key_hex


def _promote(hub, device):
    with hub.tx() as db:
        rk = db.one("SELECT rid, next_key FROM rekeys WHERE device = ?", device)
        if rk is None or not rk["next_key"]:
            return
        db.run("UPDATE devices SET key = ? WHERE id = ?", rk["next_key"], device)
        db.run("DELETE FROM rekeys WHERE device = ?", device)
        audit.record(db, "meter:" + device, "meter", "rotate_key", "device:" + device,
                     "ok", {"rid": rk["rid"]}, hub.now())
