"""The meter's encodings (firmware/enc_*.py, xmlmini.py, xmlvalue.py) on every interpreter
(the MicroPython unix port, CPython, the board build): the requests it writes decode at the
head-end to exactly the request, the head-end's answers decode on the meter to exactly the
answer, and malformed or hostile answers are refused with a clear reason (ValueError),
never a crash."""

import json

import pytest

from headend import encodings, soap, wbxml
from lab import runner

pytestmark = pytest.mark.unit

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "encodings_checks.py"
ENCODINGS = ("json", "xml", "soap", "wbxml")

REQUESTS = [
    {"v": 2, "device": "meter-a", "epoch": "9b1e07c44d2a5f10", "ts": 1763769600,
     "nonce": "5f0c2a9e81d4b7c3", "wait": 25, "room": 4},
    {"v": 2, "device": "meter-a", "epoch": "9b1e07c44d2a5f10", "ts": 1763769600,
     "nonce": "5f0c2a9e81d4b7c4", "wait": 0, "room": 0, "done": ["w-1", "w-2"],
     "fetch": {"version": "0.2.0", "path": "app.py", "offset": 8192, "len": 8192},
     "items": [
         {"seq": 1, "kind": "reading", "body": {"t": 1763769599, "t_ms": 25, "vrms": 230.5,
                                                "pf": -0.25, "demand_w": None, "big": 2**40}},
         {"seq": 2, "kind": "result", "body": {
             "work": "w-1", "status": "rejected",
             "reason": "a <b> & \"c\" 'd' \u00e9\u20ac\U0001f600"}},
         {"seq": 3, "kind": "send", "body": {"to": "m", "op": "read", "args": {},
                                             "odd key": [], "1st": [True, False, "", 0]}},
         {"seq": 4, "kind": "result", "body": {"work": "w-2", "status": "done",
                                               "body": {"nested": {"deeper": [1, [2, {}]]}}}},
     ]},
]
ANSWER = {"v": 2, "dir": "down", "device": "meter-a", "re": "5f0c2a9e81d4b7c3",
          "epoch": "9b1e07c44d2a5f10", "ack": 45, "more": False, "next": 60,
          "time_ms": 1763769600412,
          "work": [{"id": "w-00000018", "device": "meter-a", "seq": 7, "op": "set_config",
                    "args": '{"changes":{"note":"<&>\\u00e9"}}', "role": "operator",
                    "from": "operator:alice", "expires": 1763769900, "sig": "9f" * 32}]}


def run(interpreter, cases):
    # raw UTF-8: MicroPython's json does not join \\ud83d\\ude00 surrogate pairs
    stdin = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases).encode()
    return runner.records(runner.run(interpreter, DRIVER, stdin=stdin, timeout=120))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_requests_decode_at_the_head_end_exactly(interpreter, encoding):
    out = run(interpreter, [[encoding, "encode", r] for r in REQUESTS])
    for body, rec in zip(REQUESTS, out, strict=True):
        raw = bytes.fromhex(rec["raw"])
        assert encodings.decode_request(encoding, raw) == body, raw


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_answers_decode_on_the_meter_exactly(interpreter, encoding):
    answers = [ANSWER, dict(ANSWER, work=[]), {k: v for k, v in ANSWER.items() if k != "work"}]
    out = run(interpreter, [[encoding, "decode", encodings.encode_response(encoding, a).hex()]
                            for a in answers])
    for answer, rec in zip(answers, out, strict=True):
        assert rec == {"value": answer}


def _xml(text):
    return text.encode().hex()


SOAP_OPEN = '<e:Envelope xmlns:e="%s"><e:Body>' % soap.SOAP_NS
BAD = [
    ("xml", _xml('<response xmlns="urn:backchannel:exchange:2"><v t="num">2</v>'),
     "document ends inside <response>"),
    ("xml", _xml('<!DOCTYPE r [<!ENTITY a "aaaa">]><response/>'), "DTD refused"),
    ("xml", _xml('<response xmlns="urn:backchannel:exchange:2"><device>&a;</device></response>'),
     "entity &a; refused"),
    ("xml", _xml('<response xmlns="urn:backchannel:exchange:2">' + "<x>" * 20 + "</x>" * 20
                 + "</response>"), "nested deeper than 12"),
    ("xml", _xml('<response xmlns="urn:x"/>'), "root element is {urn:x}response"),
    ("xml", _xml('<response xmlns="urn:backchannel:exchange:2"><ack t="num">4x</ack></response>'),
     "<ack> is not a number"),
    ("xml", _xml('<response xmlns="urn:backchannel:exchange:2" a="1" a="2"/>'), "repeated"),
    ("soap", _xml(SOAP_OPEN + '<e:Fault><e:Reason><e:Text>busy</e:Text></e:Reason></e:Fault>'
                  '</e:Body></e:Envelope>'), "SOAP fault: busy"),
    ("soap", _xml('<response xmlns="urn:backchannel:exchange:2"/>'), "not a SOAP 1.2 envelope"),
    ("soap", _xml(SOAP_OPEN + '<response xmlns="urn:backchannel:exchange:2"><reversed>'
                  '<x/></reversed></response></e:Body></e:Envelope>'), "not a SOAP 1.2"),
    ("wbxml", (bytes((3, 1, 106, 2)) + b"a\0" + bytes((0x46, 0x48, 0x83, 0x09, 0x01, 0x01)))
     .hex(), "reference 9 out of range (table of 2 bytes)"),
    ("wbxml", (bytes((3, 1, 106, 0x82, 0x00)) + b"x" * 255 + b"\0"
               + bytes((0x46, 0x48)) + bytes((0x83, 0x00)) * 1100 + bytes((0x01, 0x01))).hex(),
     "text beyond"),
    ("wbxml", bytes((3, 1, 106, 0, 0x46, 0x02, 0x41, 0x01)).hex(), "token 0x02 refused"),
    ("wbxml", bytes((3, 1, 106, 0, 0x46, 0x01, 0x46, 0x01)).hex(), "2 bytes after the root"),
    ("wbxml", bytes((3, 1, 106, 0, 0x46)).hex(), "document ends early"),
    ("wbxml", bytes((3, 1, 106, 0x8F, 0xFF, 0xFF, 0xFF, 0x7F)).hex(), "longer than 4 bytes"),
    ("json", b"[1]".hex(), "not a JSON object"),
    # past any float's range (the long fuzz run, 2026-12-07: it decoded as inf, which the
    # meter could not even write back); 1e39 is past a board's float32 too
    ("xml", _xml('<response xmlns="urn:backchannel:exchange:2"><ack t="num">1e999</ack>'
                 '</response>'), "<ack> is out of range"),
    ("wbxml", encodings.encode_response("wbxml", {"poll_s": 1.5e300}).replace(
        b"1.5e+300", b"1.5e+999").hex(), "<poll_s> is out of range"),
]


def test_malformed_answers_are_refused_with_the_reason(interpreter):
    out = run(interpreter, [[enc, "decode", data] for enc, data, _ in BAD])
    for (enc, data, reason), rec in zip(BAD, out, strict=True):
        assert reason in rec.get("err", ""), (enc, bytes.fromhex(data)[:80], rec)


def test_both_sides_read_one_table_of_code_pages():
    # nothing mirrored by hand: the head-end's module is a link to the firmware's file
    link = runner.ROOT / "tools" / "headend" / "wbxml_tokens.py"
    assert link.is_symlink()
    assert link.resolve() == (runner.ROOT / "firmware" / "wbxml_tokens.py").resolve()
    fw = runner.import_firmware("enc_wbxml")
    assert fw.PAGES == wbxml.PAGES and fw.ATTRS == wbxml.ATTRS
    assert len(fw.PAGES[0]) <= 59 and len(fw.PAGES[1]) <= 59     # tokens 0x05..0x3F
    assert len({n for page in fw.PAGES for n in page}) == sum(len(p) for p in fw.PAGES)


class _Http:
    """Answers every exchange with `data`, signed with `key`; records when requests came."""

    def __init__(self, key, data):
        self.key, self.data, self.times = key, data, []

    async def connect(self):  # comms connects before building a request (httpc)
        pass

    async def request(self, method, path, body, headers, timeout=None):
        import hashlib
        import hmac
        import time

        self.times.append(time.monotonic())
        self.sent = (headers["Content-Type"], body)
        return 200, {"x-bc-signature": hmac.new(self.key, self.data, hashlib.sha256)
                     .hexdigest()}, self.data

    def close(self):
        pass


class _Outbox:
    epoch, acked = "9b1e07c44d2a5f10", 0
    items = [{"seq": 1, "kind": "reading", "body": {"vrms": 230.0}}]

    def peek(self, n, size):
        return list(self.items)

    def peek_raw(self, n, size):   # what comms sends: the records' JSON, spliced (enc_*.parts)
        import json

        return [json.dumps(i, separators=(",", ":")).encode() for i in self.items]

    def depth(self):
        return len(self.items)

    def ack(self, seq):
        self.items = [i for i in self.items if i["seq"] > seq]


class _Fake:
    def __getattr__(self, name):
        return {"ids": lambda: [], "room": lambda: 4, "now": lambda: 1763769600}.get(
            name, lambda *a, **k: None)


@pytest.mark.parametrize("encoding", ("xml", "soap", "wbxml"))
def test_a_malformed_answer_is_a_counted_failure_then_a_retry_with_backoff(encoding):
    import asyncio

    comms = runner.import_firmware("comms")
    key = b"k" * 32
    good = encodings.encode_response(encoding, {"v": 2, "dir": "down", "device": "m"})
    http = _Http(key, good[:len(good) // 2])
    outbox = _Outbox()
    link = comms.Comms("m", key, http, outbox, _Fake(), _Fake(), _Fake(), wait_s=0,
                       backoff_base=0.2, encoding=encoding)

    async def three_tries():
        task = asyncio.create_task(link.run())
        while len(http.times) < 3:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(three_tries())
    assert http.sent[0] == encodings.MEDIA[encoding]
    assert link.failures >= 2 and link.exchanges == 0
    assert link.last_error.startswith("ExchangeError: malformed response: "), link.last_error
    gaps = [b - a for a, b in zip(http.times, http.times[1:])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps       # 0.2 s x 2^n, jitter x0.5..1
    assert outbox.items and outbox.items[0]["seq"] == 1    # nothing acked, nothing lost
