"""The exchange's JSON data model as XML (docs/protocol.md "Encodings"), at the head-end:
parsing with lxml hardened (no DTD, no entity resolution, no network, depth and element
limits), the element <-> value mapping the meter's firmware/xmlvalue.py also uses, and the
writer. Every refusal is BadDocument with one line for the 400."""

from xml.sax.saxutils import escape as _sax_escape

from lxml import etree

NS = "urn:backchannel:exchange:2"
MAX_DEPTH = 32
MAX_ELEMENTS = 100_000
_FIRST = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_REST = _FIRST | set("0123456789-.")
_NUMBER = set("0123456789+-.eE")
_CONTROL = {c: "\ufffd" for c in range(32) if c not in (9, 10, 13)}
ORDER = ("v", "dir", "device", "re", "conn", "epoch", "ack", "work", "more", "next", "time",
         "time_ms", "held_ms", "chunk", "error")


class BadDocument(ValueError):
    """A document refused before anything is stored: the reason is the 400's."""


def parse(raw, max_depth=MAX_DEPTH, max_elements=MAX_ELEMENTS):
    """The root element of an XML document, refused with BadDocument when it is malformed,
    has a DTD (so no entity can be declared, let alone expanded), nests deeper than
    max_depth or holds more than max_elements elements."""
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        # refused before lxml sees it: an entity is never declared, so never expanded
        raise BadDocument("DTD refused: no DOCTYPE or entity declarations (entity expansion "
                          "is not accepted)")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_comments=True, remove_pis=True)
    try:
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as e:
        raise BadDocument("malformed XML: %s" % (e.msg or e)) from None
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        raise BadDocument("DTD refused: no DOCTYPE or entity declarations")
    depth = count = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        if event == "start":
            depth += 1
            count += 1
            if depth > max_depth:
                raise BadDocument("elements nested deeper than %d" % max_depth)
            if count > max_elements:
                raise BadDocument("more than %d elements" % max_elements)
        else:
            depth -= 1
    return root


def local(el):
    return etree.QName(el).localname


def is_ns(el, ns, name):
    return isinstance(el.tag, str) and el.tag == "{%s}%s" % (ns, name)


def _text(el):
    return el.text or ""


def _no_text(el):
    if _text(el).strip() or any((kid.tail or "").strip() for kid in el):
        raise BadDocument("<%s> mixes text and elements" % local(el))


def key_of(el):
    if etree.QName(el).namespace != NS:
        raise BadDocument("element {%s}%s is not in the protocol's namespace %s"
                          % (etree.QName(el).namespace, local(el), NS))
    if local(el) == "_":
        if el.get("k") is None:
            raise BadDocument("<_> without its key k")
        return el.get("k")
    return local(el)


def value_of(el):
    """The JSON value an element spells (firmware/xmlvalue.py); BadDocument otherwise."""
    name = local(el)
    t = el.get("t")
    kids = list(el)
    for a in el.attrib:
        if a not in ("t", "k"):
            raise BadDocument("<%s> has an unknown attribute %s" % (name, a))
    if t is None:
        if not kids:
            return _text(el)
        t = "obj"
    if t == "obj":
        _no_text(el)
        out = {}
        for kid in kids:
            # a repeated key: the last counts, as in JSON; refusing it would refuse for good
            # a meter whose keys differ only in control characters (XML carries none)
            out[key_of(kid)] = value_of(kid)
        return out
    if t == "arr":
        _no_text(el)
        out = []
        for kid in kids:
            if key_of(kid) != "e" or local(kid) != "e":
                raise BadDocument("array <%s> holds <%s>, not <e>" % (name, local(kid)))
            out.append(value_of(kid))
        return out
    if kids:
        raise BadDocument('<%s t="%s"> has child elements' % (name, t[:8]))
    text = _text(el).strip()
    if t == "num":
        return number(text, name)
    if t == "bool" and text in ("true", "false"):
        return text == "true"
    if t == "null" and not text:
        return None
    if t in ("bool", "null"):
        raise BadDocument('<%s t="%s"> has the wrong text' % (name, t))
    raise BadDocument('<%s> has an unknown type t="%s"' % (name, t[:8]))


def number(text, name):
    if not text or len(text) > 40 or not set(text) <= _NUMBER:
        raise BadDocument("<%s> is not a number" % name)
    try:
        return float(text) if set(text) & set(".eE") else int(text)
    except ValueError:
        raise BadDocument("<%s> is not a number" % name) from None


def root_value(el, root):
    if not is_ns(el, NS, root):
        raise BadDocument("root element is %s, not {%s}%s" % (el.tag, NS, root))
    value = value_of(el)
    if not isinstance(value, dict):
        raise BadDocument("<%s> holds no fields" % root)
    return value


# --- writing (the meter's rules: firmware/xmlvalue.py) ---

def plain_name(key):
    return (isinstance(key, str) and 0 < len(key) <= 64 and key[0] in _FIRST
            and key[:3].lower() != "xml" and key != "_" and set(key) <= _REST)


def clean(text):
    return text.translate(_CONTROL)


def escape(text, attr=False):
    """As firmware/xmlmini.escape: CR always a reference, TAB and LF too in attributes."""
    extra = {'"': "&quot;", "\r": "&#13;"}
    if attr:
        extra.update({"\n": "&#10;", "\t": "&#9;"})
    return clean(_sax_escape(text, extra))


def number_text(value):
    text = repr(value)
    if text in ("nan", "inf", "-inf"):
        raise ValueError("%s is not a number JSON or XML can carry" % text)
    return text if set(text) & set(".eE") else text + ".0"


def write(out, key, value):
    if plain_name(key):
        tag, head = key, "<" + key
    else:
        tag, head = "_", '<_ k="%s"' % escape(key, True)
    if isinstance(value, str):
        out.append("%s>%s</%s>" % (head, escape(value), tag) if value else head + "/>")
    elif value is None:
        out.append(head + ' t="null"/>')
    elif isinstance(value, bool):
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
        for k, v in value.items():
            write(out, k, v)
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
        raise TypeError("cannot encode %s" % type(value).__name__)


def document(root, body, order=ORDER, tail="", xmlns=True):
    """The XML text of `body` as the element `root` (in the protocol's namespace when
    xmlns): the keys in `order` first, then the rest, then `tail` before the end tag."""
    out = ['<%s xmlns="%s">' % (root, NS) if xmlns else "<%s>" % root]
    for k in order:
        if k in body:
            write(out, k, body[k])
    for k, v in body.items():
        if k not in order:
            write(out, k, v)
    out.append(tail)
    out.append("</%s>" % root)
    return "".join(out)
