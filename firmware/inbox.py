"""Inbox: which work the meter has executed, so work delivered twice runs once, in O(1) memory.

Work items carry a per-device sequence the head-end assigns (docs/protocol.md, v2). The inbox
keeps the highest executed `hi` and a bit mask of which of the WINDOW sequences below it ran:
check(seq) answers "new", "duplicate", or "stale" (below the window: refused whatever its
expiry, so no replay can ever run, however old). `pending` are the ids the request still
lists in `done` (ids()), until confirm() says the head-end no longer needs them.

On disk: one store record (write-then-rename) holding JSON {"hi", "mask", "pending"}. A damaged
or unreadable file starts the inbox empty with damaged=True (the app should report it in a
notice); it never raises.
"""

import json

import store

WINDOW = 32
_FULL = (1 << WINDOW) - 1
MAX_PENDING = 64


class Inbox:
    def __init__(self, path):
        self.path = path
        self.damaged = False
        self.hi = 0
        self.mask = 0         # bit i: sequence hi - 1 - i was executed
        self._pending = []
        try:
            data = store.read_record(path)
            if data is not None:
                d = json.loads(data)
                hi, mask, pending = d["hi"], d["mask"], d["pending"]
                if not (isinstance(hi, int) and isinstance(mask, int)
                        and isinstance(pending, list)) or hi < 0:
                    raise ValueError("bad inbox")
                self.hi = hi
                self.mask = mask & _FULL
                self._pending = pending[-MAX_PENDING:]
        except (ValueError, KeyError, TypeError):   # store.CorruptRecord is a ValueError
            self.damaged = True
            self.hi = self.mask = 0
            self._pending = []

    def check(self, seq):
        """"new", "duplicate" or "stale" (older than the window: refuse it)."""
        if seq > self.hi:
            return "new"
        if seq == self.hi:
            return "duplicate"
        back = self.hi - 1 - seq
        if back >= WINDOW:
            return "stale"
        return "duplicate" if self.mask >> back & 1 else "new"

    def add(self, wid, seq):
        """Record that work wid (sequence seq) was executed: persisted before returning."""
        if seq > self.hi:
            shift = seq - self.hi
            if self.hi == 0 or shift > WINDOW:
                self.mask = 0
            else:
                self.mask = ((self.mask << shift) | (1 << (shift - 1))) & _FULL
            self.hi = seq
        elif seq < self.hi:
            self.mask |= 1 << (self.hi - 1 - seq)
        self._list(wid)
        self._save()

    def relist(self, wid):
        """A duplicate arrived: list its id in `done` again (the head-end may have missed it)."""
        if wid not in self._pending:
            self._list(wid)
            self._save()

    def _list(self, wid):
        if wid not in self._pending:
            self._pending.append(wid)
            if len(self._pending) > MAX_PENDING:
                self._pending.pop(0)

    def ids(self):
        """The ids for the request's `done` list, oldest first."""
        return list(self._pending)

    def confirm(self, ids):
        """Stop listing these ids in `done`."""
        keep = [i for i in self._pending if i not in ids]
        if len(keep) != len(self._pending):
            self._pending = keep
            self._save()

    def save(self):
        """Write it now (a committed head-end move makes this inbox the meter's: trial.py)."""
        self._save()

    def _save(self):
        data = json.dumps({"hi": self.hi, "mask": self.mask, "pending": self._pending},
                          separators=(",", ":"))
        store.write_record(self.path, data.encode())
