"""The meter's clock against a network that holds answers back (issue 12, item 6; the partition
campaign found it): the real firmware (CPython, in-process) against the real head-end. The
head-end stamps `time` when it answers; an answer a middlebox held back for seconds made the
meter follow that stale time. Now the meter follows only what the answer's transit cannot
explain: the round trip less the head-end's own hold (`held_ms`, a long-poll), at most 2 s
for a prompt answer (firmware/clock.py PROMPT_MS)."""

import asyncio
import time

import config
import pytest
from app import App
from comms import transit_ms
from fastapi.testclient import TestClient
from headend_harness import Headend

from boards.sim_board import DEFAULT_SCENARIO, SimBoard
from headend import devices

pytestmark = pytest.mark.unit


class HeldBackHttp:
    """The meter's HTTP client, carried to the in-process head-end through a middlebox that
    holds every answer back `hold_s` seconds before passing it on."""

    def __init__(self, client, hold_s=0.0):
        self.client, self.hold_s = client, hold_s
        self.bodies = []

    async def connect(self):  # comms connects before building a request (httpc)
        pass

    async def request(self, method, path, body, headers, timeout=None):
        body = b"".join(body) if isinstance(body, list) else body   # comms sends pieces
        r = self.client.request(method, path, content=body, headers=headers)
        await asyncio.sleep(self.hold_s)
        self.bodies.append(r.json())
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content

    def close(self):
        pass


@pytest.fixture
def headend(tmp_path):
    he = Headend(tmp_path)
    with TestClient(he.app) as client:
        yield he, client


def meter(he, client, tmp_path, hold_s=0.0, skew_s=0, wait_s=0):
    key = devices.create(he.hub.db, "meter-a")
    cfg = {"device_id": "meter-a", "device_key": key, "server_url": "http://testserver",
           "report_s": 10}
    state = tmp_path / "state"
    state.mkdir()
    app = App(SimBoard(DEFAULT_SCENARIO), config.validate(cfg), str(state), realtime=False)
    app.comms.http = HeldBackHttp(client, hold_s)
    app.comms.wait_s = wait_s
    app.clock.offset_ms += skew_s * 1000
    return app


def error_ms(app):
    return app.clock.now_ms() - int(time.time() * 1000)


def exchange_once(app):
    return asyncio.run(app.comms.exchange())


def test_an_answer_held_back_3_s_does_not_set_the_clock_back(headend, tmp_path):
    he, client = headend
    app = meter(he, client, tmp_path, hold_s=3.0)
    assert abs(error_ms(app)) < 200
    exchange_once(app)
    assert app.comms.exchanges == 1
    assert abs(error_ms(app)) < 500, "the meter followed a time 3 s stale"


def test_a_prompt_answer_still_corrects_a_clock_10_s_off(headend, tmp_path):
    he, client = headend
    app = meter(he, client, tmp_path, skew_s=10)
    exchange_once(app)
    assert abs(error_ms(app)) < 500


def test_a_long_poll_hold_is_not_taken_for_a_slow_network(headend, tmp_path):
    """A 3 s long-poll with no work: the answer is prompt once the hold is taken off."""
    he, client = headend
    app = meter(he, client, tmp_path, skew_s=10, wait_s=3)
    t0 = time.monotonic()
    exchange_once(app)
    assert time.monotonic() - t0 >= 2.5, "the head-end did not hold the long-poll"
    body = app.comms.http.bodies[-1]
    assert isinstance(body["held_ms"], int) and body["held_ms"] >= 2500
    assert abs(error_ms(app)) < 500


def test_a_slow_answer_still_corrects_what_the_delay_cannot_explain(headend, tmp_path):
    he, client = headend
    app = meter(he, client, tmp_path, hold_s=3.0, skew_s=100)
    exchange_once(app)
    assert -3500 < error_ms(app) < 500       # followed, stale by at most the hold


@pytest.mark.parametrize("held, rtt, transit", [
    (None, 2500, 2500), (2400, 2500, 100), (3000, 2500, 2500), (-5, 2500, 2500),
    (True, 2500, 2500), ("2400", 2500, 2500), (2400.0, 2500, 2500)])
def test_held_ms_never_makes_a_transit_shorter_than_it_could_be(held, rtt, transit):
    resp = {} if held is None else {"held_ms": held}
    assert transit_ms(resp, rtt) == transit
