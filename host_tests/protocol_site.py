"""A meter's firmware app (CPython, in-process) wired to a head-end in this process through
TestClient, for the protocol attack tests (test_attacks_protocol.py, test_attacks_clock.py):
an attacker on the path may replace the head-end's answer or keep every answer it saw."""

import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from headend_harness import Api, Headend

from boards.sim_board import DEFAULT_SCENARIO, SimBoard
from headend import devices
from lab import runner

Y2000, Y2040 = 946684800, 2208988800


class InProcessHttp:
    """The meter's HttpClient, carried to the head-end in this process. An attacker on the
    path may replace the answer (`answer_with`) or keep every answer it saw (`seen`)."""

    def __init__(self, client):
        self.client = client
        self.seen = []              # (status, headers, body) of every genuine answer
        self.answer_with = None

    async def connect(self):  # comms connects before building a request (httpc)
        pass

    async def request(self, method, path, body, headers, timeout=None):
        body = b"".join(body) if isinstance(body, list) else body   # comms sends pieces
        r = self.client.request(method, path, content=body, headers=headers)
        answer = (r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
        self.seen.append(answer)
        if self.answer_with is not None:
            return self.answer_with
        return answer

    def close(self):
        pass


class Site:
    def __init__(self, he, client, tmp_path):
        self.he, self.client, self.tmp = he, client, tmp_path
        self.op = Api(client, he.op_token)
        self.util = Api(client, he.util_token)

    def meter(self, device="meter-a", clock_offset=0, state=""):
        from app import App

        key = devices.get(self.he.hub.db, device)
        if key is None:
            devices.create(self.he.hub.db, device, poll=self.he.settings.default_poll)
            key = devices.get(self.he.hub.db, device)
        cfg = {"device_id": device, "device_key": key["key"], "server_url": "http://testserver",
               "report_s": 1}
        import config

        state = self.tmp / ("state-%s%s" % (device, state))
        state.mkdir(exist_ok=True)
        app = App(SimBoard(DEFAULT_SCENARIO), config.validate(cfg), str(state), realtime=False)
        app.comms.http = InProcessHttp(self.client)
        app.comms.wait_s = 0
        if clock_offset:
            skew(app.clock, clock_offset)
        return app


def skew(clock, seconds):
    """Move the meter's clock (as a board clock that far off would be)."""
    if hasattr(clock, "offset_ms"):
        clock.offset_ms += int(seconds * 1000)
    else:
        clock.offset += seconds


def exchange_once(app):
    return asyncio.run(app.comms.exchange())


def delivered(app):
    """The work items in the genuine answers the meter's path saw, by op."""
    out = []
    for status, _, data in app.comms.http.seen:
        if status == 200:
            out += json.loads(data)["work"]
    return out


def mqtt_link(app):
    """The firmware's MQTT exchange (mqtt_comms.MqttComms) on the meter's own outbox, inbox,
    dispatcher and clock; its session never connects."""
    c = app.comms
    MqttComms = runner.import_firmware("mqtt_comms").MqttComms  # noqa: N806 - a class
    return MqttComms(c.device_id, c.key, "127.0.0.1", 1, c.outbox, c.inbox, c.dispatcher,
                     c.clock)


@pytest.fixture
def site(tmp_path):
    he = Headend(tmp_path)
    with TestClient(he.app) as client:
        yield Site(he, client, tmp_path)
