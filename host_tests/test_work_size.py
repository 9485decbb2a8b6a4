"""Work never larger than the meter's transport can carry (issue 13, item 2): the head-end
refuses it when queued (413, the limit in the message), for one meter, a group and a meter's
`send`; a response carries only as much queued work as fits one message. The limits are the
firmware's own (httpc.MAX_BODY, mqtt_wire.MAX_PACKET, mail_mime.MAX_PAYLOAD,
xmpp_stanza.MAX_STANZA)."""

import json
import re

import httpc
import pytest
import xmpp_stanza
from fastapi.testclient import TestClient
from headend_harness import ALLOW_PEERS, Api, Headend

from headend import release_store, signing, work_size
from lab import runner

pytestmark = pytest.mark.unit


def _pad(n):
    return {"pad": "x" * n}


def test_limits_are_the_meters():
    # mqtt_wire imports umqtt (MicroPython's lib): read its constant from the source
    text = (runner.FIRMWARE / "mqtt_wire.py").read_text()
    factors = re.search(r"^MAX_PACKET = (\d+) \* (\d+)\b", text, re.M).groups()
    mime = runner.import_firmware("mail_mime")
    # XMPP: the signed JSON travels as base64 (4/3) in a stanza of at most MAX_STANZA, with
    # 512 characters of message markup around it
    assert work_size.LIMITS == {"http": httpc.MAX_BODY,
                                "mqtt": int(factors[0]) * int(factors[1]),
                                "email": mime.MAX_PAYLOAD,
                                "xmpp": (xmpp_stanza.MAX_STANZA - 512) * 3 // 4}
    body = 4 * (work_size.limit("xmpp") + 2) // 3
    stanza = ('<message from="fleet.im.test" to="m@im.test/meter" id="x"><bc xmlns='
              '"urn:backchannel:exchange" sig="%s">%s</bc></message>' % ("0" * 64, "A" * body))
    assert len(stanza) <= xmpp_stanza.MAX_STANZA
    # a download over email asks for longer chunks: never above the head-end's cap, whole
    # flash blocks (an image resumes on a block boundary), and the answer fits a mail
    mail_len = runner.import_firmware("mail_comms").FETCH_LEN
    block = runner.import_firmware("updater").FETCH_LEN
    assert mail_len <= release_store.CHUNK_MAX and mail_len % block == 0
    assert work_size.ENVELOPE + (mail_len + 2) // 3 * 4 + 256 <= mime.MAX_PAYLOAD


def test_oversized_work_is_refused_with_the_limit(tmp_path):
    h = Headend(tmp_path)
    with TestClient(h.app) as c:
        op = Api(c, h.op_token)
        m = h.meter(c, "m-1")
        # before any exchange the transport is unknown: the smallest limit (XMPP's) holds
        r = op.post("/v1/devices/m-1/work", json={"op": "message", "args": _pad(40000)})
        assert r.status_code == 413, r.text
        msg = r.json()["error"]
        assert "work too large" in msg and str(work_size.LIMITS["xmpp"]) in msg, msg
        assert "m-1" in msg, msg
        assert h.count("work") == 0
        m.exchange()                                 # now it is an HTTP meter
        assert op.work("m-1", "message", _pad(40000))["status"] == "queued"
        r = op.post("/v1/devices/m-1/work", json={"op": "message", "args": _pad(300000)})
        assert r.status_code == 413 and "262144" in r.json()["error"], r.text
        # the largest that fits is accepted, one byte more is not
        room = work_size.budget("http")
        base = work_size.item_bytes("message", _pad(0), "operator", "operator:alice",
                                    2000000000, "m-1")
        ok = op.post("/v1/devices/m-1/work", json={"op": "message",
                                                    "args": _pad(room - base - 20)})
        assert ok.status_code == 202, ok.text
        r = op.post("/v1/devices/m-1/work", json={"op": "message",
                                                   "args": _pad(room - base + 20)})
        assert r.status_code == 413, r.text


def test_a_response_carries_only_what_fits_one_message(tmp_path):
    h = Headend(tmp_path)
    with TestClient(h.app) as c:
        op = Api(c, h.op_token)
        m = h.meter(c, "m-1")
        m.exchange()
        ids = [op.work("m-1", "message", _pad(100000))["id"] for _ in range(4)]
        sizes = []
        for more in (True, False):       # two of them fit a 256 KiB response, not three
            resp = m.exchange(room=4)
            sizes.append(len(signing.canonical(resp).encode()))
            assert [w["id"] for w in resp["work"]] == ids[:2] and resp["more"] is more
            m.execute(resp["work"])
            ids = ids[2:]
        assert max(sizes) <= work_size.LIMITS["http"]


def test_group_and_rendezvous_refuse_what_a_member_cannot_take(tmp_path):
    h = Headend(tmp_path, peer_rules=ALLOW_PEERS)
    with TestClient(h.app) as c:
        op = Api(c, h.op_token)
        a = h.meter(c, "m-a")
        h.meter(c, "m-b")                            # registered, never called in
        a.exchange()
        assert op.post("/v1/groups", json={"name": "g", "members": ["m-a", "m-b"]}).status_code \
            == 201
        # m-b has not called in: its limit is the smallest (XMPP's), and the group's with it
        r = op.post("/v1/groups/g/work", json={"op": "message", "args": _pad(40000)})
        assert r.status_code == 413 and str(work_size.LIMITS["xmpp"]) in r.json()["error"], r.text
        # a meter's send to a peer that cannot take it: rejected back to the sender
        a.add("send", {"to": "m-b", "ref": "big", "op": "read", "args": _pad(40000)})
        a.exchange()
        resp = a.exchange()
        msgs = [w["args"] if isinstance(w["args"], dict) else json.loads(w["args"])
                for w in resp["work"] if w["op"] == "message"]
        assert msgs and msgs[0]["result"]["status"] == "rejected", resp
        assert "work too large" in msgs[0]["result"]["reason"]
        assert h.count("work", "m-b") == 0
