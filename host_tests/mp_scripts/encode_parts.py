# Each encoding's parts() (the request in pieces, the outbox's JSON records spliced in, comms)
# spells what encode() spells for the same request with parsed items, and signs the same:
# for host_tests/test_backlog_heap.py, under every interpreter. Prints one JSON document.
# (MicroPython orders a dict's keys its own way, so there the XML and WBXML forms are
# compared as the values they spell.)

import json

import enc_json
import enc_soap
import enc_wbxml
import enc_xml
import envelope
import xmlmini
import xmlvalue

ITEMS = [{"seq": 1, "kind": "reading",
          "body": {"t": 1700000000, "v": 230.5, "pf": -0.5, "s": "a<b&\"c"}},
         {"seq": 2, "kind": "result",
          "body": {"id": "w1", "status": "done", "result": {"x": [1, 2.5, None, True]}}},
         {"seq": 3, "kind": "event", "body": {}}]
RAWS = [json.dumps(i, separators=(",", ":")).encode() for i in ITEMS]
BASE = {"v": 2, "device": "m1", "ts": 5, "epoch": "ab", "nonce": "n", "wait": 0, "room": 4}


def spelt(enc, data):
    """The value a request's bytes spell, whatever order its keys came in."""
    if enc is enc_json:
        return json.loads(data)
    if enc is enc_wbxml:
        return xmlvalue.value_of(enc_wbxml.Reader(data).document())
    return xmlvalue.value_of(xmlmini.parse(data, **enc_soap.LIMITS))


def request(done, items):
    body = dict(BASE)
    if done:
        body["done"] = done
    if items:
        body["items"] = items
    return body


bad = []
pieces = 0
for enc in (enc_json, enc_xml, enc_soap, enc_wbxml):
    for done in (None, ["w1"]):
        for n in (0, 1, 2, 3):
            whole = enc.encode(request(done, ITEMS[:n]))
            parts = enc.parts(request(done, RAWS[:n]))
            pieces = max(pieces, len(parts))
            joined = b"".join(bytes(p) for p in parts)
            if joined != whole and spelt(enc, joined) != spelt(enc, whole):
                bad.append([enc.__name__, n, bool(done), "spelling"])
            if envelope.sign(b"k", parts) != envelope.sign(b"k", joined):
                bad.append([enc.__name__, n, bool(done), "signature"])
print(json.dumps({"mismatches": bad, "most_pieces": pieces}))
