"""`backchannel peer-rule list|add|remove` against a real server: what the utility types,
and one-line refusals for an operator and for a rule that would let peers open relays."""

import pytest
from headend_harness import headend, server  # noqa: F401

from headend import devices, groups
from headend.cli import main

pytestmark = pytest.mark.system


@pytest.fixture
def cli(server, headend, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("BACKCHANNEL_URL", server.url)
    monkeypatch.setenv("COLUMNS", "200")
    for m in ("a1", "b1"):
        devices.create(headend.hub.db, m, poll=30)
    groups.create(headend.hub.db, "site-a", ["a1"])
    groups.create(headend.hub.db, "site-b", ["b1"])

    def run(token, *argv):
        monkeypatch.setenv("BACKCHANNEL_TOKEN", token)
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        out, err = capsys.readouterr()
        return e.value.code, out, err
    return run


def test_the_utility_manages_peer_rules_from_the_cli(cli, headend):  # noqa: F811
    util, op = headend.util_token, headend.op_token
    rc, out, _ = cli(util, "peer-rule", "list")
    assert rc == 0 and out == "no peer rules: every peer send is refused\n"
    rc, out, _ = cli(util, "peer-rule", "add", "--from", "site-a", "--to", "site-b",
                     "--op", "read", "--op", "get_events")
    assert rc == 0 and out == "peer rule 1: site-a -> site-b: read,get_events\n"
    rc, out, _ = cli(util, "peer-rule", "list")
    assert rc == 0 and "site-a" in out and "read,get_events" in out and "operator:uma" in out
    rc, _, err = cli(util, "peer-rule", "add", "--from", "*", "--to", "*", "--op", "relay")
    assert rc == 1 and err == ("backchannel: error: HTTP 400: peer rule: relay is never "
                               "allowed from a peer\n")
    rc, _, err = cli(op, "peer-rule", "remove", "1")
    assert rc == 1 and err == ("backchannel: error: HTTP 403: peer rules are set by a "
                               "utility token for every meter\n")
    rc, out, _ = cli(util, "peer-rule", "remove", "1")
    assert rc == 0 and out == "removed peer rule 1: site-a -> site-b: read,get_events\n"
    rc, _, err = cli(util, "peer-rule", "remove", "1")
    assert rc == 1 and err == "backchannel: error: HTTP 404: no peer rule 1\n"
