"""The `gateways` lease among `serve --workers N` processes (one PostgreSQL cluster behind
HAProxy): which worker runs the single-instance parts (MQTT bridge, XMPP component, mail
reader), and its successor after that worker is killed. Shared by test_headend_workers_*."""

import json

import psycopg

from lab import processes


def lease(url):
    """(holder, fencing token) of the gateways lease, or None."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT holder, token FROM leases WHERE name = 'gateways'").fetchone()


def _worker_pids(lb_dir):
    return {w["pid"] for w in json.loads((lb_dir / "workers.json").read_text())["workers"]}


def _pid(holder):
    return int(holder.rsplit(":", 1)[1])


def holder(url, lb_dir, after=None, timeout=60):
    """(pid, token) of the lease holder, one of the proxy's workers; with `after` (a token),
    the next holder's, taken with a higher token."""
    def taken():
        row = lease(url)
        return row if row and (after is None or row[1] > after) else None
    what = "a worker to take the gateways lease" if after is None else \
        "another process to take the gateways lease"
    name, token = processes.wait_until(taken, timeout, what)
    assert _pid(name) in _worker_pids(lb_dir), (name, _worker_pids(lb_dir))
    return _pid(name), token
