"""The head-end renews each meter's tariff horizon before it ends (tariff_renew.py): once,
as the utility token that set it, again when a renewal expires, and never twice when two
ticks run at once (a new leader's first sweep beside the old one's last, on PostgreSQL two
transactions that both read the expired renewal)."""

import datetime as dt
import json
import threading

import pytest
from fastapi.testclient import TestClient
from headend_harness import Api, Headend

from headend import tariff, tariff_renew

pytestmark = pytest.mark.unit

SPEC = {"id": "tou-1", "timezone": "Europe/Paris", "rates": ["peak", "offpeak"],
        "seasons": [{"name": "all", "from": "01-01", "to": "12-31",
                     "week": {"mon-sun": [["00:00", "offpeak"], ["07:00", "peak"],
                                          ["22:00", "offpeak"]]}}]}
START = int(dt.datetime(2027, 1, 4, tzinfo=dt.UTC).timestamp())
UNTIL = START + 31 * 86400


@pytest.fixture
def quiet(tmp_path):
    # the sweep renews at the wall clock's time: here only the test's ticks, at its own times
    return Headend(tmp_path, sweep_interval=3600)


@pytest.fixture
def client(quiet):
    with TestClient(quiet.app) as c:
        yield c


def set_tariff(client, he):
    he.meter(client, "m1")
    r = Api(client, he.util_token).post("/v1/devices/m1/tariff",
                                        json={"tariff": SPEC, "start": START, "days": 31})
    assert r.status_code == 202, r.text
    assert he.hub.db.one("SELECT until FROM tariffs WHERE device = 'm1'")["until"] == UNTIL
    return he.hub.db.one("SELECT work FROM tariffs WHERE device = 'm1'")["work"]


def tick(hub, now):
    with hub.tx():
        return tariff_renew.tick(hub, now)


def finish(hub, num, status):
    with hub.tx() as db:
        db.run("UPDATE work SET status = ? WHERE num = ?", status, num)


def renewals(hub):
    audit = hub.db.all("SELECT outcome FROM audit WHERE action = 'renew:add_work'")
    return [a["outcome"] for a in audit]


def test_the_head_end_renews_a_tariff_horizon_before_it_ends(client, quiet):
    hub = quiet.hub
    first = set_tariff(client, quiet)
    assert tick(hub, UNTIL - 3600) == []          # the tariff itself is still on its way
    finish(hub, first, "done")
    assert tick(hub, UNTIL - 8 * 86400) == []     # more than 7 days left: not yet
    now = UNTIL - 6 * 86400
    (renewal,) = tick(hub, now)
    row = hub.db.one("SELECT * FROM work WHERE num = ?", renewal)
    assert row["op"] == "tariff" and row["role"] == "utility" and row["origin"] == "operator:uma"
    # the same tariff (id and rates: the meter keeps its per-rate registers) from now on
    assert json.loads(row["args"]) == tariff.compile_tariff(SPEC, now, 31)
    assert hub.db.one("SELECT until FROM tariffs WHERE device = 'm1'")["until"] == \
        now + 31 * 86400
    assert tick(hub, now + 60) == []              # queued: not twice
    finish(hub, renewal, "expired")               # never delivered: queued again
    (again,) = tick(hub, now + 120)
    finish(hub, again, "done")
    assert tick(hub, now + 120) == []
    assert renewals(hub) == ["ok", "ok"]


def test_two_ticks_at_once_queue_one_renewal(client, quiet):
    hub = quiet.hub
    first = set_tariff(client, quiet)
    finish(hub, first, "expired")                 # due at once, whatever the time
    got, inside, release = {}, threading.Event(), threading.Event()

    def leader(name, wait_for=None):
        if wait_for:
            wait_for.wait(10)
        with hub.tx():
            got[name] = tariff_renew.tick(hub, START)
            inside.set()
            release.wait(10)                      # still uncommitted while the other ticks

    a = threading.Thread(target=leader, args=("a",))
    b = threading.Thread(target=leader, args=("b", inside))
    a.start()
    b.start()
    b.join(1.0)                                   # b waits for a's transaction
    release.set()
    a.join(10)
    b.join(10)
    assert sorted(len(v) for v in got.values()) == [0, 1], got
    assert renewals(hub) == ["ok"]
