"""Fault campaigns 6 and 7 (issue 19, item 4; tools/faults/cli.py): the head-end as two
processes on one PostgreSQL database behind HAProxy (`backchannel serve --workers 2`), a
real meter (MicroPython unix port) talking to the proxy, and an operator queuing work with
Idempotency-Keys through the proxy, both without pause:

  6  kill -9 one of the two head-end processes at random moments (the supervisor starts it
     again; meanwhile the proxy sends everything to the other);
  7  restart PostgreSQL at random moments (pg_ctl stop -m fast or -m immediate, then start):
     exchanges and API calls get 503 + Retry-After meanwhile, the meter backs off and retries.

Each is campaign 3's ledger (headend_campaigns.py) with its own fault: every work item the
operator got an id for finishes `done` exactly once, no acked seq is missing, no reading is
stored twice. On loopback (no network lab: these faults are in the processes, not the
network); PostgreSQL runs with fsync on."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from faults.campaign import CampaignFailed, Rig
from faults.headend_campaigns import campaign_headend_crash
from lab import processes


def why_skip_scale():
    from headend import lb_server, pg_server
    return pg_server.missing_reason() or lb_server.missing_reason()


class ScaleRig(Rig):
    """Rig's meters, ledger queries and checks, with `serve --workers 2` on a private
    PostgreSQL (pg_server.py) instead of one head-end on SQLite in a lab."""

    def __init__(self, work, log=print, workers=2):
        self.dir = Path(work)
        self.log = log
        self.transport = "http"
        self.workers = workers
        self.lab = None
        self.headend = self.api = self.admin = self.broker = self.server = None
        self.pg = None
        self.meters = {}
        self._conn = None

    def __enter__(self):
        from headend import pg_server
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            pg_dir = Path("/tmp") / ("bc-faults-pg-%d" % os.getpid())
            self.pg = pg_server.PgServer(pg_dir).start()
            self.lb_dir = self.dir / "lb"
            he = self.headend = processes.Headend(
                self.dir, db=self.pg.url(), db_key=self.dir / "hub.key",
                extra=["--log-level", "warning", "--workers", str(self.workers),
                       "--lb-dir", str(self.lb_dir)])
            token = he.add_token("faults", "operator")
            admin = he.add_token("faults-admin", "admin")
            he.extra += self._serve_extra()
            he.start(120)
            self.api = he.api(token)
            self.admin = he.api(admin)
        except BaseException:
            self._down()
            raise
        return self

    def _serve_extra(self):
        """More `serve` arguments, once the database exists (campaign 8: the NATS bridge)."""
        return []

    def _down(self):
        for m in self.meters.values():
            m.kill()
        if self.headend is not None and self.headend.proc is not None:
            self.headend.kill(signal.SIGTERM)    # the supervisor stops workers and haproxy
        if self._conn is not None:
            self._conn.close()
        if self.pg is not None:
            from headend import pg_server
            pg_server.remove(self.pg)

    def workers_info(self):
        return json.loads((self.lb_dir / "workers.json").read_text())

    def query(self, sql, args=()):
        import psycopg
        sql = sql.replace("?", "%s")
        deadline = time.monotonic() + 60
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.pg.url(), autocommit=True,
                                                 connect_timeout=5)
                return self._conn.execute(sql, args).fetchall()
            except psycopg.OperationalError:        # PostgreSQL is being restarted
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if time.monotonic() > deadline:
                    raise CampaignFailed("cannot read the head-end database") from None
                time.sleep(0.2)


def kill_a_worker(rig, rng):
    """Campaign 6's fault: kill -9 one of the workers; return once the supervisor has
    started it again and it listens (the other served meanwhile)."""
    info = rig.workers_info()
    victim = rng.choice(info["workers"])
    os.kill(victim["pid"], signal.SIGKILL)
    rig.wait(lambda: rig.workers_info()["restarts"] > info["restarts"], 30,
             "the supervisor to start worker %d again" % victim["pid"])
    rig.wait(lambda: _listens(rig.workers_info()["workers"]), 120, "every worker to listen")


def _listens(workers):
    import socket
    for w in workers:
        try:
            socket.create_connection(("127.0.0.1", w["port"]), timeout=0.5).close()
        except OSError:
            return False
    return True


def restart_postgres(rig, rng):
    """Campaign 7's fault: stop PostgreSQL (fast: sessions rolled back; immediate: as a
    crash, recovered from the WAL at start), down up to 2 s, start it again."""
    rig.pg.stop(rng.choice(("fast", "immediate")))
    time.sleep(rng.uniform(0.0, 2.0))
    rig.pg.start()


def campaign_worker_kill(rig, rng, kills=20, say=print):
    return campaign_headend_crash(rig, rng, kills, say, crash=kill_a_worker,
                                  what="worker kill -9")


def campaign_pg_restart(rig, rng, restarts=8, say=print):
    return campaign_headend_crash(rig, rng, restarts, say, crash=restart_postgres,
                                  what="PostgreSQL restart")


SCALE_CAMPAIGNS = {
    6: ("kill -9 one of 2 workers", campaign_worker_kill, {"kills": 20}, {"kills": 3}),
    7: ("PostgreSQL restart", campaign_pg_restart, {"restarts": 8}, {"restarts": 2}),
}


def run_scale(seed, only, smoke, work, verdict, say=print):
    """Campaigns 6 and 7 on one ScaleRig: {number: (ok, figures or error, seconds)}."""
    import random
    results = {}
    nums = [n for n in SCALE_CAMPAIGNS if not only or n in only]
    if not nums:
        return results
    reason = why_skip_scale()
    if reason:
        for n in nums:
            say("campaign %d: cannot run: %s" % (n, reason))
            results[n] = (False, reason, 0.0)
        return results
    with ScaleRig(Path(work) / "scale", log=say) as rig:
        for num in nums:
            name, fn, full, short = SCALE_CAMPAIGNS[num]
            rng = random.Random("%s-%d" % (seed, num))
            say("campaign %d: %s over http via haproxy (seed %s%s)"
                % (num, name, seed, ", smoke" if smoke else ""))
            t0 = time.monotonic()
            try:
                fig, ok = verdict(rig, fn(rig, rng, say=say, **(short if smoke else full))), True
            except CampaignFailed as e:
                fig, ok = str(e), False
                for m in rig.meters.values():
                    m.kill(signal.SIGKILL)
                if not rig.pg.running():
                    rig.pg.start()
            dt = time.monotonic() - t0
            results[num] = (ok, fig, dt)
            say("campaign %d: %s in %.0f s\n  %s" % (num, "PASS" if ok else "FAIL", dt,
                                                    json.dumps(fig) if ok else fig))
    return results
