"""Wake-ups across head-end processes on one PostgreSQL database (issue 19): work queued
through process B wakes the long-poll that process A holds for that meter.

A transaction that queued work for a device (Hub.wake) sends `NOTIFY bc_work, '<device>'`
before its COMMIT (send(), called by Hub.tx): PostgreSQL delivers it to every listening
session when, and only if, the transaction commits. Each process listens on a connection of
its own, in a thread (Listener), and wakes its long-polls and wake hooks (the MQTT push) on
the event loop, as a local commit would. Its own notifications are skipped (the local wake
already ran). When the listening connection drops, every held long-poll is woken once after
it is back (a notification sent meanwhile is lost): each re-checks its work and waits again."""

import logging
import threading
import time

import psycopg

CHANNEL = "bc_work"
log = logging.getLogger("backchannel.notify")


def send(db, devices):
    """Inside the transaction that queued the work: one notification per device."""
    if devices:
        db.write("SELECT pg_notify('%s', d) FROM unnest(?::text[]) AS d" % CHANNEL,
               sorted(devices))


class Listener:
    def __init__(self, hub, url):
        self.hub = hub
        self.url = url
        self.received = 0                # notifications from other processes (figures)
        self._stop = threading.Event()
        self._thread = None
        self._conn = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="pg_notify", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        conn = self._conn
        if conn is not None:
            try:
                conn.cancel_safe()       # ends a notifies() wait at once
            except Exception:       # noqa: BLE001 - stopping anyway
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self):
        backoff, first = 0.2, True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    self._conn = conn
                    conn.execute("LISTEN %s" % CHANNEL)
                    if not first:           # missed notifications: every waiter re-checks
                        self._on_loop(self.hub.wake_all_local)
                    first, backoff = False, 0.2
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if note.pid != self._own_pid():
                                self.received += 1
                                self._on_loop(self.hub.remote_wake, note.payload)
            except psycopg.Error as e:
                if self._stop.is_set():
                    return
                log.warning("listening for work notifications: %s (again in %.1f s)",
                            str(e).strip().splitlines()[0] if str(e).strip() else e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._conn = None

    def _own_pid(self):
        conn = getattr(self.hub.db, "conn", None)
        try:
            return conn.info.backend_pid if conn is not None else None
        except Exception:           # noqa: BLE001 - a closed connection: not ours then
            return None

    def _on_loop(self, fn, *args):
        loop = self.hub.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:        # the loop closed meanwhile
            pass


def wait_listening(listener, timeout=5.0):
    """Until the listener's connection is up (tests)."""
    deadline = time.monotonic() + timeout
    while listener._conn is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the notification listener did not connect")
        time.sleep(0.02)
