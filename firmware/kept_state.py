# What an operator set that must survive a reboot or a power cut: the relay state and the
# stated presence with its note. One store record (write-then-rename, length and CRC, as the
# registers), written on every change; read once at start.

import json

import store

DEFAULTS = {"relay": "closed", "presence": "available", "note": ""}


class KeptState:
    def __init__(self, path):
        self.path = path
        self.damaged = False

    def load(self):
        """The kept values (DEFAULTS for what is missing); a damaged record gives DEFAULTS
        with damaged=True (the app reports it in a notice). Never raises."""
        out = dict(DEFAULTS)
        try:
            data = store.read_record(self.path)
            kept = json.loads(data) if data is not None else {}
            if not isinstance(kept, dict):
                raise ValueError("not an object")
        except (ValueError, OSError):   # store.CorruptRecord is a ValueError
            self.damaged = True
            return out
        for name in DEFAULTS:
            if isinstance(kept.get(name), str):
                out[name] = kept[name]
        return out

    def save(self, relay, presence, note):
        store.write_record(self.path, json.dumps(
            {"relay": relay, "presence": presence, "note": note}).encode())
