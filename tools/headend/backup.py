"""Online backup and restore of the head-end's store (issue 19, item 5), for both stores,
while head-ends keep running on it:

- SQLite: the SQLite backup API (sqlite3.Connection.backup) copies one consistent snapshot
  of the file, pages read under a read transaction, so WAL writers go on; the device-key file
  (`<db>.key`, which seals the devices' keys) is copied beside it as `<backup>.key`.
- PostgreSQL: `pg_dump --format=custom` (Debian's, from pg_server.bindir()), one
  repeatable-read snapshot; restore with `pg_restore --clean --if-exists` into a database
  no head-end is using. The device-key file (--db-key) is not in the database: keep it too.

What a backup holds is everything committed before it started, so everything acknowledged
before then (an ack or a 202 is only sent after its commit): test_backup.py checks a
restore against the acks a meter got before the backup began."""

import os
import shutil
import sqlite3
import subprocess

from . import datastore


class BackupError(Exception):
    """One line for the user."""


def _pg_tool(name):
    from . import pg_server
    d = pg_server.bindir()
    path = os.path.join(d, name) if d else shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        raise BackupError("%s not found (Debian: apt-get install postgresql-client)" % name)
    return path


def _run(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=3600,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BackupError("%s: %s" % (os.path.basename(argv[0]), e)) from None
    if p.returncode != 0:
        lines = [x for x in (p.stderr or p.stdout).strip().splitlines() if x.strip()]
        raise BackupError("%s failed: %s" % (os.path.basename(argv[0]),
                                             lines[-1] if lines else p.returncode))


def _copy_sqlite(src_path, dst_path, src_uri=False):
    tmp = "%s.tmp-%d" % (dst_path, os.getpid())
    src = sqlite3.connect(src_path, uri=src_uri, timeout=30)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    os.replace(tmp, dst_path)


def backup(location, out):
    """Write a backup of the store at `location` to the file `out`; returns what was written."""
    out = os.path.abspath(out)
    if datastore.is_postgres(location):
        _run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--file=" + out,
              "--dbname=" + location])
        return [out]
    if not os.path.isfile(location):
        raise BackupError("%s: no such database file" % location)
    _copy_sqlite("file:%s?mode=ro" % os.path.abspath(location), out, src_uri=True)
    written = [out]
    key = location + ".key"
    if os.path.isfile(key):
        fd = os.open(out + ".key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as dst, open(key, "rb") as src:
            dst.write(src.read())
        written.append(out + ".key")
    return written


def restore(backup_file, location):
    """Restore `backup_file` into `location`: a new SQLite file (an existing one is
    refused), or a PostgreSQL database no head-end is using (its tables are replaced)."""
    if not os.path.isfile(backup_file):
        raise BackupError("%s: no such backup file" % backup_file)
    if datastore.is_postgres(location):
        _run([_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner",
              "--single-transaction", "--dbname=" + location, backup_file])
        return [location]
    if os.path.exists(location):
        raise BackupError("%s exists: restore into a new file (move the old one away first)"
                          % location)
    _copy_sqlite(backup_file, location)
    written = [location]
    if os.path.isfile(backup_file + ".key") and not os.path.exists(location + ".key"):
        shutil.copyfile(backup_file + ".key", location + ".key")
        os.chmod(location + ".key", 0o600)
        written.append(location + ".key")
    return written
