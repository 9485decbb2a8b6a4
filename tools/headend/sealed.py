"""Device keys sealed at rest: the `devices.key` column holds `enc1:` + hex(nonce +
AES-256-GCM(key, associated data: the device id)), under a 256-bit key kept outside the
database, in a 0600 file next to it (`<db>.key`). A copy of the database (a backup, a
snapshot, another local user) carries no device key; a sealed key moved to another device's
row does not open. Losing the key file loses every device key: back it up apart from the
database.

An older database's plain keys are sealed when it is opened, then the file is vacuumed and
its WAL truncated so the plain text leaves the disk (PostgreSQL: VACUUM FULL of `devices`).
On PostgreSQL the key file is named by the `db_key` setting: every head-end process on the
database needs the same one."""

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import exposure

PREFIX = "enc1:"


class MissingKeyFile(ValueError):
    pass


class Sealer:
    def __init__(self, key_path=None):
        """key_path None: a key for this process only (an in-memory database)."""
        self.path = key_path
        self.aead = AESGCM(self._load_or_create() if key_path else os.urandom(32))
        self._opened = {}          # (device, sealed text) -> key: one AES-GCM per key

    def _load_or_create(self):
        try:
            with open(self.path) as f:
                key = bytes.fromhex(f.read().strip())
        except FileNotFoundError:
            key = os.urandom(32)
            exposure.create_private(self.path)
            with open(self.path, "w") as f:
                f.write(key.hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            return key
        except ValueError:
            raise ValueError("%s: not a device-key file (64 hex digits)" % self.path) from None
        if len(key) != 32:
            raise ValueError("%s: not a device-key file (64 hex digits)" % self.path)
        exposure.narrow(self.path)
        return key

    def seal(self, device, key_hex):
        nonce = os.urandom(12)
        return PREFIX + (nonce + self.aead.encrypt(nonce, key_hex.encode(),
                                                   device.encode())).hex()

    def open(self, device, stored):
        """The device's hex key, or None when it does not open (another key file, a sealed
        key copied from another device's row). A plain key (not yet sealed) as it is."""
        if not stored.startswith(PREFIX):
            return stored
        found = self._opened.get((device, stored))
        if found is None:
            try:
                raw = bytes.fromhex(stored[len(PREFIX):])
                found = self.aead.decrypt(raw[:12], raw[12:], device.encode()).decode()
            except (ValueError, InvalidTag):
                return None
            if len(self._opened) > 100000:
                self._opened.clear()
            self._opened[(device, stored)] = found
        return found


def attach(db, key_path):
    """The database's sealer, its plain keys sealed (the store then rewritten without them).
    key_path None: a key for this process only. MissingKeyFile when keys are sealed and the
    key file is not there."""
    if key_path and not os.path.exists(key_path) and db.one(
            "SELECT 1 FROM devices WHERE key LIKE 'enc1:%' LIMIT 1"):
        raise MissingKeyFile("the device keys in %s are sealed with %s, which is missing "
                             "(restore it from its backup)" % (db.name, key_path))
    sealer = Sealer(key_path)
    plain = db.all("SELECT id, key FROM devices WHERE key NOT LIKE 'enc1:%'")
    if plain:
        with db.tx():
            db.many("UPDATE devices SET key = ? WHERE id = ?",
                    [(sealer.seal(r["id"], r["key"]), r["id"]) for r in plain])
        db.compact()
    return sealer
