"""One exchange in four encodings (issue 17): the meter's own codecs (firmware/enc_*.py)
against the head-end (tools/headend/encodings.py): readings stored, work delivered with its
signature intact, results and `done` back, the SOAP reversal, and the same answer fields
whatever the encoding. Refusals (malformed, mismatched, entity expansion, too deep, WBXML
references out of range) are 400s with the reason that store nothing."""

import json
import secrets
import time

import pytest
from headend_fake_meter import hmac_hex
from headend_harness import client, headend, op  # noqa: F401

from lab import runner

pytestmark = pytest.mark.unit

ENCODINGS = ("json", "xml", "soap", "wbxml")
envelope = runner.import_firmware("envelope")


def codec(name):
    return runner.import_firmware("enc_" + name)


class CodecMeter:
    """A meter speaking one encoding with the firmware's codec, signing raw bytes."""

    def __init__(self, http, headend, device, encoding):
        from headend import devices

        self.key = devices.create(headend.hub.db, device, poll=headend.settings.default_poll)
        self.http, self.device, self.codec = http, device, codec(encoding)
        self.epoch, self.seq, self.outbox, self.done = secrets.token_hex(8), 0, [], []
        self.raw = None

    def add(self, kind, body):
        self.seq += 1
        self.outbox.append({"seq": self.seq, "kind": kind, "body": body})

    def body(self, **kw):
        out = {"v": 2, "device": self.device, "epoch": self.epoch, "ts": int(time.time()),
               "nonce": secrets.token_hex(8), "wait": 0, "room": 4}
        if self.done:
            out["done"] = list(self.done)
        if self.outbox:
            out["items"] = list(self.outbox)
        out.update(kw)
        return out

    def post(self, raw, content_type=None, sign=True):
        headers = {"Content-Type": content_type or self.codec.CONTENT_TYPE}
        if sign:
            headers["X-BC-Signature"] = hmac_hex(self.key, raw)
        return self.http.post("/v1/exchange", content=raw, headers=headers)

    def exchange(self, **kw):
        body = self.body(**kw)
        self.raw = self.codec.encode(body)
        r = self.post(self.raw)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(self.codec.CONTENT_TYPE)
        assert envelope.same(r.headers["x-bc-signature"], hmac_hex(self.key, r.content))
        resp = self.codec.decode(r.content)
        assert envelope.bound(resp, self.device, body["nonce"])
        self.outbox = [i for i in self.outbox if i["seq"] > resp["ack"]]
        self.done = []
        return resp


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_one_exchange_in_each_encoding(client, headend, op, encoding):  # noqa: F811
    m = CodecMeter(client, headend, "meter-" + encoding, encoding)
    m.add("reading", {"t": 1763769599, "t_ms": 25, "vrms": 230.1, "p": 918.0,
                      "demand_w": None, "odd key": "a<&>\"'\u00e9", "ok": True})
    m.add("presence", {"state": "available_restricted", "note": "until 13:03 <soon>"})
    wid = op.work(m.device, "get_events", {"limit": 5})["id"]
    resp = m.exchange()
    assert resp["ack"] == 2 and resp["epoch"] == m.epoch and resp["more"] is False
    assert isinstance(resp["time_ms"], int) and isinstance(resp["time"], float)
    [work] = resp["work"]
    assert work["id"] == wid and isinstance(work["seq"], int)
    assert isinstance(work["expires"], int) and json.loads(work["args"]) == {"limit": 5}
    assert envelope.work_ok(bytes.fromhex(m.key), work), "work signature broken in transit"
    readings = op.get("/v1/devices/%s/readings" % m.device).json()
    assert readings[0]["body"]["vrms"] == 230.1
    assert readings[0]["body"]["odd key"] == "a<&>\"'\u00e9"
    assert readings[0]["body"]["demand_w"] is None and readings[0]["body"]["ok"] is True
    m.add("result", {"work": wid, "status": "done", "body": {}})
    m.done.append(wid)
    m.add("reading", {"t": 1763769609, "vrms": 229.0})
    resp = m.exchange()
    assert resp["ack"] == 4 and resp["work"] == []
    assert op.status(wid) == "done"
    if encoding == "soap":      # the reversal: done and the result rode as a SOAP response
        text = m.raw.decode()
        assert text.count("<env:Envelope") == 2 and "<reversed><env:Envelope" in text
        assert "<executeResponse><done" in text


def test_soap_response_holds_a_soap_request_for_the_meter(client, headend, op):  # noqa: F811
    m = CodecMeter(client, headend, "meter-s", "soap")
    op.work(m.device, "read")
    r = m.post(m.codec.encode(m.body()))
    text = r.content.decode()
    outer, _, inner = text.partition("<reversed>")
    assert "<response " in outer and "<work" not in outer
    assert inner.startswith("<env:Envelope") and "urn:backchannel:device:meter-s" in inner
    assert "<env:Body><execute><work t=\"arr\">" in inner


def test_the_answer_spells_the_same_fields_in_every_encoding(client, headend):  # noqa: F811
    answers = {}
    for enc in ENCODINGS:
        m = CodecMeter(client, headend, "same-" + enc, enc)
        resp = m.exchange()
        answers[enc] = {k: type(v).__name__ for k, v in resp.items()}
    assert all(a == answers["json"] for a in answers.values()), answers


@pytest.mark.parametrize("encoding", ("xml", "soap", "wbxml"))
def test_keys_xml_cannot_carry_do_not_wedge_the_meter(client, headend, encoding):  # noqa: F811
    """A `send` echoing an operator's args with keys that differ only in control characters:
    XML carries neither, so they arrive as one key (U+FFFD) instead of a refusal that would
    block the meter's outbox for good."""
    m = CodecMeter(client, headend, "keys-" + encoding, encoding)
    m.add("send", {"to": "meter-b", "op": "read", "args": {"\x01": 1, "\x02": 2}})
    assert m.exchange()["ack"] == 1
    assert headend.count("items", m.device) == 1
