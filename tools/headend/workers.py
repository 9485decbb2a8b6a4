"""`backchannel serve --workers N` (issue 19, item 2): N head-end processes on one PostgreSQL
database behind a private HAProxy (lb_server.py) on the address `serve` was given.

This process is the supervisor: it forks the workers (each a whole head-end on a loopback
port of its own; the work they share goes through the database: pg_notify.py wakes a
long-poll held by one process for work queued through another, leader.py runs the sweep and
the gateways on one), starts HAProxy once every worker answers, and then watches: a worker
that dies (kill -9, a crash) is started again on its port while HAProxy sends its requests to
the others. SIGTERM or SIGINT stops the workers (each answers its held long-polls and saves
its contacts), then HAProxy. `workers.json` in the proxy's directory lists the pids and
ports (the fault campaigns and tests read it)."""

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from . import daemon, lb_server

log = logging.getLogger("backchannel.workers")
START_S = 120.0          # a worker's first health answer (migrations, a loaded machine)
PR_SET_PDEATHSIG = 1


def free_ports(n):
    """n distinct free ports on 127.0.0.1 (the workers', and the test labs'): each socket is
    held until all are chosen, since one free port after another can be the same port twice
    (a Prosody lab once got one port for its clients and its component)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Supervisor:
    """run_worker(port): runs one head-end on 127.0.0.1:port in this (forked) process and
    returns when it stops."""

    def __init__(self, n, host, port, run_worker, lb_dir=None, certfile=None, keyfile=None):
        self.n = n
        self.host, self.port = host, port
        self.run_worker = run_worker
        self.own_dir = lb_dir is None
        self.dir = Path(lb_dir or tempfile.mkdtemp(prefix="bc-lb-"))
        self.certfile, self.keyfile = certfile, keyfile
        self.ports = free_ports(n)
        self.pids = [None] * n
        self.restarts = 0
        self.stopping = False
        self.lb = None

    def _fork(self, i):
        pid = os.fork()
        if pid == 0:                          # the worker
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _die_with_parent()
                self.run_worker(self.ports[i])
            except BaseException:             # noqa: BLE001 - the worker's own log says why
                logging.getLogger("backchannel").exception("worker %d failed", i)
                code = 1
            finally:
                os._exit(code)
        self.pids[i] = pid
        self._save()

    def _save(self):
        info = {"supervisor": os.getpid(), "port": self.port, "restarts": self.restarts,
                "haproxy": self.lb.proc.pid if self.lb and self.lb.proc else None,
                "workers": [{"pid": p, "port": q} for p, q in zip(self.pids, self.ports)]}
        tmp = self.dir / "workers.json.tmp"
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.dir / "workers.json")

    def _answering(self, port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def _wait_started(self):
        deadline = time.monotonic() + START_S
        waiting = set(range(self.n))
        while waiting:
            self._reap(restart=False)
            waiting = {i for i in waiting if not self._answering(self.ports[i])}
            if time.monotonic() > deadline:
                raise lb_server.LbError("workers %s did not listen within %.0f s"
                                        % (sorted(waiting), START_S))
            time.sleep(0.1)

    def _reap(self, restart=True):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.pids:
                continue                       # haproxy's own exit: seen by poll()
            i = self.pids.index(pid)
            self.pids[i] = None
            if self.stopping:
                continue
            if not restart:
                raise lb_server.LbError("worker %d exited (status %d) while starting"
                                        % (i, status))
            self.restarts += 1
            log.warning("worker %d (pid %d) exited (status %d): starting it again",
                        i, pid, status)
            self._fork(i)

    def _stop_signal(self, signum, frame):
        self.stopping = True

    def run(self):
        """Start everything; return when stopped by a signal (or HAProxy dies)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        old = {s: signal.signal(s, self._stop_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for i in range(self.n):
                self._fork(i)
            self._wait_started()
            self.lb = lb_server.LbServer(self.dir, self.host, self.port,
                                         [("127.0.0.1", p) for p in self.ports],
                                         self.certfile, self.keyfile).start()
            self._save()
            log.warning("%d workers behind haproxy on %s:%d (%s)", self.n, self.host,
                        self.port, self.dir)
            while not self.stopping:
                self._reap()
                if self.lb.proc.poll() is not None:
                    raise lb_server.LbError("haproxy exited: %s"
                                            % daemon.tail(self.dir / "haproxy.log"))
                time.sleep(0.2)
        finally:
            self.stopping = True
            self._stop_all()
            for s, h in old.items():
                signal.signal(s, h)

    def _stop_all(self, timeout=15.0):
        live = [p for p in self.pids if p]
        for pid in live:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while live and time.monotonic() < deadline:
            live = [p for p in live if not _gone(p)]
            time.sleep(0.05)
        for pid in live:
            _signal(pid, signal.SIGKILL)
            _gone(pid, block=True)
        if self.lb is not None:
            self.lb.stop()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _gone(pid, block=False):
    try:
        done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def serve(settings, n, host, port, certfile, keyfile, lb_dir, log_level, log_setup):
    """`serve --workers N`: LbError (one line) when it cannot run."""
    from . import datastore, metrics, server
    if not datastore.is_postgres(settings.db):
        raise lb_server.LbError("--workers %d needs a postgresql:// --db: the processes "
                                "share the fleet through the database (SQLite is one "
                                "process's file)" % n)
    reason = lb_server.missing_reason()
    if reason:
        raise lb_server.LbError(reason)
    log_setup(log_level)

    def run_worker(worker_port):
        from .webapp import create_app
        app = create_app(settings)
        app.state.loopback_only = metrics.loopback_only(host)
        server.run(app, "127.0.0.1", worker_port, None, None, log_level)

    Supervisor(n, host, port, run_worker, lb_dir, certfile, keyfile).run()
