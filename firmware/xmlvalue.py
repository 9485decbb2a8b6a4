# The exchange's JSON data model spelt as XML elements (docs/protocol.md "Encodings"), for
# the XML, SOAP and WBXML encodings. An element's name is the key; its type is the
# attribute `t` ("num", "bool", "null", "obj", "arr"; none: text, or an object when it has
# child elements); array members are <e> elements; a key that is not a plain name travels
# as <_ k="key">. So every field keeps its JSON type (`expires` stays an int, `args` text).

import json

from xmltext import XmlError, clean, escape  # noqa: F401 (clean: for enc_wbxml)

NS = "urn:backchannel:exchange:2"
_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_REST = _FIRST + "0123456789-."
_NUMBER = "0123456789+-.eE"

# The request's envelope fields first, in this order (the XSD takes them in any order).
ORDER = ("v", "device", "epoch", "ts", "nonce", "conn", "wait", "room", "done", "items",
         "fetch")


_PLAIN = {}     # plain_name's answers for the keys seen (the protocol's few dozen), capped


def plain_name(key):
    """True when `key` can be an element name as it is (ASCII letters, digits, _ - .)."""
    known = _PLAIN.get(key)
    if known is not None:
        return known
    plain = _plain(key)
    if len(_PLAIN) < 128:
        _PLAIN[key] = plain
    return plain


def _plain(key):
    if (not key or len(key) > 64 or key[0] not in _FIRST or key[:3].lower() == "xml"
            or key == "_"):
        return False
    for c in key:
        if c not in _REST:
            return False
    return True


def write(out, key, value):
    """Append the XML text of `key`: `value` to the list `out` (pieces, joined later)."""
    if plain_name(key):
        tag = key
        head = "<" + key
    else:
        tag = "_"
        head = '<_ k="%s"' % escape(key, True)
    if isinstance(value, str):
        if value:
            out.append("%s>%s</%s>" % (head, escape(value), tag))
        else:
            out.append(head + "/>")
    elif value is None:
        out.append(head + ' t="null"/>')
    elif value is True or value is False:
        out.append('%s t="bool">%s</%s>' % (head, "true" if value else "false", tag))
    elif isinstance(value, int):
        out.append('%s t="num">%d</%s>' % (head, value, tag))
    elif isinstance(value, float):
        out.append('%s t="num">%s</%s>' % (head, number_text(value), tag))
    elif isinstance(value, dict):
        if not value:
            out.append(head + ' t="obj"/>')
            return
        out.append(head + ">")
        for k in value:
            write(out, k, value[k])
        out.append("</%s>" % tag)
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append(head + ' t="arr"/>')
            return
        out.append(head + ' t="arr">')
        for v in value:
            write(out, "e", v)
        out.append("</%s>" % tag)
    else:
        raise ValueError("cannot encode %s" % type(value).__name__)


def number_text(value):
    """A float as JSON prints it (an exponent or a point, so it reads back as a float)."""
    text = repr(value)
    if text in ("nan", "inf", "-inf"):
        raise ValueError("%s is not a number JSON or XML can carry" % text)
    for c in text:
        if c in ".eE":
            return text
    return text + ".0"


def key_of(el):
    if el[1] == "_":
        k = el[2].get("k")
        if k is None:
            raise XmlError("<_> without its key k")
        return k
    return el[1]


def value_of(el):
    """The JSON value an element spells (see write); XmlError when it spells none."""
    t = el[2].get("t")
    kids = el[3]
    if t is None:
        if kids:
            t = "obj"
        else:
            return el[4]
    if t == "obj":
        _no_text(el)
        out = {}
        for kid in kids:
            # a repeated key: the last counts, as in JSON (keys that differ only in control
            # characters, which XML cannot carry, arrive as one)
            out[key_of(kid)] = value_of(kid)
        return out
    if t == "arr":
        _no_text(el)
        out = []
        for kid in kids:
            if kid[1] != "e":
                raise XmlError("array <%s> holds <%s>, not <e>" % (el[1], kid[1]))
            out.append(value_of(kid))
        return out
    if kids:
        raise XmlError("<%s t=\"%s\"> has child elements" % (el[1], t[:8]))
    text = el[4].strip(" \t\r\n")
    if t == "num":
        return number(text, el[1])
    if t == "bool":
        if text == "true":
            return True
        if text == "false":
            return False
        raise XmlError("<%s> is not true or false" % el[1])
    if t == "null":
        if text:
            raise XmlError("<%s t=\"null\"> has text" % el[1])
        return None
    raise XmlError("<%s> has an unknown type t=\"%s\"" % (el[1], t[:8]))


def _no_text(el):
    if el[4].strip(" \t\r\n"):
        raise XmlError("<%s> mixes text and elements" % el[1])


def number(text, name="number"):
    if not text or len(text) > 40:
        raise XmlError("<%s> is not a number" % name)
    for c in text:
        if c not in _NUMBER:
            raise XmlError("<%s> is not a number" % name)
    try:
        for c in text:
            if c in ".eE":
                value = float(text)
                break
        else:
            return int(text)
    except ValueError:
        raise XmlError("<%s> is not a number" % name)
    if value - value != 0:      # inf (or nan): past the float's range, which 1e39 is on a board
        raise XmlError("<%s> is out of range" % name)
    return value


def document(root, body, order=(), tail=""):
    """The XML text (str) of `body` (a dict) as the element `root` in the protocol's
    namespace: the keys in `order` first, in that order, then the rest, then `tail` (XML
    text) before the end tag."""
    out = ['<%s xmlns="%s">' % (root, NS)]
    for k in order:
        if k in body:
            write(out, k, body[k])
    for k in body:
        if k not in order:
            write(out, k, body[k])
    out.append(tail)
    out.append("</%s>" % root)
    return "".join(out)


class Parts:
    """An XML document written as a list of bytes pieces (comms sends them one by one): the
    array under `raw` (the request's items) arrives as the outbox's JSON records (bytes),
    each parsed only while it is written, one at a time, and each a piece of its own."""

    def __init__(self, raw="items"):
        self.raw = raw
        self.out = []
        self.pieces = []

    def add(self, text):
        self.out.append(text)

    def field(self, key, value):
        if key != self.raw or not value:
            write(self.out, key, value)
            return
        self.out.append('<%s t="arr">' % key)
        for payload in value:
            write(self.out, "e", json.loads(payload))
            self.flush()
        self.out.append("</%s>" % key)

    def fields(self, body, order):
        for k in order:
            if k in body:
                self.field(k, body[k])
        for k in body:
            if k not in order:
                self.field(k, body[k])

    def flush(self):
        if self.out:
            self.pieces.append("".join(self.out).encode())
            self.out = []

    def done(self):
        self.flush()
        return self.pieces


def root_value(el, root):
    """The dict a document's root element spells; XmlError unless it is `root` in NS."""
    if el[0] != NS or el[1] != root:
        raise XmlError("root element is {%s}%s, not {%s}%s" % (el[0][:40], el[1][:32], NS, root))
    value = value_of(el)
    if not isinstance(value, dict):
        raise XmlError("<%s> holds no fields" % root)
    return value
