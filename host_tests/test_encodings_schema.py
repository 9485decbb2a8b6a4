"""The XML form validates against the published XSD (lxml): the meter's requests with every
item kind (written by firmware/enc_xml.py), the head-end's answers with work, its time
refusal, the SOAP form's inner documents (request, response, the reversed execute and
executeResponse) and the WBXML form decoded. A document that breaks a rule fails it, and
the head-end serves the XSD and WSDL at their documented URLs."""

import time

import pytest
from headend_fake_meter import hmac_hex
from headend_harness import client, headend, op  # noqa: F401
from lxml import etree

from headend import api_schemas, devices, exchange, soap, wbxml, xml_form
from lab import runner

pytestmark = pytest.mark.unit

SCHEMA = etree.XMLSchema(etree.parse(str(api_schemas.XSD)))
NS = "urn:backchannel:exchange:2"

ITEMS = [
    {"seq": 41, "kind": "reading", "body": {"t": 1763769599, "t_ms": 25, "vrms": 230.1,
                                            "demand_w": None, "thd_v": 2.5}},
    {"seq": 42, "kind": "event", "body": {"kind": "dip", "start_s": 1763769598,
                                          "start_ms": 210, "duration_ms": 110.0}},
    {"seq": 43, "kind": "result", "body": {"work": "w-00000017", "status": "done",
                                           "body": {"vrms": 230.1, "relay": "closed"}}},
    {"seq": 44, "kind": "presence", "body": {"state": "available_restricted", "note": "x"}},
    {"seq": 45, "kind": "send", "body": {"to": "meter-b", "ref": "a-7", "op": "read",
                                         "args": {}}},
    {"seq": 46, "kind": "notice", "body": {"what": "readings dropped", "count": 3}},
]
REQUEST = {"v": 2, "device": "meter-a", "epoch": "9b1e07c44d2a5f10", "ts": 1763769600,
           "nonce": "5f0c2a9e81d4b7c3", "wait": 25, "room": 4, "done": ["w-00000017"],
           "items": ITEMS}


def valid(root):
    ok = SCHEMA.validate(etree.ElementTree(root))
    return ok, str(SCHEMA.error_log)


def test_the_meters_xml_request_validates():
    raw = runner.import_firmware("enc_xml").encode(REQUEST)
    assert valid(etree.fromstring(raw)) == (True, "")


def test_the_soap_request_and_its_reversed_response_validate():
    raw = runner.import_firmware("enc_soap").encode(REQUEST)
    root = etree.fromstring(raw)
    request = root.find("{%s}Body/{%s}request" % (soap.SOAP_NS, NS))
    assert valid(request) == (True, "")
    answer = request.find("{%s}reversed/{%s}Envelope/{%s}Body/{%s}executeResponse"
                          % (NS, soap.SOAP_NS, soap.SOAP_NS, NS))
    assert valid(answer) == (True, "")


def test_the_wbxml_request_decoded_validates():
    raw = runner.import_firmware("enc_wbxml").encode(REQUEST)
    assert valid(wbxml.Reader(raw).document()) == (True, "")


def test_the_head_ends_answers_validate(client, headend, op):  # noqa: F811
    key = devices.create(headend.hub.db, "meter-a", poll=headend.settings.default_poll)
    op.work("meter-a", "get_events", {"limit": 5})
    op.work("meter-a", "read")
    for encoding, ctype in (("xml", "application/xml"), ("soap", "application/soap+xml")):
        body = dict(REQUEST, ts=int(time.time()), nonce="%016x" % len(encoding), items=[])
        raw = runner.import_firmware("enc_" + encoding).encode(body)
        r = client.post("/v1/exchange", content=raw,
                        headers={"Content-Type": ctype, "X-BC-Signature": hmac_hex(key, raw)})
        assert r.status_code == 200, r.text
        root = etree.fromstring(r.content)
        if encoding == "xml":
            assert len(root.find("{%s}work" % NS)) == 2
            assert valid(root) == (True, "")
        else:
            response = root.find("{%s}Body/{%s}response" % (soap.SOAP_NS, NS))
            assert valid(response) == (True, "")
            execute = response.find("{%s}reversed/{%s}Envelope/{%s}Body/{%s}execute"
                                    % (NS, soap.SOAP_NS, soap.SOAP_NS, NS))
            assert len(execute.find("{%s}work" % NS)) == 2
            assert valid(execute) == (True, "")


def test_the_time_refusal_validates():
    refusal = dict(exchange.bind("meter-a", "5f0c2a9e81d4b7c3"), error="ts outside the "
                   "replay window", time=1763769600.412, time_ms=1763769600412)
    assert valid(etree.fromstring(xml_form.document("response", refusal))) == (True, "")


@pytest.mark.parametrize("change", [
    ('<v t="num">2</v>', "<v>2</v>"),                       # the type attribute is required
    ("<nonce>5f0c2a9e81d4b7c3</nonce>", "<nonce>5f0c</nonce>"),
    ('<room t="num">4</room>', '<room t="num">four</room>'),
    ("<kind>reading</kind>", ""),                           # an item without its kind
    ("<device>meter-a</device>", "<device>meter-a</device><device>b</device>"),
])
def test_a_document_that_breaks_a_rule_fails(change):
    raw = runner.import_firmware("enc_xml").encode(REQUEST).decode()
    assert change[0] in raw
    ok, log = valid(etree.fromstring(raw.replace(change[0], change[1], 1)))
    assert not ok and log


def test_the_schemas_are_served_at_their_documented_urls(client):  # noqa: F811
    r = client.get("/schemas/exchange.xsd")
    assert r.status_code == 200 and r.content == api_schemas.XSD.read_bytes()
    r = client.get("/schemas/exchange.wsdl")
    assert r.status_code == 200
    wsdl = etree.fromstring(r.content)
    address = wsdl.find(".//{http://schemas.xmlsoap.org/wsdl/soap12/}address")
    assert address.get("location") == "http://testserver/v1/exchange"
