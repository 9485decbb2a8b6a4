"""Inbox: the persisted window of executed work ids, so work delivered twice runs once.

On disk: one store record (write-then-rename) holding JSON {"ids": [...], "pending": [...]}.
`ids` are the last `window` work ids added, oldest first: seen() answers from them. `pending`
are the ids the request still lists in `done` (ids()), until confirm() says the head-end no
longer needs them or they fall out of the window. A damaged or unreadable file starts the inbox
empty with damaged=True (the app should report it in a notice); it never raises.
"""

import json

import store


class Inbox:
    def __init__(self, path, window=64):
        self.path = path
        self.window = window
        self.damaged = False
        self._ids = []
        self._pending = []
        try:
            data = store.read_record(path)
            if data is not None:
                d = json.loads(data)
                ids = d["ids"]
                pending = d["pending"]
                if not isinstance(ids, list) or not isinstance(pending, list):
                    raise ValueError("bad inbox")
                self._ids = ids[-window:]
                self._pending = [i for i in pending if i in self._ids]
        except (ValueError, KeyError, TypeError):   # store.CorruptRecord is a ValueError
            self.damaged = True
            self._ids = []
            self._pending = []

    def seen(self, wid):
        return wid in self._ids

    def add(self, wid):
        """Record that work wid was executed (persisted before returning)."""
        if wid in self._ids:
            return
        self._ids.append(wid)
        self._pending.append(wid)
        if len(self._ids) > self.window:
            old = self._ids.pop(0)
            if old in self._pending:
                self._pending.remove(old)
        self._save()

    def relist(self, wid):
        """A duplicate arrived: list its id in `done` again (the head-end may have missed it)."""
        if wid in self._ids and wid not in self._pending:
            self._pending.append(wid)
            self._save()

    def ids(self):
        """The ids for the request's `done` list, oldest first."""
        return list(self._pending)

    def confirm(self, ids):
        """Stop listing these ids in `done` (they stay in the window for seen())."""
        keep = [i for i in self._pending if i not in ids]
        if len(keep) != len(self._pending):
            self._pending = keep
            self._save()

    def _save(self):
        data = json.dumps({"ids": self._ids, "pending": self._pending}, separators=(",", ":"))
        store.write_record(self.path, data.encode())
