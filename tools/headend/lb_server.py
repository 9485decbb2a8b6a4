"""A private HAProxy (Debian's `haproxy`) in front of several head-end processes (issue 19,
`backchannel serve --workers N`): the project writes its config into its own directory and
runs `haproxy -db -f` there, in the foreground, as pg_server.py does for PostgreSQL. The
system's instance (/etc/haproxy, its service) is never touched.

HTTP mode, round robin per request: a meter's next exchange may go to any process (each
request is self-contained, and a long-poll held by one process is woken by work queued
through another: pg_notify.py). A process that dies fails its health check
(GET /v1/health) and gets no new requests; a request refused at connect is sent to another
(`option redispatch`, `retries`). With --certfile/--keyfile HAProxy terminates TLS and talks
plain HTTP to the processes on loopback; it adds X-Forwarded-For, which uvicorn trusts from
127.0.0.1 only, so the IP gate and the logs see the meter's address."""

import os
import resource
import shutil
import subprocess
from pathlib import Path

from . import daemon

# a long-poll is held up to max_wait (25 s by default): the server timeout must outlast it
TIMEOUT_SERVER_S = 90
CHECK_INTER_MS = 1000
# a loaded process can hold its event loop a while (a database round trip, a GC pass): a
# health check is failed only after 20 s without an answer, and a server marked down after 3
# failures; a killed process refuses connections at once (a layer-4 failure: down in about
# 3 s), and a request refused at connect is retried on another server meanwhile. With 5 s,
# two PostgreSQL workers that were only slow (1,000-2,000 meters on two starved cores) were
# both marked down within a minute and the proxy answered every request 503 ("no server
# available"), turning an overload into an outage
CHECK_TIMEOUT_S = 20
CHECK_FALL = 3


class LbError(Exception):
    """One line for the user."""


def missing_reason():
    if shutil.which("haproxy") is None and not os.access("/usr/sbin/haproxy", os.X_OK):
        return "HAProxy not found (Debian: apt-get install haproxy)"
    return None


def binary():
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


def maxconn():
    """Each proxied connection takes two descriptors (client and server side): as many as
    the hard RLIMIT_NOFILE allows (haproxy raises its soft limit to that)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    return max(256, min(100000, (hard - 200) // 2))


def config(host, port, backends, pem=None):
    """haproxy.cfg for `backends`, a list of (host, port) of head-end processes."""
    bind = "bind %s:%d" % (host, port) + (" ssl crt %s" % pem if pem else "")
    lines = [
        "global",
        "    maxconn %d" % maxconn(),
        # failed requests only (dontlog-normal), to stdout: haproxy.log says which side
        # closed and when (the termination state, e.g. SH-- or SD--)
        "    log stdout format raw local0 info",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlog-normal",
        # a frontend's own limit, explicit: meters in long-poll each hold a connection
        "    maxconn %d" % maxconn(),
        # keep-alive with the meters, but a new connection to a process for each request:
        # uvicorn closes an idle connection after 5 s (timeout_keep_alive), and a request
        # the proxy sends on it as it closes (on a loaded machine, or while the process's
        # event loop is busy, that window is wide) was answered 502 or its client's
        # connection cut without an answer (termination state SD--/SH--); a POST cannot be
        # retried (test_lb_reuse.py)
        "    option http-server-close",
        "    option forwardfor",
        "    option redispatch",
        "    retries 3",
        "    timeout connect 2s",
        "    timeout client %ds" % TIMEOUT_SERVER_S,
        "    timeout server %ds" % TIMEOUT_SERVER_S,
        "    timeout http-request 15s",
        "    timeout http-keep-alive %ds" % TIMEOUT_SERVER_S,
        "    timeout queue 10s",
        "    timeout check %ds" % CHECK_TIMEOUT_S,
        "frontend headend",
        "    " + bind,
        "    default_backend workers",
        "backend workers",
        "    balance roundrobin",
        "    option httpchk GET /v1/health",
        "    http-check expect status 200",
        # a failed request (connect refused, a dead process) is retried on another server
        "    retry-on conn-failure empty-response response-timeout",
    ]
    for i, (bhost, bport) in enumerate(backends):
        lines.append("    server w%d %s:%d check inter %dms fall %d rise 1"
                     % (i, bhost, bport, CHECK_INTER_MS, CHECK_FALL))
    return "\n".join(lines) + "\n"


class LbServer:
    """haproxy on host:port in front of `backends`, configured in `directory`."""

    def __init__(self, directory, host, port, backends, certfile=None, keyfile=None):
        self.dir = Path(directory)
        self.host, self.port = host, port
        self.backends = list(backends)
        self.certfile, self.keyfile = certfile, keyfile
        self.proc = None

    def write(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        pem = None
        if self.certfile:
            # HAProxy wants the certificate and its key in one file: ours, private
            pem = self.dir / "headend.pem"
            fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(Path(self.certfile).read_text().rstrip() + "\n")
                out.write(Path(self.keyfile).read_text().rstrip() + "\n")
        path = self.dir / "haproxy.cfg"
        path.write_text(config(self.host, self.port, self.backends, pem))
        return path

    def start(self, timeout=15):
        reason = missing_reason()
        if reason:
            raise LbError(reason)
        cfg = self.write()
        check = subprocess.run([binary(), "-c", "-q", "-f", str(cfg)],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            said = (check.stderr or check.stdout or "").strip().splitlines()
            raise LbError("haproxy refused its config: %s" % (said[-1] if said else "?"))
        try:
            self.proc = daemon.start([binary(), "-db", "-f", str(cfg)], "haproxy",
                                     self.host, self.port, self.dir / "haproxy.log",
                                     timeout=timeout)
        except daemon.DaemonError as e:
            raise LbError(str(e)) from None
        return self

    def stop(self):
        if self.proc is not None:
            daemon.stop(self.proc)
            self.proc = None
