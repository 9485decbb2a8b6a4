# Fuzz cases for the meter's encodings (firmware/enc_*.py, xmlmini.py), shared by CPython
# (hypothesis, test_fuzz_firmware.py) and the MicroPython driver fuzz_parsers.py. Each
# parser takes a response body as bytes; a clear XmlError is the only documented failure,
# and a document that parses must give a dict (the response) that re-encodes.

import enc_soap
import enc_wbxml
import enc_xml
import xmlmini

PARSERS = ("xml", "soap", "wbxml", "xmlstream")
ALLOWED = (xmlmini.XmlError,)


class Crash(Exception):
    pass


def _events(tok):
    out = []
    while True:
        ev = tok.next()
        if ev is None:
            return out
        out.append(ev)


def run_stream(data):
    """The tokenizer fed in pieces (1, 2, 3... bytes) gives the events of the whole text,
    text runs joined (a stream may cut a text run anywhere)."""
    try:
        text = data.decode()
    except UnicodeError:
        raise xmlmini.XmlError("not UTF-8")
    whole = xmlmini.Tokenizer()
    whole.feed(text)
    expected = _events(whole)
    tok = xmlmini.Tokenizer()
    got = []
    i, n = 0, 1
    while i < len(text):
        tok.feed(text[i:i + n])
        got.extend(_events(tok))
        i += n
        n = n % 5 + 1
    if _joined(got) != _joined(expected):
        raise Crash("pieces gave %r, whole %r" % (got[:4], expected[:4]))


def _joined(events):
    out = []
    for ev in events:
        if ev[0] == xmlmini.TEXT and out and out[-1][0] == xmlmini.TEXT:
            out[-1] = (xmlmini.TEXT, out[-1][1] + ev[1], None)
        else:
            out.append(ev)
    return out


def run(parser, data):
    if parser == "xmlstream":
        run_stream(data)
        return
    mod = {"xml": enc_xml, "soap": enc_soap, "wbxml": enc_wbxml}[parser]
    value = mod.decode(data)
    if not isinstance(value, dict):
        raise Crash("%s decoded to %r" % (parser, type(value)))
    if parser == "wbxml":
        head, table, rest = enc_wbxml.Writer().document("response", value)
        again = enc_wbxml.Reader(bytes(head + table + rest)).document()
        if enc_wbxml.xmlvalue.root_value(again, "response") != value:
            raise Crash("wbxml value does not survive re-encoding")
