# Device key rotation, the meter's side (docs/protocol.md "Key rotation"; issue 12).
#
# The head-end's guarded `rotate_key` op carries a rotation id and its ephemeral P-256 public
# key; the meter answers with its own, and both derive the new key from the ECDH secret, so
# whoever holds only the old key, or recorded the whole exchange, cannot learn it. The meter
# keeps both keys until an exchange under the new one succeeds, in one store record:
#   1. rotate_key runs: the new key and our public key are saved before the result is queued;
#      the same rotation run again answers the same public key.
#   2. a bound response says the head-end holds the new key (`rekey`: its rid and a check
#      value of the key): saved as `told`; from then on requests are signed with the new key.
#      A check value that does not match ours ends the rotation here (the old key stays).
#   3. a response signed with the new key: the new key goes to config.json, then the record
#      is removed. A power cut at any step leaves the record saying where it was.

import json
import os
from binascii import hexlify, unhexlify

import envelope
import store

LABEL = b"bc-rekey-2"


def derive(shared_x, device, rid):
    """The new device key from the ECDH secret, bound to this device and this rotation."""
    return envelope.hmac_sha256(shared_x, b"|".join((LABEL, device.encode(), rid.encode())))


def check_value(key):
    """16 hex digits that show the head-end holds `key` without giving any of it away."""
    return hexlify(envelope.hmac_sha256(key, b"bc-rekey-check")).decode()[:16]


def _rid_ok(rid):
    return isinstance(rid, str) and 8 <= len(rid) <= 32 and all(
        c in "0123456789abcdef" for c in rid)


class Rekey:
    def __init__(self, path, device_id, commit=None):
        """commit(new_key_bytes): saves the new key in the config and starts using it."""
        self.path = path
        self.device_id = device_id
        self.commit = commit
        self.pending = None     # {"rid", "key" (hex), "pub" (hex), "told"}
        self.last_error = None
        self.rotations = 0
        try:
            rec = json.loads(store.read_record(path) or b"null")
        except (ValueError, OSError):       # damaged: as if none (the old key still works)
            rec = None
        if (isinstance(rec, dict) and _rid_ok(rec.get("rid"))
                and isinstance(rec.get("key"), str) and isinstance(rec.get("pub"), str)):
            self.pending = rec

    def new_key(self):
        return unhexlify(self.pending["key"]) if self.pending else None

    def settled(self, current):
        """At start: a record whose key the config already holds was committed (a power
        cut before the record went): remove it."""
        if self.pending and self.new_key() == current:
            self._clear()

    def sign_key(self, current):
        """The key requests are signed with: the new one once the head-end holds it."""
        return self.new_key() if self.pending and self.pending.get("told") else current

    def keys(self, current):
        """Every key a message from the head-end may be signed with."""
        return (current, self.new_key()) if self.pending else (current,)

    def start(self, rid, peer_hex):
        """Run `rotate_key`: our public key (hex) for the head-end; ValueError with the
        reason for bad arguments."""
        if not _rid_ok(rid):
            raise ValueError("rid must be 8 to 32 lowercase hex digits")
        if self.pending and self.pending["rid"] == rid:
            return self.pending["pub"]          # the same rotation again: the same answer
        import p256

        peer = p256.public_key_from_hex(peer_hex)
        try:
            seed = os.urandom(32)
        except (AttributeError, NotImplementedError, OSError):
            raise ValueError("this port has no os.urandom: it cannot make a key")
        k = int.from_bytes(seed, "big") % (p256.N - 1) + 1
        key = derive(p256.shared_x(k, peer), self.device_id, rid)
        pub = hexlify(p256.public_of(k)).decode()
        self.pending = {"rid": rid, "key": hexlify(key).decode(), "pub": pub, "told": False}
        self._save()                            # before the result is queued
        return pub

    def answered(self, resp, used, current):
        """A verified, bound response signed with `used`: steps 2 and 3 above."""
        if not self.pending:
            return
        new = self.new_key()
        if used == new and used != current:
            if self.commit is not None:
                self.commit(new)
            self.rotations += 1
            self._clear()
            return
        said = resp.get("rekey")
        if (self.pending.get("told") or not isinstance(said, dict)
                or said.get("rid") != self.pending["rid"]):
            return
        check = said.get("check")
        if isinstance(check, str) and envelope.same(check, check_value(new)):
            self.pending["told"] = True
            self._save()
        else:       # the head-end derived another key: someone else answered its rotation
            self.last_error = "key rotation %s: the head-end's key differs; old key kept" % (
                self.pending["rid"],)
            self._clear()

    def _save(self):
        store.write_record(self.path, json.dumps(self.pending).encode())

    def _clear(self):
        self.pending = None
        try:
            os.remove(self.path)
        except OSError:
            pass
