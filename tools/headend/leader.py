"""Which head-end process runs the fleet-wide timers (the sweep: expiry, presence
derivation, escalation, old nonces), so that they run once however many processes share a
PostgreSQL database (issue 19). On SQLite the one process always leads.

Election: a session advisory lock (pg_try_advisory_lock) on a connection of the leader's
own. The lock goes with the session, so a leader that dies (kill -9, a lost host) frees it at
once and the next process to try takes over. A leader that stops without dying (SIGSTOP, a
long GC pause, a frozen VM) keeps its socket open: its session is ended by the server's
idle_session_timeout (the lease, `leader_lease_s`), since a live leader touches it every
sweep tick, and the lock is free again.

Fencing: each new leader increments `leases.token` and keeps the value it got. Every write
of the leader's runs in a transaction that first reads the token row FOR SHARE and checks it
is still its own (fence()): a new leader's increment waits for such a transaction, and a
stale leader (resumed after its lease) finds a newer token and writes nothing (NotLeader)."""

import logging
import os
import socket
import time

# pg advisory lock (class, key): advisory locks are per database, so the key also names the
# schema; fleets in two schemas of one database (or two tests) each elect their own leader
LOCK_CLASS = 0x6263_0002                # "bc" 2: the sweep
LOCK_SQL = "SELECT pg_try_advisory_lock(%d, hashtext(current_schema() || '/' || %%s))" % LOCK_CLASS
log = logging.getLogger("backchannel.leader")


class NotLeader(Exception):
    """This process's token is no longer the newest: another process leads."""


def for_store(db, name, lease_s):
    if db.dialect.name == "postgresql":
        return PgLeader(db, name, lease_s)
    return SoleLeader()


class SoleLeader:
    """One process per SQLite file: it always leads."""
    token = 0

    def lead(self):
        return True

    def fence(self, db):
        pass

    def close(self):
        pass


class PgLeader:
    def __init__(self, db, name, lease_s):
        self.db = db
        self.name = name
        self.lease_s = lease_s
        self.token = None                 # ours while we lead
        self.holder = "%s:%d" % (socket.gethostname(), os.getpid())
        self.conn = None

    def _connect(self):
        import psycopg
        self.conn = psycopg.connect(self.db.url, autocommit=True, connect_timeout=5,
                                    application_name="backchannel-leader")
        # the lease: a leader that stops touching its session loses it, and the lock
        self.conn.execute("SET idle_session_timeout = %d" % int(self.lease_s * 1000))

    def lead(self):
        """True while this process leads (call every sweep tick: it renews the lease)."""
        import psycopg
        try:
            if self.conn is None or self.conn.closed or self.conn.broken:
                self._step_down("its session ended")
                self._connect()
            if self.token is not None:
                self.conn.execute("SELECT 1")          # keeps the session, and the lock
                return True
            got = self.conn.execute(LOCK_SQL, (self.name,)).fetchone()
            if not got[0]:
                return False
            self.token = self.conn.execute(
                "INSERT INTO leases(name, token, holder, since) VALUES (%s, 1, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET token = leases.token + 1, "
                "holder = excluded.holder, since = excluded.since RETURNING token",
                (self.name, self.holder, time.time())).fetchone()[0]
            log.warning("leading %s with token %d", self.name, self.token)
            return True
        except psycopg.Error as e:
            self._step_down(str(e).strip().splitlines()[0] if str(e).strip() else "error")
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return False

    def fence(self, db):
        """In the leader's write transaction: NotLeader unless our token is still the
        newest (the row stays locked against a new leader until this transaction ends)."""
        row = db.one("SELECT token FROM leases WHERE name = ? FOR SHARE", self.name)
        if self.token is None or row is None or row["token"] != self.token:
            self._step_down("token %s, newest %s" % (self.token, row and row["token"]))
            raise NotLeader("%s: another process leads" % self.name)

    def _step_down(self, why):
        if self.token is not None:
            log.warning("no longer leading %s (%s)", self.name, why)
        self.token = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.token = None
