"""The audit log against someone who wants their actions unseen (issue 12, "an append-only
audit log of ops, config changes, registrations and token changes"): every action through
the API, the dashboard and the database CLI is in it with who, role, what, target, when and
outcome, refusals included; it cannot be read by an operator nor rewritten, even with the
database connection in hand; and a utility config change reaches the head-end as a notice."""

import json
import sqlite3
import time

import pytest
import store_harness
from fastapi.testclient import TestClient
from headend_harness import Headend

from headend import audit, groups
from headend.cli import main

# the append-only guard raises from either store
DATABASE_ERRORS = (sqlite3.DatabaseError,) + store_harness.driver_errors()

pytestmark = pytest.mark.unit


@pytest.fixture
def he(tmp_path):
    return Headend(tmp_path)


@pytest.fixture
def client(he):
    with TestClient(he.app) as c:
        yield c


def auth(token):
    return {"Authorization": "Bearer %s" % token}


def log(he, **kw):
    return audit.listing(he.hub.db, 1000, **kw)


def test_operator_actions_and_refusals_are_logged_with_who_what_target_outcome(he, client):
    he.meter(client, "meter-a")
    t0 = time.time()
    r = client.post("/v1/devices/meter-a/work", headers=auth(he.op_token),
                    json={"op": "relay", "args": {"state": "open"}})
    assert r.status_code == 202
    r = client.post("/v1/devices/meter-a/work", headers=auth(he.op_token),
                    json={"op": "reset_energy"})
    assert r.status_code == 403
    client.delete("/v1/work/%s" % client.post(
        "/v1/devices/meter-a/work", headers=auth(he.op_token), json={"op": "read"}).json()["id"],
        headers=auth(he.op_token))
    rows = log(he, target="device:meter-a")
    sent = [r for r in rows if r["action"] == "add_work"]
    assert [(r["who"], r["role"], r["outcome"]) for r in reversed(sent)] == [
        ("alice", "operator", "ok"),
        ("alice", "operator", "403: reset_energy requires a utility token"),
        ("alice", "operator", "ok")]
    assert json.loads(sent[-1]["detail"]) == {"op": "relay", "args": {"state": "open"}}
    assert all(t0 - 1 <= r["at"] <= time.time() for r in rows)
    assert [r["action"] for r in log(he) if r["target"] and r["target"].startswith("work:")] \
        == ["cancel_work"]


def test_registrations_groups_and_token_changes_are_logged(he, client, capsys):
    r = client.post("/v1/devices", headers=auth(he.admin_token), json={"id": "meter-b"})
    assert r.status_code == 201
    client.post("/v1/groups", headers=auth(he.op_token),
                json={"name": "north", "members": ["meter-b"]})
    made = client.post("/v1/tokens", headers=auth(he.admin_token),
                       json={"name": "crew", "role": "operator", "groups": ["north"]}).json()
    client.delete("/v1/tokens/%s" % made["id"], headers=auth(he.admin_token))
    with pytest.raises(SystemExit):
        main(["add-device", "meter-c", "--db", he.settings.db])
    with pytest.raises(SystemExit):
        main(["token", "revoke", "crew", "--db", he.settings.db])
    capsys.readouterr()
    got = [(r["who"], r["action"], r["target"]) for r in reversed(log(he))]
    assert ("ada", "add_device", "device:meter-b") in got
    assert ("alice", "create_group", "group:north") in got
    assert ("ada", "create_token", "token:%s" % made["id"]) in got
    assert ("ada", "revoke_token", "token:%s" % made["id"]) in got
    cli_rows = [r for r in log(he) if r["who"].startswith("cli:")]
    assert {r["action"] for r in cli_rows} == {"add_device", "revoke_token"}
    assert all(r["role"] == "console" for r in cli_rows)


def test_a_token_without_rights_cannot_read_the_log(he, client):
    he.meter(client, "meter-a")
    groups.create(he.hub.db, "g", ["meter-a"])
    from headend import tokens
    scoped_admin = tokens.create(he.hub.db, "g-admin", "admin", groups=["g"])
    for tok in (he.op_token, scoped_admin):
        r = client.get("/v1/audit", headers=auth(tok))
        assert r.status_code == 403 and "audit log" in r.json()["error"]
    assert client.get("/v1/audit", headers=auth("x" * 32)).status_code == 401
    for tok in (he.admin_token, he.util_token):
        assert client.get("/v1/audit", headers=auth(tok)).status_code == 200


def test_the_log_cannot_be_rewritten_even_from_inside_the_head_end(he, client):
    he.meter(client, "meter-a")
    client.post("/v1/devices/meter-a/work", headers=auth(he.op_token),
                json={"op": "relay", "args": {"state": "open"}})
    before = log(he)
    assert before
    for sql in ("UPDATE audit SET who = 'nobody'", "DELETE FROM audit",
                "UPDATE audit SET outcome = 'ok' WHERE id = %d" % before[0]["id"]):
        with pytest.raises(DATABASE_ERRORS, match="append-only"):
            he.hub.db.run(sql)
    assert log(he) == before


def test_unauthenticated_writes_do_not_fill_the_log(he, client):
    he.meter(client, "meter-a")
    n = len(log(he))
    for _ in range(50):
        client.post("/v1/devices/meter-a/work", headers=auth("guess-%032d" % _),
                    json={"op": "relay", "args": {"state": "open"}})
        client.post("/v1/devices/meter-a/work", json={"op": "read"})
    assert len(log(he)) == n and he.count("work") == 0


def test_dashboard_sends_are_logged_as_the_token_behind_the_session(he, client):
    he.meter(client, "meter-a")
    page = client.get("/ui/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    client.post("/ui/login", data={"token": he.op_token, "csrf": csrf}, follow_redirects=False)
    page = client.get("/ui/meters/meter-a")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    r = client.post("/ui/meters/meter-a/work", data={"csrf": csrf, "op": "read", "args": "{}"},
                    follow_redirects=False)
    assert r.status_code == 303
    row = log(he, target="device:meter-a")[0]
    assert (row["who"], row["role"], row["outcome"]) == ("alice", "operator", "ok")
    assert json.loads(row["detail"])["op"] == "read"


def test_a_utility_config_change_is_recorded_as_a_notice_on_the_meter(tmp_path):
    """The firmware side: a calibration change (class utility) leaves a notice with who
    changed which key from what to what; an operational one does not."""
    import config
    from app import App

    from boards.sim_board import DEFAULT_SCENARIO, SimBoard
    app = App(SimBoard(DEFAULT_SCENARIO), config.validate({"device_id": "m"}), str(tmp_path),
              realtime=False)
    app.change_config({"v_cal": 1.02, "report_s": 5}, "utility")
    app.change_config({"dip_pct": 85.0}, "operator")
    app.change_config({"v_cal": 1.02}, "utility")            # no change: nothing to record
    notices = [i["body"] for i in app.outbox.peek(1000, 10**6) if i["kind"] == "notice"
               and i["body"].get("what") == "utility config changed"]
    assert notices == [{"what": "utility config changed", "count": 1, "by": "utility",
                        "changes": {"v_cal": [1.0, 1.02]}}]


def test_a_nul_in_a_refused_request_is_logged_not_a_server_error(he, client):
    """The long fuzz run's OpenAPI pass on PostgreSQL (2026-12-07): a refusal whose error
    echoed a NUL from the path made the audit row unwritable there (PostgreSQL text cannot
    hold NUL), after the answer had started. The row is written with the NUL spelled out."""
    he.meter(client, "meter-a")
    r = client.post("/v1/devices/meter%00a/work", headers=auth(he.op_token),
                    json={"op": "read"})
    assert 400 <= r.status_code < 500 and "error" in r.json()
    r = client.post("/v1/groups", headers=auth(he.op_token),
                    json={"name": "n\x00orth", "members": ["meter-a"]})
    assert 400 <= r.status_code < 500 and "error" in r.json()
    rows = [r for r in log(he) if r["who"] == "alice"]
    assert rows and not any("\x00" in str(v) for r in rows for v in r.values())
    assert any("meter\\x00a" in (r["target"] or "") for r in rows)
