"""A private PostgreSQL (Debian's `postgresql`) for the tests, the sim and small sites: a
cluster in the project's own directory, made with initdb and run with pg_ctl, listening on a
Unix socket in that directory (and on a TCP port only when asked). The system's own cluster
(/etc/postgresql, /var/lib/postgresql) is never touched.

PostgreSQL refuses to run as root: run as root (CI, the lab), the cluster's directory is
handed to the `postgres` system user (made by the Debian package) and every server command
runs as that user. Its parent must then be reachable by that user (e.g. under /tmp)."""

import glob
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "backchannel"
DBNAME = "backchannel"
SYSTEM_USER = "postgres"


class PgServerError(Exception):
    """One line for the user."""


def bindir():
    """The directory of initdb/pg_ctl/postgres: $BC_PG_BINDIR, else the newest
    /usr/lib/postgresql/N/bin, else wherever initdb is on PATH."""
    env = os.environ.get("BC_PG_BINDIR")
    if env:
        return env
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    on_path = shutil.which("initdb")
    return os.path.dirname(on_path) if on_path else None


def missing_reason():
    """Why no private cluster can run here, or None."""
    d = bindir()
    if d is None or not all(os.access(os.path.join(d, p), os.X_OK)
                            for p in ("initdb", "pg_ctl", "postgres")):
        return "PostgreSQL not found (Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return "running as root without a %r user to run PostgreSQL as" % SYSTEM_USER
    return None


class PgServer:
    """A cluster in `directory` (made on first start): start(), url(dbname), stop()."""

    def __init__(self, directory, port=None, fast=False):
        """port: also listen on 127.0.0.1:port (default: the Unix socket only).
        fast: fsync off, for throw-away test clusters only (a crash loses commits)."""
        self.dir = Path(directory).resolve()
        self.data = self.dir / "data"
        self.port = port
        self.fast = fast
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam(SYSTEM_USER)

    def _run(self, argv, timeout=120):
        kw = {}
        if self.user is not None:
            kw = dict(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL, cwd=str(self.dir), **kw)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PgServerError("%s: %s" % (os.path.basename(argv[0]), e)) from None
        return p

    def _tool(self, name):
        reason = missing_reason()
        if reason:
            raise PgServerError(reason)
        return os.path.join(bindir(), name)

    def init(self):
        """initdb once (trust on the socket only: the directory is private to its owner)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        if (self.data / "PG_VERSION").exists():
            return
        if self.user is not None and not _reachable(self.dir, self.user):
            raise PgServerError("%s: not reachable by the %r user PostgreSQL runs as (put "
                                "the cluster under a directory it can traverse, e.g. /tmp)"
                                % (self.dir, SYSTEM_USER))
        p = self._run([self._tool("initdb"), "-D", str(self.data), "-U", SUPERUSER,
                       "--auth-local=trust", "--auth-host=reject", "-E", "UTF8",
                       "--locale=C", "--no-instructions"])
        if p.returncode != 0:
            raise PgServerError("initdb failed: %s" % _last(p.stderr or p.stdout))

    def start(self, timeout=60):
        self.init()
        opts = ["-k", str(self.dir), "-c", "listen_addresses=%s"
                % ("127.0.0.1" if self.port else "''")]
        if self.port:
            opts += ["-p", str(self.port)]
        if self.fast:
            opts += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        p = self._run([self._tool("pg_ctl"), "-D", str(self.data), "-l",
                       str(self.dir / "postgres.log"), "-w", "-t", str(int(timeout)),
                       "-o", " ".join(opts), "start"], timeout=timeout + 10)
        if p.returncode != 0:
            raise PgServerError("PostgreSQL did not start: %s" % self.log_tail())
        self._create_db(DBNAME)
        return self

    def _create_db(self, name):
        deadline = time.monotonic() + 10
        while True:
            p = self._run([self._tool("createdb"), "-h",
                           str(self.dir), "-p", str(self.port or 5432), "-U", SUPERUSER, name])
            if p.returncode == 0 or "already exists" in p.stderr:
                return
            if time.monotonic() > deadline:
                raise PgServerError("createdb %s failed: %s" % (name, _last(p.stderr)))
            time.sleep(0.1)

    def url(self, dbname=DBNAME):
        """The libpq URL of a database in this cluster (over its Unix socket)."""
        return "postgresql://%s@/%s?host=%s&port=%d" % (
            SUPERUSER, dbname, quote(str(self.dir), safe=""), self.port or 5432)

    def running(self):
        return self._run([self._tool("pg_ctl"), "-D", str(self.data), "status"]).returncode == 0

    def stop(self, mode="fast"):
        """pg_ctl stop (fast: roll back open sessions; immediate: as a crash would)."""
        if not (self.data / "postmaster.pid").exists():
            return
        p = self._run([self._tool("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])
        if p.returncode != 0 and self.running():
            raise PgServerError("PostgreSQL did not stop: %s" % _last(p.stderr or p.stdout))

    def log_tail(self, n=5):
        try:
            lines = (self.dir / "postgres.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-n:]) or "(empty log)"


def temporary(fast=True, under=None):
    """A throw-away cluster in a new directory under `under` (default: the system's temp dir;
    reachable by the `postgres` user when run as root); remove() it when done."""
    import tempfile
    return PgServer(tempfile.mkdtemp(prefix="bc-pg-", dir=under), fast=fast)


def remove(server):
    """Stop a temporary() cluster and delete its directory."""
    try:
        server.stop("immediate")
    finally:
        shutil.rmtree(server.dir, ignore_errors=True)


def _reachable(path, user):
    """Every parent of `path` can be traversed by `user` (others' x bit, or owner/group)."""
    for parent in list(Path(path).parents):
        st = parent.stat()
        if st.st_mode & 0o001:
            continue
        if st.st_uid == user.pw_uid and st.st_mode & 0o100:
            continue
        if st.st_gid == user.pw_gid and st.st_mode & 0o010:
            continue
        return False
    return True


def _last(text):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
