"""A real SOAP client (zeep) loads the WSDL from a running head-end (uvicorn on a port) and
completes exchanges, including a reversal round trip: the answer holds a SOAP request for
the meter (its work), and the next request carries the SOAP response to it (`done` and the
result), after which the work is done at the head-end. Every body is signed over the raw
bytes zeep sends, and every answer's signature is checked over the raw bytes received."""

import json
import secrets
import time

import pytest
from headend_fake_meter import hmac_hex
from headend_harness import Api, headend, server  # noqa: F401
from lxml import etree
from zeep import Client
from zeep.transports import Transport

from headend import devices, xml_form
from lab import runner

pytestmark = pytest.mark.unit

NS = "urn:backchannel:exchange:2"
SOAP = "http://www.w3.org/2003/05/soap-envelope"
envelope = runner.import_firmware("envelope")


class SigningTransport(Transport):
    """zeep's transport, adding X-BC-Signature over the exact bytes it posts."""

    def __init__(self, key):
        super().__init__(timeout=10, operation_timeout=30)
        self.key = key
        self.sent = self.received = None

    def post(self, address, message, headers):
        headers = dict(headers, **{"X-BC-Signature": hmac_hex(self.key, message)})
        self.sent = message
        response = super().post(address, message, headers)
        self.received = response
        assert response.status_code != 200 or envelope.same(
            response.headers["x-bc-signature"], hmac_hex(self.key, response.content))
        return response


def num(value):
    return {"_value_1": value, "t": "num"}


def el(name, text=None, **attrs):
    out = etree.Element("{%s}%s" % (NS, name), **attrs)
    out.text = text
    return out


def reversed_response(done, items):
    """The meter's SOAP response to the head-end's reversed request, as an lxml element."""
    env = etree.Element("{%s}Envelope" % SOAP, nsmap={"env": SOAP})
    answer = etree.SubElement(etree.SubElement(env, "{%s}Body" % SOAP),
                              "{%s}executeResponse" % NS, nsmap={None: NS})
    text = "".join(xml_form.document("x", {"done": done, "items": items}, xmlns=False))
    for part in etree.fromstring(text.replace("<x>", '<x xmlns="%s">' % NS)):
        answer.append(part)
    return env


@pytest.fixture
def meter(headend):  # noqa: F811
    return devices.create(headend.hub.db, "soap-1", poll=headend.settings.default_poll)


def test_zeep_loads_the_wsdl_and_completes_a_reversal_round_trip(headend, server, meter):  # noqa: F811
    transport = SigningTransport(meter)
    client = Client(server.url + "/schemas/exchange.wsdl", transport=transport)
    assert client.service._binding_options["address"] == server.url + "/v1/exchange"
    epoch = secrets.token_hex(8)

    def call(**kw):
        return client.service.exchange(
            v=num(2), device="soap-1", epoch=epoch, ts=num(int(time.time())),
            nonce=secrets.token_hex(8), wait=num(0), room=num(4), **kw)

    reading = {"seq": num(1), "kind": "reading",
               "body": {"_value_1": [el("vrms", "230.1", t="num"), el("p", "918.0", t="num")]}}
    first = call(items={"t": "arr", "e": [reading]})
    assert first.ack["_value_1"] == 1 and first.work.e == [] and first.reversed is None

    with httpx_client(server.url, headend) as op:
        wid = op.work("soap-1", "get_events", {"limit": 5})["id"]
        second = call()
        # the reversal: the work came as a SOAP request addressed to the meter
        assert second.work is None and second.reversed is not None
        call_env = second.reversed._value_1
        assert call_env.tag == "{%s}Envelope" % SOAP
        to = call_env.find(".//{http://www.w3.org/2005/08/addressing}To")
        assert to.text == "urn:backchannel:device:soap-1"
        execute = call_env.find("{%s}Body/{%s}execute" % (SOAP, NS))
        [work] = xml_form.value_of(execute)["work"]
        assert work["id"] == wid and json.loads(work["args"]) == {"limit": 5}
        assert envelope.work_ok(bytes.fromhex(meter), work)
        assert op.status(wid) == "delivered"

        # the meter's next request carries the SOAP response to it
        third = call(reversed={"_value_1": reversed_response([wid], [
            {"seq": 2, "kind": "result", "body": {"work": wid, "status": "done", "body": {}}}])})
        assert b"<reversed>" in transport.sent or b":reversed" in transport.sent
        assert third.ack["_value_1"] == 2 and third.reversed is None
        assert op.status(wid) == "done"
        assert headend.count("items", "soap-1") == 2


def test_zeep_sees_a_refusal_as_a_soap_fault(headend, server, meter):  # noqa: F811
    from zeep.exceptions import Fault

    client = Client(server.url + "/schemas/exchange.wsdl", transport=SigningTransport("00" * 32))
    with pytest.raises(Fault) as caught:
        client.service.exchange(v=num(2), device="soap-1", epoch=secrets.token_hex(8),
                                ts=num(int(time.time())), nonce=secrets.token_hex(8),
                                wait=num(0), room=num(4))
    assert caught.value.message == "unknown device or bad signature"
    assert headend.count("nonces") == 0


def httpx_client(url, headend):  # noqa: F811
    import contextlib

    import httpx

    @contextlib.contextmanager
    def opened():
        with httpx.Client(base_url=url, timeout=30) as http:
            yield Api(http, headend.op_token)
    return opened()
