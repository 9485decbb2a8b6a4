"""Group commit for the exchange path: many exchanges' commits share one fsync of the WAL.

The connection runs with synchronous=NORMAL, so a COMMIT only writes its WAL frames (no
fsync). Database.tx() (sync=True, every path but the exchange) fsyncs the WAL itself right
after COMMIT, as synchronous=FULL would. The exchange commits with sync=False and then, before
its response leaves, awaits `GroupCommit.synced()`: the WAL is fsync'd in a worker thread, off
the event loop, and every exchange that committed before that fsync started is answered when
it ends. While one fsync runs, the exchanges committing meanwhile wait for the next one, so
a busy head-end does one fsync per batch instead of one per exchange.

The promise is unchanged (db.py): nothing is answered before it is on disk. A WAL frame is
durable once the file is fsync'd, and SQLite syncs the WAL before checkpointing it into the
database (synchronous=NORMAL in WAL mode). kill -9 loses nothing either way: a committed
transaction is in the OS page cache as soon as COMMIT returns."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor


class GroupCommit:
    """One fsync at a time, in its own thread; waiters are released by commit count."""

    def __init__(self, db):
        self.db = db
        self.fsyncs = 0                  # completed by this object (figures, tests)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group_commit")
        self._running = None             # the fsync in flight (an asyncio future), or None
        self._waiters = []               # (target commit count, future)
        self._loop = None                # the event loop of _running and _waiters
        self.on_batch = None             # callable(exchanges released, fsync seconds): metrics

    async def synced(self):
        """Returns once every commit made so far on the connection is on disk."""
        target = self.db.commits
        if self.db.synced_upto >= target:
            return
        loop = asyncio.get_running_loop()
        if self._loop is not loop:       # a previous loop ended (tests, restarts in-process)
            self._loop, self._running, self._waiters = loop, None, []
        fut = loop.create_future()
        self._waiters.append((target, fut))
        if self._running is None:
            self._start()
        await fut

    def _start(self):
        loop = asyncio.get_running_loop()
        covers = self.db.commits         # every frame written so far is in the file
        self._running = loop.run_in_executor(self._pool, self.db.sync_wal)
        started = time.perf_counter()
        self._running.add_done_callback(lambda f: self._done(f, covers, started))

    def _done(self, f, covers, started=None):
        self._running = None
        error = asyncio.CancelledError() if f.cancelled() else f.exception()
        if error is None:
            self.fsyncs += 1
            self.db.synced_upto = max(self.db.synced_upto, covers)
        waiting, self._waiters = self._waiters, []
        released = 0
        for target, fut in waiting:
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            elif target <= self.db.synced_upto:
                fut.set_result(None)
                released += 1
            else:
                self._waiters.append((target, fut))
        if self.on_batch is not None and error is None and started is not None:
            self.on_batch(released, time.perf_counter() - started)
        if self._waiters:
            self._start()

    def close(self):
        self._pool.shutdown(wait=True)
