# The exchange in WBXML 1.3 (docs/protocol.md "WBXML"): the XML encoding's elements
# (xmlvalue.py) as tokens. The protocol's names are tags of two code pages, the type
# attribute t="..." an attribute token, text in the string table (each string once) and
# numbers inline. The reader refuses what could cost the meter more than the bytes it got:
# references outside the string table, text decoded beyond the document's size limit,
# depth, element count, and tokens it does not use (entities, PIs, extensions, opaque).
# Same interface as enc_json; the tokens are wbxml_tokens.py's, shared with the head-end.

import json

import xmlvalue
from wbxml_tokens import (
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
from xmltext import XmlError, clean

CONTENT_TYPE = "application/vnd.wap.wbxml"

TAGS = {}
for _page in range(len(PAGES)):
    for _i in range(len(PAGES[_page])):
        TAGS[PAGES[_page][_i]] = (_page, FIRST_TAG + _i)

MAX_SIZE = 256 * 1024   # bytes in
# Text out: a string referenced again and again is counted each time, and may total at most
# four times the document plus 4 KB (a board's heap is far smaller than MAX_SIZE).
TEXT_FACTOR = 4
TEXT_SLACK = 4096
MAX_DEPTH = 12
MAX_ELEMENTS = 2048


def mb_u_int32(out, n):
    if n >= 0x80:
        mb_u_int32_high(out, n >> 7)
    out.append(n & 0x7F)


def mb_u_int32_high(out, n):
    if n >= 0x80:
        mb_u_int32_high(out, n >> 7)
    out.append(0x80 | (n & 0x7F))


class Writer:
    def __init__(self):
        self.body = bytearray()
        self.table = bytearray()
        self.offsets = {}
        self.page = 0

    def string(self, text):
        off = self.offsets.get(text)
        if off is None:
            off = len(self.table)
            self.offsets[text] = off
            self.table += text.encode() + b"\x00"
        return off

    def tag(self, name, attrs, content):
        flags = (0x80 if attrs else 0) | (0x40 if content else 0)
        tok = TAGS.get(name)
        if tok is None:
            self.body.append(LITERAL | flags)
            mb_u_int32(self.body, self.string(name))
            return
        if tok[0] != self.page:
            self.body.append(SWITCH_PAGE)
            self.body.append(tok[0])
            self.page = tok[0]
        self.body.append(tok[1] | flags)

    def element(self, key, value, raw=False):
        """Write key: value; raw: value is a list of JSON records (bytes), parsed one at a
        time as each is written (parts)."""
        body = self.body
        plain = xmlvalue.plain_name(key)
        name = key if plain else "_"
        if isinstance(value, str):
            kind, text = None, xmlvalue.clean(value)
        elif value is None:
            kind, text = "null", ""
        elif value is True or value is False:
            kind, text = "bool", "true" if value else "false"
        elif isinstance(value, int):
            kind, text = "num", "%d" % value
        elif isinstance(value, float):
            kind, text = "num", xmlvalue.number_text(value)
        elif isinstance(value, dict):
            kind, text = (None if value else "obj"), ""
        elif isinstance(value, (list, tuple)):
            kind, text = "arr", ""
        else:
            raise ValueError("cannot encode %s" % type(value).__name__)
        nested = isinstance(value, (dict, list, tuple)) and value
        self.tag(name, kind is not None or not plain, bool(text) or nested)
        if kind is not None or not plain:
            if kind is not None:
                body.append(TYPE_TOKEN[kind])
            if not plain:
                body.append(KEY_TOKEN)
                body.append(STR_T)
                mb_u_int32(body, self.string(xmlvalue.clean(key)))
            body.append(END)
        if text:
            if kind is None:
                body.append(STR_T)
                mb_u_int32(body, self.string(text))
            else:
                body.append(STR_I)
                body.extend(text.encode())
                body.append(0)
        elif nested:
            if isinstance(value, dict):
                for k in value:
                    self.element(k, value[k])
            else:
                for v in value:
                    self.element("e", json.loads(v) if raw else v)
        if text or nested:
            body.append(END)

    def document(self, root, body, order=(), raw=None):
        """[header, string table, body]: the document in three bytes-like pieces; the
        array under the key `raw` holds JSON records (element)."""
        self.tag(root, False, True)
        for k in order:
            if k in body:
                self.element(k, body[k], k == raw)
        for k in body:
            if k not in order:
                self.element(k, body[k], k == raw)
        self.body.append(END)
        head = bytearray((VERSION, PUBLIC_ID, UTF8))
        mb_u_int32(head, len(self.table))
        return [bytes(head), bytes(self.table), self.body]


def encode(body):
    head, table, rest = Writer().document("request", body, xmlvalue.ORDER)
    return bytes(head + table + rest)


def parts(body):
    """encode(body) in pieces, body["items"] being the outbox's JSON records (enc_json)."""
    return Writer().document("request", body, xmlvalue.ORDER, "items")


class Reader:
    def __init__(self, data, max_size=MAX_SIZE, max_depth=MAX_DEPTH,
                 max_elements=MAX_ELEMENTS):
        if len(data) > max_size:
            raise XmlError("document larger than %d bytes" % max_size)
        self.data = data
        self.pos = 0
        self.text_limit = min(max_size, TEXT_FACTOR * len(data) + TEXT_SLACK)
        self.text_left = self.text_limit
        self.max_depth = max_depth
        self.max_elements = max_elements
        self.table = b""

    def byte(self):
        if self.pos >= len(self.data):
            raise XmlError("document ends early")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def mb(self):
        n = 0
        for _ in range(4):      # 28 bits: more than any offset in a document this size
            b = self.byte()
            n = (n << 7) | (b & 0x7F)
            if not b & 0x80:
                return n
        raise XmlError("multi-byte integer longer than 4 bytes")

    def _text(self, raw):
        self.text_left -= len(raw)
        if self.text_left < 0:
            raise XmlError("text beyond %d bytes (string references repeated)"
                           % self.text_limit)
        try:
            # what the document's XML form could carry: control characters become U+FFFD
            return clean(raw.decode())
        except UnicodeError:
            raise XmlError("string is not UTF-8")

    def inline(self):
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise XmlError("inline string is not terminated")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        return self._text(raw)

    def ref(self):
        off = self.mb()
        if off >= len(self.table):
            raise XmlError("string table reference %d out of range (table of %d bytes)"
                           % (off, len(self.table)))
        end = self.table.find(b"\x00", off)
        if end < 0:
            raise XmlError("string table entry at %d is not terminated" % off)
        return self._text(self.table[off:end])

    def header(self):
        if self.byte() not in (0x01, 0x02, 0x03):
            raise XmlError("not WBXML 1.x")
        if self.mb() == 0:
            self.mb()           # a public id in the string table: not used
        if self.mb() != UTF8:
            raise XmlError("charset must be UTF-8 (106)")
        size = self.mb()
        if size > len(self.data) - self.pos:
            raise XmlError("string table longer than the document")
        self.table = self.data[self.pos:self.pos + size]
        self.pos += size

    def attrs(self, name):
        attrs = {}
        current = None
        while True:
            tok = self.byte()
            if tok == END:
                return attrs
            if tok == STR_I or tok == STR_T:
                if current is None:
                    raise XmlError("attribute value before any attribute of <%s>" % name)
                attrs[current] += self.inline() if tok == STR_I else self.ref()
                continue
            if tok == SWITCH_PAGE:
                if self.byte() != 0:
                    raise XmlError("no attribute code page but 0")
                continue
            if tok == LITERAL:
                current, prefix = self.ref(), ""
            elif FIRST_TAG <= tok < FIRST_TAG + len(ATTRS):
                current, prefix = ATTRS[tok - FIRST_TAG]
            else:
                raise XmlError("attribute token 0x%02x refused in <%s>" % (tok, name))
            if current in attrs or len(attrs) >= 4:
                raise XmlError("attributes of <%s> repeated or too many" % name)
            attrs[current] = prefix

    def document(self):
        self.header()
        page = 0
        stack = []
        root = None
        elements = 0
        while True:
            tok = self.byte()
            if tok == SWITCH_PAGE:
                page = self.byte()
                if page >= len(PAGES):
                    raise XmlError("no code page %d" % page)
                continue
            if tok == END or tok == STR_I or tok == STR_T:
                if not stack:
                    raise XmlError("token 0x%02x outside the root element" % tok)
                if tok == END:
                    stack.pop()
                    if not stack:
                        break
                else:
                    stack[-1][4] += self.inline() if tok == STR_I else self.ref()
                continue
            code = tok & 0x3F
            if code == LITERAL:
                name = self.ref()
            elif code >= FIRST_TAG and code - FIRST_TAG < len(PAGES[page]):
                name = PAGES[page][code - FIRST_TAG]
            else:
                raise XmlError("token 0x%02x refused" % tok)
            el = [xmlvalue.NS, name, self.attrs(name) if tok & 0x80 else {}, [], ""]
            elements += 1
            if elements > self.max_elements:
                raise XmlError("more than %d elements" % self.max_elements)
            if stack:
                stack[-1][3].append(el)
            elif root is None:
                root = el
            if tok & 0x40:
                if len(stack) >= self.max_depth:
                    raise XmlError("elements nested deeper than %d" % self.max_depth)
                stack.append(el)
            elif not stack:
                break
        if self.pos != len(self.data):
            raise XmlError("%d bytes after the root element" % (len(self.data) - self.pos))
        return root


def decode(data):
    return xmlvalue.root_value(Reader(data).document(), "response")
