"""Attacks with operator tokens, written as the holder of a leaked or stale token would try
them (issue 12, "Roles and tokens"; docs/security.md): a revoked or expired token, a token
confined to one group reaching for the rest of the fleet, and an operator or scoped admin
minting itself a bigger token."""

import json
import time

import pytest
from fastapi.testclient import TestClient
from headend_harness import Headend

from headend import groups, tokens
from headend.cli import main

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


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return e.value.code, out.out, out.err


def unknown_answer(client):
    r = client.get("/v1/devices", headers=auth("never-issued-token-0123456789"))
    assert r.status_code == 401
    return r.content, r.headers.get("www-authenticate")


# --- revoked and expired tokens answer exactly like unknown ones ---

def test_revoked_token_is_refused_like_an_unknown_one(he, client, tmp_path, capsys):
    stolen = tokens.create(he.hub.db, "field-laptop", "operator")
    he.meter(client, "meter-a")
    assert client.get("/v1/devices", headers=auth(stolen)).status_code == 200
    code, out, _ = run_cli(capsys, "token", "revoke", "field-laptop", "--db", he.settings.db)
    assert code == 0 and out.startswith("revoked ")
    for method, path, body in (("get", "/v1/devices", None),
                               ("post", "/v1/devices/meter-a/work", {"op": "relay",
                                                                     "args": {"state": "open"}}),
                               ("get", "/v1/tokens", None)):
        r = client.request(method.upper(), path, headers=auth(stolen), json=body)
        assert r.status_code == 401
        assert (r.content, r.headers.get("www-authenticate")) == unknown_answer(client)
    assert he.count("work") == 0


def test_revoked_token_ends_its_dashboard_session(he, client):
    stolen = tokens.create(he.hub.db, "kiosk", "operator")
    page = client.get("/ui/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    r = client.post("/ui/login", data={"token": stolen, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/ui/").status_code == 200
    r = client.delete("/v1/tokens/kiosk", headers=auth(he.admin_token))
    assert r.status_code == 200 and r.json()[0]["state"] == "revoked"
    r = client.get("/ui/", follow_redirects=False)
    assert r.status_code in (302, 303) and "/ui/login" in r.headers["location"]


def test_expired_token_is_refused_like_an_unknown_one(he, client):
    old = tokens.create(he.hub.db, "contractor", "utility", expires_in=60,
                        now=time.time() - 3600)
    fresh = tokens.create(he.hub.db, "contractor-2", "utility", expires_in=3600)
    assert client.get("/v1/devices", headers=auth(fresh)).status_code == 200
    r = client.get("/v1/devices", headers=auth(old))
    assert (r.content, r.headers.get("www-authenticate")) == unknown_answer(client)
    states = {t["name"]: t["state"] for t in tokens.listing(he.hub.db)}
    assert states["contractor"] == "expired" and states["contractor-2"] == "live"


def test_a_token_expiring_mid_session_stops_working(he, client, monkeypatch):
    tok = tokens.create(he.hub.db, "short", "operator", expires_in=5)
    assert client.get("/v1/presence", headers=auth(tok)).status_code == 200
    later = time.time() + 6
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    assert client.get("/v1/presence", headers=auth(tok)).status_code == 401


def test_tokens_are_stored_hashed_and_never_listed(he, client, capsys):
    tok = tokens.create(he.hub.db, "ops", "operator")
    dump = "\n".join(str(tuple(r)) for r in he.hub.db.all("SELECT * FROM tokens"))
    assert tok not in dump
    listing = client.get("/v1/tokens", headers=auth(he.admin_token))
    assert listing.status_code == 200 and tok not in listing.text
    code, out, _ = run_cli(capsys, "token", "list", "--db", he.settings.db)
    assert code == 0 and "ops" in out and tok not in out


# --- group scopes: the rest of the fleet does not exist for a scoped token ---

@pytest.fixture
def scoped(he, client):
    for m in ("north-1", "north-2", "south-1"):
        he.meter(client, m)
    groups.create(he.hub.db, "north", ["north-1", "north-2"])
    groups.create(he.hub.db, "south", ["south-1"])
    south_work = client.post("/v1/devices/south-1/work", headers=auth(he.op_token),
                             json={"op": "read"}).json()["id"]
    tok = tokens.create(he.hub.db, "north-crew", "operator", groups=["north"])
    return tok, south_work


def test_scoped_token_cannot_see_or_act_outside_its_groups(he, client, scoped):
    tok, south_work = scoped
    h = auth(tok)
    assert [d["id"] for d in client.get("/v1/devices", headers=h).json()] == \
        ["north-1", "north-2"]
    assert {p["device"] for p in client.get("/v1/presence", headers=h).json()} == \
        {"north-1", "north-2"}
    assert [g["name"] for g in client.get("/v1/groups", headers=h).json()] == ["north"]
    before = he.count("work")
    nonexistent = client.get("/v1/devices/nowhere-9", headers=h)
    for method, path, body in (
            ("GET", "/v1/devices/south-1", None),
            ("POST", "/v1/devices/south-1/work", {"op": "relay", "args": {"state": "open"}}),
            ("GET", "/v1/devices/south-1/readings", None),
            ("GET", "/v1/devices/south-1/readings/export", None),
            ("PATCH", "/v1/devices/south-1", {"poll": 5}),
            ("GET", "/v1/work/%s" % south_work, None),
            ("DELETE", "/v1/work/%s" % south_work, None),
            ("POST", "/v1/groups/south/work", {"op": "read"}),
            ("GET", "/v1/groups/south", None)):
        r = client.request(method, path, headers=h, json=body)
        assert r.status_code == 404, (method, path, r.text)
        if path == "/v1/devices/south-1":      # same answer as a meter that does not exist
            assert r.json()["error"].replace("south-1", "X") == \
                nonexistent.json()["error"].replace("nowhere-9", "X")
    assert he.count("work") == before
    assert client.get("/v1/work/%s" % south_work, headers=auth(he.op_token)).json()[
        "status"] == "queued"
    r = client.post("/v1/devices/north-1/work", headers=h, json={"op": "read"})
    assert r.status_code == 202


def test_scoped_token_cannot_widen_its_scope_with_a_new_group(he, client, scoped):
    tok, _ = scoped
    r = client.post("/v1/groups", headers=auth(tok),
                    json={"name": "north", "members": ["south-1"]})
    assert r.status_code in (403, 409)
    r = client.post("/v1/groups", headers=auth(tok),
                    json={"name": "grab", "members": ["north-1", "south-1"]})
    assert r.status_code == 403
    assert groups.get(he.hub.db, "grab") is None
    assert groups.get(he.hub.db, "north")["members"] == ["north-1", "north-2"]


def test_scoped_token_on_the_dashboard_sees_its_meters_only(he, client, scoped):
    tok, south_work = scoped
    csrf = client.get("/ui/login").text.split('name="csrf" value="')[1].split('"')[0]
    client.post("/ui/login", data={"token": tok, "csrf": csrf}, follow_redirects=False)
    fleet = client.get("/ui/").text
    assert "north-1" in fleet and "south-1" not in fleet
    assert client.get("/ui/meters/south-1").status_code == 404
    assert client.get("/ui/work/%s" % south_work).status_code == 404
    assert client.get("/ui/groups/south").status_code == 404
    assert "south" not in client.get("/ui/groups").text.replace("north", "")


# --- nobody mints a bigger token than an admin for every meter may ---

@pytest.mark.parametrize("who", ["op_token", "util_token"])
def test_operator_or_utility_token_cannot_mint_or_revoke_tokens(he, client, who):
    h = auth(getattr(he, who))
    r = client.post("/v1/tokens", headers=h, json={"name": "mine", "role": "admin"})
    assert r.status_code == 403
    assert client.get("/v1/tokens", headers=h).status_code == 403
    assert client.delete("/v1/tokens/ada", headers=h).status_code == 403
    assert client.get("/v1/devices", headers=auth(he.admin_token)).status_code == 200
    assert "mine" not in [t["name"] for t in tokens.listing(he.hub.db)]


def test_scoped_admin_cannot_mint_a_fleet_wide_token(he, client, scoped):
    small_admin = tokens.create(he.hub.db, "north-admin", "admin", groups=["north"])
    r = client.post("/v1/tokens", headers=auth(small_admin),
                    json={"name": "everything", "role": "utility"})
    assert r.status_code == 403
    assert "everything" not in [t["name"] for t in tokens.listing(he.hub.db)]


def test_admin_creates_a_scoped_expiring_token_that_works(he, client, scoped):
    r = client.post("/v1/tokens", headers=auth(he.admin_token),
                    json={"name": "n2", "role": "operator", "expires_in": 600,
                          "groups": ["north"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "live" and body["groups"] == ["north"] and body["expires"]
    assert [d["id"] for d in client.get("/v1/devices", headers=auth(body["token"])).json()] \
        == ["north-1", "north-2"]
    r = client.post("/v1/tokens", headers=auth(he.admin_token),
                    json={"name": "typo", "role": "operator", "groups": ["nrth"]})
    assert r.status_code == 404 and "unknown group nrth" in r.json()["error"]


def test_token_cli_usage_errors_are_one_line(tmp_path, capsys):
    db = str(tmp_path / "hub.db")
    for args in (["token", "create", "x", "--role", "operator", "--expires-in", "soon"],
                 ["token", "create", "x", "--role", "operator", "--group", "ghost"],
                 ["token", "create", "x", "--role", "operator", "--token", "short"],
                 ["token", "revoke", "nobody"]):
        code, _, err = run_cli(capsys, *args, "--db", db)
        assert code != 0 and err.count("\n") == 1 and err.startswith("backchannel: error:"), \
            (args, err)
    code, out, _ = run_cli(capsys, "token", "create", "crew", "--role", "operator",
                           "--expires-in", "12h", "--db", db)
    assert code == 0 and len(out.strip()) >= 32
    code, out, _ = run_cli(capsys, "token", "list", "--json", "--db", db)
    row = json.loads(out)[0]
    assert row["name"] == "crew" and 43000 < row["expires"] - row["created"] <= 43200
