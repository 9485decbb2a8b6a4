"""Hypothesis strategies for the firmware parsers (test_fuzz_firmware.py): HTTP responses,
work items, response envelopes, config values and files, outbox segments. STRATEGIES for
CPython, MP_STRATEGIES with JSON the MicroPython json module can read back."""

import json
import struct
from binascii import hexlify

import fuzz_parsers as fz
import store
from fuzz_common import json_values, mp_json
from hypothesis import strategies as st

# HTTP responses: structured (status line, headers, body) or raw bytes
tokens = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"200", b"OK", b"-1", b"99999",
                          b"2\xff0", b"\xc3\x28", b"", b" ", b"\t", b"\r", b"\n", b"\r\n",
                          b":", b"Content-Length", b"content-length", b"Connection",
                          b"close", b"0", b"5", b"+5", b"-5", b"1e3", b"262145", b"0x10",
                          b"X-BC-Signature", b"\x00", b"\xff\xfe"])
header = st.tuples(st.binary(max_size=12) | tokens, st.sampled_from([b":", b"", b": "]),
                   st.binary(max_size=12) | tokens).map(lambda t: b"".join(t) + b"\r\n")
status_line = (st.tuples(tokens | st.binary(max_size=8), st.just(b" "),
                         tokens | st.integers(-1000, 1000).map(lambda i: str(i).encode()),
                         st.just(b" "), tokens | st.binary(max_size=8))
               .map(lambda t: b"".join(t) + b"\r\n"))


@st.composite
def http_responses(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    body = draw(st.binary(max_size=64))
    head = [draw(status_line)] if draw(st.booleans()) else [b"HTTP/1.1 200 OK\r\n"]
    if draw(st.booleans()):
        head.append(b"Content-Length: %d\r\n" % (len(body) + draw(st.integers(-3, 3))))
    head += draw(st.lists(header, max_size=6 if draw(st.integers(0, 20)) else 70))
    end = draw(st.sampled_from([b"\r\n", b"\n", b""]))
    return b"".join(head) + end + body[:draw(st.integers(0, len(body)))]


def _work_items(values, args_values):
    item = st.fixed_dictionaries(
        {"id": st.sampled_from(["w-00000001", "w-2"]) | values,
         "device": st.sampled_from(["meter-f", "meter-g"]) | values,
         "seq": st.integers(0, 40) | values,
         "op": st.sampled_from(sorted(fz.ops.OPS) + ["nope", ""]) | values,
         "role": st.sampled_from(["operator", "utility", "peer", "root"]) | values,
         "expires": st.sampled_from([1763769900, 0]) | values,
         "from": st.sampled_from(["operator:alice", "device:m"]) | values,
         "args": args_values.map(lambda a: json.dumps(a, separators=(",", ":")))
         | st.text(max_size=20) | values},
        optional={"sig": st.text(max_size=64) | values})
    return st.tuples(item | values, st.booleans())


def _op_args(values):
    return st.dictionaries(
        st.sampled_from(["unix", "changes", "seconds", "state", "note", "limit", "to", "op",
                         "args", "ref", "from", "result", "nominal_v", "frequency"]),
        values | st.dictionaries(st.sampled_from(sorted(fz.config.DEFAULTS)), values,
                                 max_size=3), max_size=4) | values


work_cases = _work_items(json_values, _op_args(json_values))
mp_work_cases = _work_items(mp_json, _op_args(mp_json))


_ANY_FLOAT = st.floats()


def _responses(values, work, floats=_ANY_FLOAT):
    return st.fixed_dictionaries({}, optional={
        "v": st.sampled_from([2, 1, "2"]) | values, "dir": st.sampled_from(["down", "up"]),
        "device": st.sampled_from(["meter-f", "meter-g"]) | values,
        "re": st.sampled_from(["ab" * 8, "00" * 8]) | values,
        "conn": st.sampled_from(["cd" * 8, "00" * 8]) | values,
        "epoch": st.sampled_from(["0123456789abcdef", "x"]) | values,
        "ack": st.integers(-5, 2**70) | values, "time": values | floats,
        "next": values, "more": values,
        "work": st.lists(work.map(lambda t: t[0]), max_size=3) | values}) | values


response_cases = _responses(json_values, work_cases)
mp_response_cases = _responses(mp_json, mp_work_cases,
                               st.floats(allow_nan=False, allow_infinity=False))


def _configs(values):
    names = st.sampled_from(sorted(fz.config.DEFAULTS) + ["bogus"]) | st.text(max_size=8)
    special = st.sampled_from([10**400, -10**400, 2**63, 1e308, -0.0, "", "http://x",
                               "0" * 32, "g" * 32, "mqtt", "a b", True, 50, 60, 55.5])
    return st.dictionaries(names, values | special, max_size=5) | values


config_cases = _configs(json_values)
mp_config_cases = _configs(mp_json)


@st.composite
def config_files(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    text = json.dumps(draw(mp_config_cases)).encode()
    if kind == 1:
        return text
    rec = store.encode(text)
    if kind == 2:
        return rec
    i = draw(st.integers(0, len(rec) - 1))
    return rec[:i] + bytes([draw(st.integers(0, 255))]) + rec[i + 1:]


def _record(payload):
    return store.encode(payload)


@st.composite
def segments(draw):
    chunks = []
    seq = draw(st.integers(-2, 5))
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 6))
        if kind <= 2:                          # a good record (seq mostly increasing)
            seq += draw(st.integers(-1, 3))
            item = {"seq": seq, "kind": draw(st.sampled_from(["reading", "event", "result"])),
                    "body": {"i": seq}}
            chunks.append(_record(json.dumps(item).encode()))
        elif kind == 3:                        # a record with an odd payload
            chunks.append(_record(json.dumps(draw(mp_json)).encode()
                                  if draw(st.booleans()) else draw(st.binary(max_size=30))))
        elif kind == 4:                        # garbage, maybe with a stray magic
            chunks.append(draw(st.binary(max_size=40)) + draw(st.sampled_from([b"", b"BC1"])))
        elif kind == 5:                        # a header with a wild length
            chunks.append(b"BC1" + struct.pack("<I", draw(st.integers(0, 2**32 - 1))))
        else:                                  # a torn record
            rec = _record(json.dumps({"seq": seq + 1, "kind": "event", "body": {}}).encode())
            chunks.append(rec[:draw(st.integers(0, len(rec) - 1))])
    seg = b"".join(chunks)
    if draw(st.integers(0, 4)) == 0 and seg:   # flip a byte
        i = draw(st.integers(0, len(seg) - 1))
        seg = seg[:i] + bytes([seg[i] ^ draw(st.integers(1, 255))]) + seg[i + 1:]

    meta = (st.none() | st.binary(max_size=12).map(hexlify) |
            st.integers(-5, 2**40).map(lambda n: hexlify(store.encode(str(n).encode())))
            | st.text(max_size=6).map(lambda s: hexlify(store.encode(s.encode()))))
    acked, seqf = draw(meta), draw(meta)
    return [hexlify(seg).decode(), None if acked is None else acked.decode(),
            None if seqf is None else seqf.decode()]


# update manifests: near-valid structures with hostile fields, and raw text
_text = st.text(alphabet=st.characters(max_codepoint=0x7ff, blacklist_categories=("Cs",)),
                max_size=24)
_paths = st.sampled_from(["app.py", "lib/util.py", "../x.py", "/abs.py", "a", "a/b", "",
                          "a//b", "x" * 65, "fw/../../boot.py", "a b", ".", "./a", "a/",
                          "\u00e9.py", "CON", "a\\b"]) | _text
_hashes = st.sampled_from(["0" * 64, "f" * 64, "F" * 64, "g" * 64, "0" * 63, ""]) | _text
_lengths = st.integers(-3, 1 << 25) | st.sampled_from([True, 1.5, "7", None])
_entry = st.fixed_dictionaries({}, optional={"path": _paths, "len": _lengths,
                                             "sha256": _hashes})
_versions = st.sampled_from(["1.2.3", "0.1.0", "0.1.1", "01.2.3", "1.2", "1.2.3.4", "a.b.c",
                             "", "1.-2.3", "99999999999999999999.0.0"]) | _text
_manifest = st.fixed_dictionaries({}, optional={
    "version": _versions | st.integers(),
    "files": st.lists(_entry, max_size=6) | _text,
    "image": st.fixed_dictionaries({}, optional={"len": _lengths, "sha256": _hashes}) | _text})
_good_entry = st.fixed_dictionaries({
    "path": st.sampled_from(["app.py", "lib/util.py", "boot.py", "a/b/c.mpy", "a", "a/b"]),
    "len": st.integers(0, 1 << 20), "sha256": st.sampled_from(["0" * 64, "ab" * 32])})
_good = st.fixed_dictionaries({
    "version": st.sampled_from(["1.2.3", "0.1.1", "10.0.0"]),
    "files": st.lists(_good_entry, min_size=1, max_size=5, unique_by=lambda e: e["path"])})


@st.composite
def _one_field_off(draw):
    """A well-formed manifest with one field (top level or in one entry) made hostile."""
    m = draw(_good)
    hostile = {"version": _versions, "files": _text, "image": _text | _entry,
               "path": _paths, "len": _lengths, "sha256": _hashes}
    where = draw(st.sampled_from(["version", "files", "image", "entry"]))
    if where == "entry":
        entry = m["files"][draw(st.integers(0, len(m["files"]) - 1))]
        name = draw(st.sampled_from(["path", "len", "sha256"]))
        if draw(st.booleans()):
            entry[name] = draw(hostile[name])
        else:
            del entry[name]
    else:
        m[where] = draw(hostile[where])
    return m


_sigs = st.text(alphabet="0123456789abcdefABCDEF", max_size=130) | _text
manifest_cases = st.tuples((_good | _one_field_off() | _manifest).map(
                               lambda m: json.dumps(m, sort_keys=True)) | _text,
                           _sigs).map(list)

# --- the meter's encodings: head-end answers, mutated, and hostile markup ---

_hex16 = st.text(alphabet="0123456789abcdef", min_size=16, max_size=16)
_work_item = st.fixed_dictionaries({
    "id": _text, "device": _text, "seq": st.integers(0, 2**40), "op": _text,
    "args": _text, "role": st.sampled_from(["operator", "utility", "peer"]), "from": _text,
    "expires": st.integers(-1, 2**34), "sig": _text})
_answer = st.fixed_dictionaries(
    {"v": st.just(2), "dir": st.just("down"), "device": _text, "re": _hex16,
     "time_ms": st.integers(0, 2**42)},
    optional={"epoch": _hex16, "ack": st.integers(0, 2**31), "more": st.booleans(),
              "next": st.integers(0, 86400), "work": st.lists(_work_item, max_size=3),
              "chunk": mp_json, "error": _text})
_SNIPPETS = [b"<!DOCTYPE r [<!ENTITY a 'b'>]>", b"&a;", b"&#0;", b"&#x110000;", b"&amp",
             b"<", b">", b"]]>", b"<![CDATA[x", b"<?x y?>", b'"', b"'", b"\x00", b"\xff",
             b"<e>" * 20, b"</e>", b"<_ k='", b' t="num"', b' t="arr"', b"<!--", b"xmlns:a='u'",
             b"\x83\x7f", b"\x04\x8f\xff\xff\x7f", b"\x00\x05", b"\xc3\x05", b"\x02\x41"]


@st.composite
def encoded_answers(draw, encoding):
    from headend import encodings

    data = bytearray(encodings.encode_response(encoding, draw(_answer)))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data)))
        how = draw(st.integers(0, 3))
        if how == 0:
            data[pos:pos] = draw(st.sampled_from(_SNIPPETS))
        elif how == 1 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif how == 2:
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            data = data[:pos]
    return bytes(data)


_markup = st.lists(st.sampled_from(_SNIPPETS + [b"<a>", b"</a>", b"<b x='1'/>", b"text",
                                                b" ", b"&lt;", b"<a:b xmlns:a='u'>", b"</a:b>"]),
                   max_size=12).map(b"".join)
ENCODING_STRATEGIES = {
    "xml": (encoded_answers("xml") | _markup).map(lambda b: hexlify(b).decode()),
    "soap": (encoded_answers("soap") | _markup).map(lambda b: hexlify(b).decode()),
    "wbxml": (encoded_answers("wbxml") | st.binary(max_size=64)
              | st.binary(max_size=40).map(lambda b: b"\x03\x01\x6a" + b))
    .map(lambda b: hexlify(b).decode()),
    "xmlstream": (encoded_answers("xml") | encoded_answers("soap") | _markup)
    .map(lambda b: hexlify(b).decode()),
}

# --- the meter's mail: head-end answers as mails, mutated; IMAP and POP3 server talk ---

_MIME_SNIPPETS = [b"\r\n", b"\n", b"\r\n ", b"\r\n\r\n", b":", b"=", b"==", b"!", b"\x00",
                  b"\xff", b"Content-Type: multipart/mixed; boundary=b\r\n", b"--b\r\n",
                  b"--b--\r\n", b"Content-Transfer-Encoding: base64\r\n",
                  b"Content-Type: application/x-backchannel-exchange\r\n", b"Received: x\r\n\t",
                  b"A" * 998, b"QUFB" * 50]


@st.composite
def mails(draw):
    from lab import runner

    payload = draw(st.binary(max_size=16)) + b"0" * 64 + b" " + draw(st.binary(max_size=80))
    mime = runner.import_firmware("mail_mime")
    data = bytearray(mime.compose("headend@x.y", "m1@x.y", "m1", 1, "n", payload))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data)))
        how = draw(st.integers(0, 3))
        if how == 0:
            data[pos:pos] = draw(st.sampled_from(_MIME_SNIPPETS))
        elif how == 1 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif how == 2:
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            data = data[:pos]
    return bytes(data)


_IMAP_LINES = [b"* OK ready\r\n", b"a1 OK\r\n", b"a2 OK done\r\n", b"a3 OK\r\n", b"a4 OK\r\n",
               b"a5 NO\r\n", b"* SEARCH 3 4\r\n", b"* SEARCH\r\n", b"* SEARCH x\r\n",
               b"* 1 FETCH (UID 3 RFC822.SIZE 10)\r\n", b"* 1 FETCH (UID 3 BODY[] {5}\r\n",
               b"* 2 FETCH (UID 4 RFC822.SIZE 99999)\r\n", b"* 1 FETCH (UID (((((3)))))\r\n",
               b"{99999999}\r\n", b"{3}\r\n", b"hello", b")\r\n", b"* 1 EXPUNGE\r\n",
               b"+ idling\r\n", b"* 3 EXISTS\r\n", b"x" * 3000, b"\r\n"]
_POP3_LINES = [b"+OK ready\r\n", b"+OK\r\n", b"-ERR no\r\n", b"+OK 2 300\r\n", b"+OK 1 10\r\n",
               b"+OK 2 99999\r\n", b"+OK x y\r\n", b".\r\n", b"..dot\r\n", b"line\r\n",
               b"x" * 3000, b"\r\n"]


def _talk(lines):
    return st.lists(st.sampled_from(lines) | st.binary(max_size=12), max_size=24).map(b"".join)


MAIL_STRATEGIES = {
    "mime": (mails() | st.binary(max_size=200)).map(lambda b: hexlify(b).decode()),
    "imap": _talk(_IMAP_LINES).map(lambda b: hexlify(b).decode()),
    "pop3": _talk(_POP3_LINES).map(lambda b: hexlify(b).decode()),
}

# --- the meter's XMPP stream: stanzas a server (or someone through it) may send ---

_STREAM_HEAD = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
                b"'http://etherx.jabber.org/streams' id='s' from='im.test' version='1.0'>")


@st.composite
def _exchange_message(draw):
    """A message with the exchange payload, signed with the fuzz meter's key (so binding and
    the JSON inside are reached), from the component or someone else."""
    import base64
    import hashlib
    import hmac

    raw = json.dumps(draw(_answer)).encode()
    sig = hmac.new(b"k" * 16, raw, hashlib.sha256).hexdigest()
    frm = draw(st.sampled_from([b"fleet.im.test", b"mallory@im.test/x", b"fleet.im.test/r"]))
    return (b"<message from='%s'><bc xmlns='urn:backchannel:exchange' sig='%s'>%s</bc>"
            b"</message>" % (frm, sig.encode(), base64.b64encode(raw)))


_STANZAS = [b"<presence from='a@im.test/x'><show>away</show></presence>",
            b"<iq type='result' id='p1'/>", b"<iq type='get' id='q'><ping xmlns='urn:xmpp:ping'/>"
            b"</iq>", b"<message type='error' from='fleet.im.test'><error type='cancel'>"
            b"<remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
            b"</message>", b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'"
            b"/></stream:error>", b"</stream:stream>", b" ", b"<message><body>hi</body></message>"]


@st.composite
def stanza_streams(draw):
    parts = draw(st.lists(_exchange_message() | st.sampled_from(_STANZAS), max_size=4))
    data = bytearray(draw(st.sampled_from([_STREAM_HEAD, b"", b"<stream:stream>"]))
                     + b"".join(parts))
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(data)))
        how = draw(st.integers(0, 3))
        if how == 0:
            data[pos:pos] = draw(st.sampled_from(_SNIPPETS))
        elif how == 1 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif how == 2:
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            data = data[:pos]
    return hexlify(bytes(data)).decode()


_PUB = "04" + "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296" \
    "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"     # G itself


def _guarded(values):
    """(op, args, answer) for mp_scripts/fuzz_guarded.py: rotate_key, set_url, set_encoding
    with arguments near and far from valid, then an answer's `rekey` directive."""
    rid = st.sampled_from(["0123456789abcdef", "ZZ", "", "0" * 33, "ab" * 8]) | values
    pub = st.sampled_from([_PUB, "04" + "00" * 64, "04" + "1" * 128, _PUB[:-2] + "f6", "",
                           "02" + _PUB[2:66]]) | values
    args = st.fixed_dictionaries({}, optional={
        "rid": rid, "pub": pub,
        "url": st.sampled_from(["https://new.example:8443", "http://new.example", "",
                                "https://" + "a" * 300, "https://old.example:8443"]) | values,
        "encoding": st.sampled_from(["xml", "json", "soap", "wbxml", "yaml", ""]) | values,
        "within_s": st.integers(-5, 10 ** 6) | values}) | values
    answer = st.fixed_dictionaries({}, optional={
        "rekey": st.fixed_dictionaries({}, optional={
            "rid": rid, "check": st.text(max_size=20) | values}) | values}) | values
    return st.tuples(st.sampled_from(["rotate_key", "set_url", "set_encoding"]), args, answer)


STRATEGIES = {
    "guarded": _guarded(json_values),
    "stanza": stanza_streams(),
    "http": http_responses().map(lambda b: hexlify(b).decode()),
    "work": work_cases,
    "response": response_cases,
    "config": config_cases,
    "cfgfile": config_files().map(lambda b: hexlify(b).decode()),
    "outbox": segments(),
    "manifest": manifest_cases,
    **ENCODING_STRATEGIES,
    **MAIL_STRATEGIES,
}
MP_STRATEGIES = dict(STRATEGIES, work=mp_work_cases, response=mp_response_cases,
                     config=mp_config_cases, guarded=_guarded(mp_json))
