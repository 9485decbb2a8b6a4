"""Bad documents in every encoding get a 400 with the reason and store nothing (issue 17):
malformed XML, a Content-Type that does not match the body, entity expansion (billion
laughs, external entities), trees nested too deep, WBXML string-table references out of
range or repeated beyond the size limit, SOAP that is not an envelope or carries a header
that must be understood. Each body is signed with the meter's real key, as an attacker
holding a key (or a buggy meter) would send it, so only the document is at fault."""

import json
import secrets
import time

import pytest
from headend_fake_meter import hmac_hex
from headend_harness import client, headend  # noqa: F401

from headend import devices, wbxml, xml_form

pytestmark = pytest.mark.unit

NS = "urn:backchannel:exchange:2"
SOAP = "http://www.w3.org/2003/05/soap-envelope"
XML, SOAP_CT, WBXML, JSON = ("application/xml", "application/soap+xml",
                             "application/vnd.wap.wbxml", "application/json")


def fields(**extra):
    out = {"v": 2, "device": "meter-a", "epoch": "9b1e07c44d2a5f10", "ts": int(time.time()),
           "nonce": secrets.token_hex(8), "wait": 0, "room": 4,
           "items": [{"seq": 1, "kind": "reading", "body": {"vrms": 230.0}}]}
    out.update(extra)
    return out


def xml_request(**extra):
    return xml_form.document("request", fields(**extra), order=xml_form.ORDER)


def with_device(text):
    """A request whose <device> is `text` as written (an entity reference, unescaped)."""
    return xml_request().replace("<device>meter-a</device>", "<device>%s</device>" % text)


def soap(inner, header=""):
    return ('<env:Envelope xmlns:env="%s">%s<env:Body>%s</env:Body></env:Envelope>'
            % (SOAP, header, inner))


def nested(depth):
    return {"deeper": nested(depth - 1)} if depth else {"vrms": 1.0}


LAUGHS = ('<?xml version="1.0"?><!DOCTYPE request [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;'
          '&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>')
XXE = '<?xml version="1.0"?><!DOCTYPE request [<!ENTITY x SYSTEM "file:///etc/passwd">]>'


def wbxml_with(table, body):
    return bytes((3, 1, 106)) + wbxml.mb_u_int32(len(table)) + table + body


# (name, content type, body, a word the 400's reason holds)
CASES = [
    ("malformed XML", XML, xml_request()[:-12], "malformed XML"),
    ("JSON sent as XML", XML, json.dumps(fields()), "does not match the body, which looks "
                                                    "like JSON"),
    ("XML sent as JSON", JSON, xml_request(), "looks like XML"),
    ("WBXML sent as SOAP", SOAP_CT, wbxml.Writer().document("request", fields()),
     "looks like WBXML"),
    ("billion laughs", XML, LAUGHS + with_device("&c;"), "DTD refused"),
    ("external entity", XML, XXE + with_device("&x;"), "DTD refused"),
    ("undeclared entity", XML, with_device("meter-a&x;"), "Entity 'x' not defined"),
    ("over-deep tree", XML, xml_request(items=[{"seq": 1, "kind": "reading",
                                                "body": nested(40)}]), "deeper than 32"),
    ("over-deep SOAP", SOAP_CT, soap(xml_request(items=[{"seq": 1, "kind": "reading",
                                                         "body": nested(40)}])),
     "deeper than 32"),
    ("types lost: <v>2</v>", XML, xml_request().replace('<v t="num">2</v>', "<v>2</v>"),
     "protocol version 2 refused"),
    ("XML without the protocol's namespace", XML,
     xml_request().replace(' xmlns="%s"' % NS, ""), "not {%s}request" % NS),
    ("SOAP that is no envelope", SOAP_CT, xml_request(), "not a SOAP 1.2 envelope"),
    ("SOAP header to understand", SOAP_CT,
     soap(xml_request(), '<env:Header><x:sec xmlns:x="urn:x" env:mustUnderstand="true"/>'
          '</env:Header>'), "must be understood"),
    ("WBXML reference out of range", WBXML,
     wbxml_with(b"meter-a\0", bytes((0x45, 0x48, 0x83, 0x40, 0x01, 0x01))),
     "reference 64 out of range (table of 8 bytes)"),
    ("WBXML references repeated beyond the limit", WBXML,
     wbxml_with(b"x" * 1000 + b"\0", bytes((0x45, 0x48)) + bytes((0x83, 0x00)) * 300
                + bytes((0x01, 0x01))), "text beyond"),
    ("WBXML tag token unknown", WBXML, wbxml_with(b"", bytes((0x45, 0x3F, 0x01))),
     "token 0x3f refused"),
    ("WBXML entity token", WBXML, wbxml_with(b"", bytes((0x45, 0x48, 0x02, 0x41, 0x01, 0x01))),
     "token 0x02"),
]


@pytest.mark.parametrize("name, ctype, body, reason", CASES, ids=[c[0] for c in CASES])
def test_bad_documents_get_400_with_the_reason_and_store_nothing(client, headend, name,  # noqa: F811
                                                                 ctype, body, reason):
    key = devices.create(headend.hub.db, "meter-a", poll=headend.settings.default_poll)
    raw = body.encode() if isinstance(body, str) else body
    r = client.post("/v1/exchange", content=raw,
                    headers={"Content-Type": ctype, "X-BC-Signature": hmac_hex(key, raw)})
    assert r.status_code == 400, (r.status_code, r.text)
    assert reason in r.text, r.text
    assert "x-bc-signature" not in r.headers
    if ctype == SOAP_CT:
        assert "<env:Fault>" in r.text and "env:Sender" in r.text
    elif ctype == XML:
        assert r.text.startswith('<error xmlns="%s"><error>' % NS)
    assert headend.count("items") == 0 and headend.count("nonces") == 0
    assert devices.get(headend.hub.db, "meter-a")["last_contact"] is None


def test_an_unknown_content_type_is_415_and_stores_nothing(client, headend):  # noqa: F811
    key = devices.create(headend.hub.db, "meter-a", poll=headend.settings.default_poll)
    raw = json.dumps(fields()).encode()
    r = client.post("/v1/exchange", content=raw, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-BC-Signature": hmac_hex(key, raw)})
    assert r.status_code == 415 and "not an encoding of the exchange" in r.json()["error"]
    assert headend.count("nonces") == 0


def test_a_good_document_of_each_kind_is_taken(client, headend):  # noqa: F811
    """The refusals above are about the documents: the same requests, well formed, pass."""
    key = devices.create(headend.hub.db, "meter-a", poll=headend.settings.default_poll)
    for ctype, raw in ((XML, xml_request().encode()), (SOAP_CT, soap(xml_request()).encode()),
                       (WBXML, wbxml.Writer().document("request", fields()))):
        r = client.post("/v1/exchange", content=raw,
                        headers={"Content-Type": ctype, "X-BC-Signature": hmac_hex(key, raw)})
        assert r.status_code == 200, r.text
    assert headend.count("nonces") == 3
