"""Load shedding on the meter (firmware/shedding.py): the relay opens on a demand threshold,
a named meter alarm or the utility's price signal, restores after a random delay within
the window and never before the minimum off time, does not shed again within the minimum on
time, and a utility override wins until it expires; every action is a `shed` item with its
cause. The ops `price` and `shed` are utility-only, on the meter and at the head-end."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

RULES = runner.ROOT / "host_tests" / "mp_scripts" / "shed_rules.py"


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request):
    if not runner.available(request.param):
        pytest.skip(runner.board_missing_reason())
    return [json.loads(line) for line in runner.run(request.param, RULES).splitlines()]


def test_demand_sheds_and_restores_after_a_random_delay(out):
    actions, relay = out[0]
    # cleared at 3 s; the draw is 15 s of the 30 s window (after min_off 10 s): restore at 18
    assert actions == [[0, "open", "demand 6000 W >= 5000 W"], [18, "restore", "cause cleared"]]
    assert relay == ["open", "closed"]


def test_minimum_on_time_holds_the_load_on(out):
    actions, _ = out[1]
    # opened at 0, restored at 10 (min_off), demand back at 17: held on until 30 (min_on 20)
    assert [a[:2] for a in actions] == [[0, "open"], [10, "restore"], [30, "open"]]


def test_a_named_alarm_sheds(out):
    actions, _ = out[2]
    # load_95 on at 2, off at 4; min_off 2 s from 2, no window: restored at once
    assert actions == [[2, "open", "alarm load_95"], [4, "restore", "cause cleared"]]


def test_price_signal_and_override(out):
    actions, relay = out[3]
    assert actions == [[1, "open", "price 0.35 >= 0.3"],
                       [4, "restore", "cause cleared"],          # the price expired
                       [6, "open", "utility override"],
                       [9, "override_end", "override expired"],
                       [9, "restore", "cause cleared"]]
    assert relay == ["open", "closed", "open", "closed"]


def test_defaults_never_shed(out):
    assert out[4] == [[], []]


def test_a_tariff_rate_sheds_while_in_force(out):
    actions, relay = out[5]
    assert actions == [[2, "open", "rate peak"], [5, "restore", "cause cleared"]]
    assert relay == ["open", "closed"]


def test_price_and_shed_are_utility_only_at_the_head_end(tmp_path):
    from fastapi.testclient import TestClient
    from headend_harness import Api, Headend

    he = Headend(tmp_path)
    with TestClient(he.app) as client:
        he.meter(client, "m1")
        op, util = Api(client, he.op_token), Api(client, he.util_token)
        for op_name, args in (("price", {"price": 0.4}), ("shed", {"state": "open"})):
            r = op.post("/v1/devices/m1/work", json={"op": op_name, "args": args})
            assert r.status_code == 403 and "utility" in r.json()["error"]
            r = util.post("/v1/devices/m1/work", json={"op": op_name, "args": args})
            assert r.status_code == 202, r.text
