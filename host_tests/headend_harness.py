"""Fixtures for the head-end tests: an app on a temp database (TestClient), a real uvicorn
server in a thread on a free 127.0.0.1 port (plain, or GuardedServer: as `serve` runs it),
tokens and registered fake meters."""

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import store_harness
import uvicorn
from fastapi.testclient import TestClient
from headend_fake_meter import FakeMeter

from headend import devices
from headend import server as headend_server
from headend.settings import Settings
from headend.webapp import create_app

ROOT = Path(__file__).resolve().parent.parent

# the per-address cap on failed authentications off: TestClient is one address for all
# (test_attacks_limits.py turns it on)
FAST = dict(sweep_interval=0.05, max_wait=25.0, unauth_per_minute=0)
# peers are denied by default (policy.py): the rendezvous tests allow what a rule may
ALLOW_PEERS = [{"from": "*", "to": "*", "ops": ["read", "get_events", "set_presence"]}]


OPEN = []   # every Headend not closed yet (conftest closes a test's own after it)


def close_since(mark):
    """Close the Headends made since len(OPEN) was mark: on PostgreSQL each holds server
    connections, and waiting for the garbage collector ran the cluster out of them."""
    while len(OPEN) > mark:
        OPEN.pop().close()


class Headend:
    """An app plus helpers: register meters, operator/utility/admin tokens."""

    def __init__(self, tmp_path, transform=None, **settings):
        if isinstance(transform, str):          # "module:function", as in a config file
            settings["transform"], transform = transform, None
        where = store_harness.location(tmp_path)      # SQLite, or PostgreSQL with --store
        self.settings = Settings(**dict(where, **dict(FAST, **settings)))
        self.app = create_app(self.settings, transform=transform)
        self.hub = self.app.state.hub
        self.op_token = devices.add_token(self.hub.db, "alice", "operator")
        self.util_token = devices.add_token(self.hub.db, "uma", "utility")
        self.admin_token = devices.add_token(self.hub.db, "ada", "admin")
        OPEN.append(self)

    def close(self):
        self.hub.leadership.close()
        self.hub.retention.close()
        self.hub.db.close()

    def meter(self, http, device_id, **kw):
        key = devices.create(self.hub.db, device_id, poll=self.settings.default_poll)
        return FakeMeter(http, device_id, key, **kw)

    @staticmethod
    def auth(token):
        return {"Authorization": "Bearer %s" % token}

    def count(self, table, device=None):
        sql = "SELECT COUNT(*) AS n FROM %s" % table
        if device is None:
            return self.hub.db.one(sql)["n"]
        return self.hub.db.one(sql + " WHERE device = ?", device)["n"]


class Api:
    """Operator API calls through an httpx-style client with a bearer token."""

    def __init__(self, http, token):
        self.http, self.headers = http, Headend.auth(token)

    def __getattr__(self, method):
        def call(path, **kw):
            return getattr(self.http, method)(path, headers=self.headers, **kw)
        return call

    def work(self, device, op, args=None, **kw):
        r = self.post("/v1/devices/%s/work" % device, json=dict(op=op, args=args or {}, **kw))
        assert r.status_code == 202, r.text
        return r.json()

    def status(self, work_id):
        return self.get("/v1/work/%s" % work_id).json()["status"]


@pytest.fixture
def headend(tmp_path):
    return Headend(tmp_path)


@pytest.fixture
def client(headend):
    with TestClient(headend.app) as c:
        yield c


@pytest.fixture
def op(client, headend):
    return Api(client, headend.op_token)


@pytest.fixture
def admin(client, headend):
    """Registers devices (POST /v1/devices needs an admin or utility token)."""
    return Api(client, headend.admin_token)


def free_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class Server:
    """A real uvicorn server for an app, in a thread, on a free 127.0.0.1 port."""

    def __init__(self, app):
        self.sock = free_socket()
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def server(headend):
    with Server(headend.app) as s:
        yield s


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


class GuardedServer:
    """The head-end as `backchannel serve` runs it (server.make_config), in a thread."""

    def __init__(self, app, **kw):
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        config = headend_server.make_config(app, log_level="warning",
                                            timeout_graceful_shutdown=1, **kw)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
