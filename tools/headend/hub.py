"""The running head-end's shared state: settings, database, transform hook, file tokens, and
the per-device wake-ups an enqueue raises once its transaction commits: long-poll waiters
and wake hooks (the MQTT bridge's push)."""

import asyncio
import threading
import time
from collections import Counter
from contextlib import contextmanager

from . import devices, leader, release_store, signing
from .group_commit import GroupCommit


class Hub:
    def __init__(self, settings, db, transform=None, file_tokens=()):
        self.settings = settings
        self.db = db
        self.transform = transform
        self.file_tokens = {signing.token_hash(t): (name, role, None)
                            for name, role, t in file_tokens}
        self.loop = None                 # set when the app starts
        self.waiters = {}                # device -> set of Waiter
        self.active = Counter()          # device -> exchanges in progress
        self.closing = False             # shutting down: answer long-polls at once
        self.wake_hooks = []             # callables(device) run after a commit that woke it
        self._local = threading.local()  # _wake: each thread's transaction its own
        self.contacts = {}               # device -> end of its last held long-poll (unsaved)
        self.notifications = 0           # wake-ups so far (any device, any thread)
        self.releases = release_store.directory(settings)    # served by `fetch`
        self.group_commit = GroupCommit(db)
        self.leadership = leader.SoleLeader()    # webapp: leader.for_store (PostgreSQL)

    def now(self):
        return time.time()

    @property
    def _wake(self):
        """Devices to wake after this thread's transaction commits (threads on PostgreSQL
        run transactions of their own side by side: off_loop)."""
        woken = getattr(self._local, "wake", None)
        if woken is None:
            woken = self._local.wake = set()
        return woken

    @_wake.setter
    def _wake(self, value):
        self._local.wake = value

    async def off_loop(self, fn, *args):
        """fn(*args) in one of the store's worker threads where its statements are round
        trips to a server (PostgreSQL): the loop goes on serving (health checks, other
        meters) meanwhile. On SQLite, here and now."""
        pool = self.db.executor()
        if pool is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @contextmanager
    def tx(self, sync=True):
        """A database transaction; devices woken inside it are notified after COMMIT.
        sync=False (the exchange path): the caller awaits synced() before answering."""
        try:
            with self.db.tx(sync):
                yield self.db
                if self.db.tx_depth == 1 and self._wake:
                    self.db.announce(self._wake)    # other processes' waiters (PostgreSQL)
        except BaseException:
            if not self.db.tx_depth:
                self._wake.clear()
            raise
        if not self.db.tx_depth:
            woken, self._wake = self._wake, set()
            for device in woken:
                self._notify(device)
                for hook in self.wake_hooks:
                    hook(device)

    async def synced(self):
        """Every commit so far is on disk (one fsync shared by the exchanges waiting)."""
        await self.group_commit.synced()

    def contact(self, device, now):
        """A held long-poll answered at `now`: its last_contact is saved by the next sweep
        (flush_contacts), so an idle long-poll costs one commit (its request), not two."""
        self.contacts[device] = now

    def flush_contacts(self):
        """Save the pending long-poll contacts (in the caller's transaction, if any), in
        device order: on PostgreSQL every process flushes its own long-polls' contacts, and
        two flushes locking the same rows in different orders deadlocked (seen at 10,000
        meters on two workers: the sweep failed and its contacts were lost)."""
        pending, self.contacts = self.contacts, {}
        if pending:
            with self.tx() as db:
                db.many(
                    "UPDATE devices SET last_contact = ? WHERE id = ? AND "
                    "(last_contact IS NULL OR last_contact < ?)",
                    [(t, d, t) for d, t in sorted(pending.items())])

    def wake(self, device):
        """Work may be deliverable to device: wake its long-polls after the commit."""
        self._wake.add(device)

    def remote_wake(self, device):
        """Another process committed work for device (pg_notify.py; on the loop)."""
        self._notify(device)
        for hook in self.wake_hooks:
            hook(device)

    def wake_all_local(self):
        """Every held long-poll re-checks its work (notifications may have been missed)."""
        for device in list(self.waiters):
            self._notify(device)

    def listen(self, device):
        event = Waiter(asyncio.get_running_loop())
        self.waiters.setdefault(device, set()).add(event)
        return event

    def unlisten(self, device, event):
        events = self.waiters.get(device)
        if events is not None:
            events.discard(event)
            if not events:
                del self.waiters[device]

    def close(self):
        """Shutting down: every held long-poll answers now (call on the loop)."""
        self.closing = True
        for device in list(self.waiters):
            self._notify(device)

    def _notify(self, device):
        self.notifications += 1         # before reading the waiters: delivery.first_look
        events = list(self.waiters.get(device, ()))
        if not events:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for event in events:
            if self.loop is not None and running is not self.loop:
                self.loop.call_soon_threadsafe(event.set)
            else:
                event.set()

    def principal(self, token):
        """(name, role, groups) for a live bearer token from the token file or the database,
        or None: unknown, expired and revoked alike."""
        found = self.file_tokens.get(signing.token_hash(token))
        return found or devices.lookup_token(self.db, token)


class Waiter:
    """A long-poll's wake-up, lighter than an asyncio.Event plus asyncio.wait() (which cost
    two tasks and their callbacks per long-poll): set() (a commit queued work) and wake()
    (the poll's timer, the meter hanging up) resolve `fut`; `woken` tells which."""
    __slots__ = ("fut", "woken")

    def __init__(self, loop):
        self.fut = loop.create_future()
        self.woken = False

    def set(self):
        self.woken = True
        self.wake()

    def wake(self, *_):
        if not self.fut.done():
            self.fut.set_result(None)
