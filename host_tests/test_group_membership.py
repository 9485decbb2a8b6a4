"""Groups can be listed, grown, shrunk and deleted (issue 13, item 8: "Groups have no
add-member, list or delete"), over the API and the CLI, and a deleted group's name is free
again without its old commands."""

import pytest
from headend_harness import Server, client, headend, op  # noqa: F401

from headend.cli import main

pytestmark = pytest.mark.unit


def _meters(headend, client, *names):
    return [headend.meter(client, n) for n in names]


def test_add_remove_list_delete_over_the_api(client, headend, op):
    _meters(headend, client, "m1", "m2", "m3")
    assert op.post("/v1/groups", json={"name": "g", "members": ["m1"]}).status_code == 201
    r = op.post("/v1/groups/g/members", json={"members": ["m3", "m2", "m1"]})
    assert r.status_code == 200 and r.json()["members"] == ["m1", "m2", "m3"], r.text
    gid = op.post("/v1/groups/g/work", json={"op": "read"}).json()["gid"]
    assert sorted(op.get("/v1/groups/g/work/%d" % gid).json()["outcomes"]) == ["m1", "m2", "m3"]
    r = op.delete("/v1/groups/g/members/m2")
    assert r.status_code == 200 and r.json()["members"] == ["m1", "m3"]
    # a command already sent keeps the removed member's outcome; a new one leaves it out
    assert "m2" in op.get("/v1/groups/g/work/%d" % gid).json()["outcomes"]
    second = op.post("/v1/groups/g/work", json={"op": "read"}).json()
    assert sorted(second["work"]) == ["m1", "m3"]
    assert [g["name"] for g in op.get("/v1/groups").json()] == ["g"]
    # open commands hold the group
    r = op.delete("/v1/groups/g")
    assert r.status_code == 409 and "open commands" in r.json()["error"], r.text
    for n in (gid, second["gid"]):
        assert op.delete("/v1/groups/g/work/%d" % n).status_code == 200
    r = op.delete("/v1/groups/g")
    assert r.status_code == 200 and r.json()["members"] == ["m1", "m3"], r.text
    assert op.get("/v1/groups").json() == []
    assert op.get("/v1/groups/g").status_code == 404
    # the name is free again, and the old commands are not the new group's
    assert op.post("/v1/groups", json={"name": "g", "members": ["m2"]}).status_code == 201
    assert op.get("/v1/groups/g/work/%d" % gid).status_code == 404
    # each member's work stays in its own history, no longer part of a group command
    rows = headend.hub.db.all("SELECT device, gid, status FROM work ORDER BY num")
    assert [(r["device"], r["gid"], r["status"]) for r in rows] == \
        [(m, None, "cancelled") for m in ("m1", "m2", "m3", "m1", "m3")]


def test_membership_errors(client, headend, op):
    _meters(headend, client, "m1", "m2")
    op.post("/v1/groups", json={"name": "g", "members": ["m1"]})
    assert op.post("/v1/groups/nope/members", json={"members": ["m1"]}).status_code == 404
    r = op.post("/v1/groups/g/members", json={"members": ["m2", "ghost"]})
    assert r.status_code == 404 and "ghost" in r.json()["error"]
    assert op.get("/v1/groups/g").json()["members"] == ["m1"]      # all or nothing
    assert op.post("/v1/groups/g/members", json={"members": []}).status_code == 422
    assert op.delete("/v1/groups/g/members/m2").status_code == 404
    assert op.delete("/v1/groups/nope").status_code == 404
    # the last member may go; an empty group cannot be sent work
    assert op.delete("/v1/groups/g/members/m1").json()["members"] == []
    r = op.post("/v1/groups/g/work", json={"op": "read"})
    assert r.status_code == 409 and "no members" in r.json()["error"]
    assert headend.count("work") == 0


def test_group_commands_in_the_cli(headend, capsys, monkeypatch):
    with Server(headend.app) as s:
        monkeypatch.setenv("BACKCHANNEL_URL", s.url)
        monkeypatch.setenv("BACKCHANNEL_TOKEN", headend.op_token)
        monkeypatch.setenv("COLUMNS", "200")

        def cli(*argv):
            with pytest.raises(SystemExit) as e:
                main(list(argv))
            out, err = capsys.readouterr()
            return e.value.code, out, err
        for n in ("m1", "m2", "m3"):
            headend.meter(None, n)
        assert cli("group", "create", "feeder-7", "m1")[:2] == (0, "feeder-7: m1\n")
        assert cli("group", "add-member", "feeder-7", "m2", "m3")[:2] == \
            (0, "feeder-7: m1 m2 m3\n")
        rc, out, _ = cli("group", "list")
        assert rc == 0 and "feeder-7" in out and "m1 m2 m3" in out
        rc, out, _ = cli("group", "list", "--json")
        assert rc == 0 and '"members"' in out and '"m3"' in out
        assert cli("group", "remove-member", "feeder-7", "m2")[:2] == (0, "feeder-7: m1 m3\n")
        rc, out, err = cli("group", "remove-member", "feeder-7", "m1", "m2")
        assert rc == 1 and err == "backchannel: error: not in group feeder-7: m2\n"
        assert headend.hub.db.one("SELECT COUNT(*) AS n FROM group_members")["n"] == 2
        rc, out, err = cli("group", "add-member", "feeder-7", "ghost")
        assert rc == 1 and err == "backchannel: error: HTTP 404: unknown device(s): ghost\n"
        gid = cli("group", "send", "feeder-7", "read")[1].strip()
        rc, out, err = cli("group", "delete", "feeder-7")
        assert rc == 1 and "open commands (%s)" % gid in err and err.count("\n") == 1
        headend.hub.db.run("UPDATE work SET status = 'done'")
        assert cli("group", "delete", "feeder-7")[:2] == \
            (0, "deleted group feeder-7 (2 members)\n")
        rc, out, err = cli("group", "delete", "feeder-7")
        assert rc == 1 and err == "backchannel: error: HTTP 404: unknown group feeder-7\n"
        rc, out, _ = cli("group", "list")
        assert rc == 0 and "feeder-7" not in out


def test_a_token_confined_to_groups_cannot_change_them(client, headend, op):
    from headend import tokens
    _meters(headend, client, "north-1", "south-1")
    op.post("/v1/groups", json={"name": "north", "members": ["north-1"]})
    op.post("/v1/groups", json={"name": "south", "members": ["south-1"]})
    h = {"Authorization": "Bearer %s" % tokens.create(headend.hub.db, "crew", "operator",
                                                      groups=["north"])}
    # its own group: growing it would reach meters outside its scope
    for method, path, body in (("POST", "/v1/groups/north/members", {"members": ["south-1"]}),
                               ("DELETE", "/v1/groups/north/members/north-1", None),
                               ("DELETE", "/v1/groups/north", None)):
        r = client.request(method, path, headers=h, json=body)
        assert r.status_code == 403, (method, path, r.text)
    # a group outside its scope does not exist for it
    for method, path, body in (("POST", "/v1/groups/south/members", {"members": ["north-1"]}),
                               ("DELETE", "/v1/groups/south/members/south-1", None),
                               ("DELETE", "/v1/groups/south", None)):
        r = client.request(method, path, headers=h, json=body)
        assert r.status_code == 404, (method, path, r.text)
    assert op.get("/v1/groups/north").json()["members"] == ["north-1"]
    assert op.get("/v1/groups/south").json()["members"] == ["south-1"]


class _Counting:
    """The store's statements, counted: run, one, all and many (each one round trip to
    PostgreSQL; many is psycopg's pipelined executemany)."""

    def __init__(self, db, monkeypatch):
        self.n = 0
        for name in ("run", "one", "all", "many"):
            monkeypatch.setattr(db, name, self._wrap(getattr(db, name)))

    def _wrap(self, fn):
        def counted(*args, **kw):
            self.n += 1
            return fn(*args, **kw)
        return counted


def test_a_large_group_is_checked_and_stored_in_a_few_statements(client, headend, op,
                                                                 monkeypatch):
    """A group of 1,201 members: one lookup and one insert per member made 2,400 round trips
    on PostgreSQL, seconds of a worker's event loop (its health checks failed and the proxy
    answered 503 for it, issue 19). Now the members are checked in chunks and stored in one
    executemany; an unknown member anywhere is still named and nothing is stored."""
    from headend import devices
    db = headend.hub.db
    names = ["d%04d" % i for i in range(1201)]
    with db.tx():
        for n in names:
            devices.create(db, n, poll=headend.settings.default_poll)
    counted = _Counting(db, monkeypatch)
    r = op.post("/v1/groups", json={"name": "big", "members": names[:700] + ["ghost"] +
                                    names[700:]})
    assert r.status_code == 404 and "ghost" in r.json()["error"], r.text
    assert op.get("/v1/groups/big").status_code == 404          # all or nothing
    counted.n = 0
    r = op.post("/v1/groups", json={"name": "big", "members": list(reversed(names))})
    assert r.status_code == 201, r.text
    assert r.json()["members"] == names
    assert counted.n < 30, "%d statements for a group of 1,201" % counted.n
    counted.n = 0
    r = op.post("/v1/groups", json={"name": "half", "members": names[:600]})
    r = op.post("/v1/groups/half/members", json={"members": names[300:] + names[:10]})
    assert r.status_code == 200 and r.json()["members"] == names, r.text
    assert counted.n < 60, "%d statements for two requests" % counted.n
