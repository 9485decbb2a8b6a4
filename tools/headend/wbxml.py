"""WBXML 1.3 at the head-end (docs/protocol.md "WBXML"; the meter's side is
firmware/enc_wbxml.py; both read the code pages from firmware/wbxml_tokens.py). Decoding builds
the XML form's elements (so xml_form's mapping and limits apply to both), refusing string
table references out of range, text decoded beyond the size limit (a string referenced
again and again), depth, and tokens the protocol does not use."""

from lxml import etree

from . import xml_form
from .wbxml_tokens import (
    ATTRS,
    END,
    FIRST_TAG,
    KEY_TOKEN,
    LITERAL,
    PAGES,
    PUBLIC_ID,
    STR_I,
    STR_T,
    SWITCH_PAGE,
    TYPE_TOKEN,
    UTF8,
    VERSION,
)
from .xml_form import NS, BadDocument

TAGS = {name: (page, FIRST_TAG + i) for page, names in enumerate(PAGES)
        for i, name in enumerate(names)}
MAX_SIZE = 256 * 1024


def mb_u_int32(n):
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


class Writer:
    def __init__(self):
        self.body = bytearray()
        self.table = bytearray()
        self.offsets = {}
        self.page = 0

    def ref(self, text):
        if text not in self.offsets:
            self.offsets[text] = len(self.table)
            self.table += text.encode() + b"\0"
        return mb_u_int32(self.offsets[text])

    def tag(self, name, attrs, content):
        flags = (0x80 if attrs else 0) | (0x40 if content else 0)
        if name not in TAGS:
            self.body += bytes((LITERAL | flags,)) + self.ref(name)
            return
        page, code = TAGS[name]
        if page != self.page:
            self.body += bytes((SWITCH_PAGE, page))
            self.page = page
        self.body.append(code | flags)

    def element(self, key, value):
        plain = xml_form.plain_name(key)
        if isinstance(value, str):
            kind, text = None, xml_form.clean(value)
        elif value is None:
            kind, text = "null", ""
        elif isinstance(value, bool):
            kind, text = "bool", "true" if value else "false"
        elif isinstance(value, int):
            kind, text = "num", "%d" % value
        elif isinstance(value, float):
            kind, text = "num", xml_form.number_text(value)
        elif isinstance(value, dict):
            kind, text = (None if value else "obj"), ""
        elif isinstance(value, (list, tuple)):
            kind, text = "arr", ""
        else:
            raise TypeError("cannot encode %s" % type(value).__name__)
        nested = isinstance(value, (dict, list, tuple)) and bool(value)
        attrs = kind is not None or not plain
        self.tag(key if plain else "_", attrs, bool(text) or nested)
        if attrs:
            if kind is not None:
                self.body.append(TYPE_TOKEN[kind])
            if not plain:
                self.body += bytes((KEY_TOKEN, STR_T)) + self.ref(xml_form.clean(key))
            self.body.append(END)
        if text:
            if kind is None:
                self.body += bytes((STR_T,)) + self.ref(text)
            else:
                self.body += bytes((STR_I,)) + text.encode() + b"\0"
        elif nested:
            pairs = value.items() if isinstance(value, dict) else (("e", v) for v in value)
            for k, v in pairs:
                self.element(k, v)
        if text or nested:
            self.body.append(END)

    def document(self, root, body, order=xml_form.ORDER):
        self.tag(root, False, True)
        for k in order:
            if k in body:
                self.element(k, body[k])
        for k, v in body.items():
            if k not in order:
                self.element(k, v)
        self.body.append(END)
        return (bytes((VERSION, PUBLIC_ID, UTF8)) + mb_u_int32(len(self.table))
                + bytes(self.table) + bytes(self.body))


def encode_response(answer):
    return Writer().document("response", answer)


class Reader:
    def __init__(self, data, max_depth=xml_form.MAX_DEPTH, max_elements=xml_form.MAX_ELEMENTS):
        if len(data) > MAX_SIZE:
            raise BadDocument("WBXML document larger than %d bytes" % MAX_SIZE)
        self.data, self.pos, self.table = data, 0, b""
        self.text_left = MAX_SIZE
        self.max_depth, self.max_elements = max_depth, max_elements

    def byte(self):
        if self.pos >= len(self.data):
            raise BadDocument("WBXML document ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def mb(self):
        n = 0
        for _ in range(4):
            b = self.byte()
            n = (n << 7) | (b & 0x7F)
            if not b & 0x80:
                return n
        raise BadDocument("WBXML multi-byte integer longer than 4 bytes")

    def _text(self, raw):
        self.text_left -= len(raw)
        if self.text_left < 0:
            raise BadDocument("WBXML text beyond %d bytes (string table references "
                              "repeated)" % MAX_SIZE)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise BadDocument("WBXML string is not UTF-8") from None

    def inline(self):
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise BadDocument("WBXML inline string is not terminated")
        raw, self.pos = self.data[self.pos:end], end + 1
        return self._text(raw)

    def ref(self):
        off = self.mb()
        if off >= len(self.table):
            raise BadDocument("WBXML string table reference %d out of range (table of %d "
                              "bytes)" % (off, len(self.table)))
        end = self.table.find(b"\0", off)
        if end < 0:
            raise BadDocument("WBXML string table entry at %d is not terminated" % off)
        return self._text(self.table[off:end])

    def header(self):
        if self.byte() not in (1, 2, 3):
            raise BadDocument("not WBXML 1.x")
        if self.mb() == 0:
            self.mb()
        if self.mb() != UTF8:
            raise BadDocument("WBXML charset must be UTF-8 (106)")
        size = self.mb()
        if size > len(self.data) - self.pos:
            raise BadDocument("WBXML string table longer than the document")
        self.table = self.data[self.pos:self.pos + size]
        self.pos += size

    def attrs(self, el):
        current = None
        while True:
            tok = self.byte()
            if tok == END:
                return
            if tok in (STR_I, STR_T):
                if current is None:
                    raise BadDocument("WBXML attribute value before any attribute")
                value = el.get(current) + (self.inline() if tok == STR_I else self.ref())
                _xml_text(el.set, current, value)
                continue
            if tok == SWITCH_PAGE:
                if self.byte() != 0:
                    raise BadDocument("WBXML has no attribute code page but 0")
                continue
            if tok == LITERAL:
                current, prefix = self.ref(), ""
            elif FIRST_TAG <= tok < FIRST_TAG + len(ATTRS):
                current, prefix = ATTRS[tok - FIRST_TAG]
            else:
                raise BadDocument("WBXML attribute token 0x%02x refused" % tok)
            if current not in ("t", "k") or el.get(current) is not None:
                raise BadDocument("WBXML attribute %s refused or repeated" % current[:16])
            _xml_text(el.set, current, prefix)

    def document(self):
        self.header()
        page, stack, root, count = 0, [], None, 0
        while True:
            tok = self.byte()
            if tok == SWITCH_PAGE:
                page = self.byte()
                if page >= len(PAGES):
                    raise BadDocument("WBXML has no code page %d" % page)
                continue
            if tok in (END, STR_I, STR_T):
                if not stack:
                    raise BadDocument("WBXML token 0x%02x outside the root element" % tok)
                if tok == END:
                    stack.pop()
                    if not stack:
                        break
                    continue
                text = self.inline() if tok == STR_I else self.ref()
                el = stack[-1]
                if len(el):
                    _xml_text(setattr, el[-1], "tail", (el[-1].tail or "") + text)
                else:
                    _xml_text(setattr, el, "text", (el.text or "") + text)
                continue
            code = tok & 0x3F
            if code == LITERAL:
                name = self.ref()
            elif FIRST_TAG <= code < FIRST_TAG + len(PAGES[page]):
                name = PAGES[page][code - FIRST_TAG]
            else:
                raise BadDocument("WBXML token 0x%02x refused" % tok)
            try:
                el = (etree.SubElement(stack[-1], "{%s}%s" % (NS, name)) if stack
                      else etree.Element("{%s}%s" % (NS, name)))
            except ValueError:
                raise BadDocument("WBXML tag name %r is not an XML name" % name[:32]) from None
            count += 1
            if count > self.max_elements:
                raise BadDocument("more than %d elements" % self.max_elements)
            if root is None:
                root = el
            if tok & 0x80:
                self.attrs(el)
            if tok & 0x40:
                if len(stack) >= self.max_depth:
                    raise BadDocument("elements nested deeper than %d" % self.max_depth)
                stack.append(el)
            elif not stack:
                break
        if self.pos != len(self.data):
            raise BadDocument("%d bytes after the WBXML root element" % (len(self.data) - self.pos))
        return root


def _xml_text(setter, *args):
    try:
        setter(*args)
    except ValueError:      # lxml refuses control characters: XML cannot carry them
        raise BadDocument("WBXML text holds characters XML cannot carry") from None


def decode_request(raw):
    return xml_form.root_value(Reader(raw).document(), "request")
