# A strict, minimal XML parser for the meter (docs/protocol.md "Encodings"), and escape()
# for writers. It refuses what a small device must never expand or follow: any DTD
# (DOCTYPE, ENTITY), entities other than the five predefined ones, processing instructions
# other than the XML declaration. Limits on size, depth, elements, attributes and name
# length bound what one document can cost. Errors are XmlError with one clear line.
#
# Stream-friendly: a Tokenizer takes text in pieces (feed) and hands out each event once
# it is complete (next), so a long-lived stream (XMPP) can be read as it arrives; parse()
# reads one whole document into a small tree of lists: [ns, name, attrs, children, text].

from xmltext import XmlError, clean, escape  # noqa: F401 (part of this module's API)

START = 1
END = 2
TEXT = 3

_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
_SPACE = " \t\r\n"
_NAME_STOP = " \t\r\n/>=\"'<&"
XML_NS = "http://www.w3.org/XML/1998/namespace"



def unescape(text):
    """Text with the five predefined entities and character references replaced."""
    amp = text.find("&")
    if amp < 0:
        return text
    out = []
    start = 0
    while amp >= 0:
        semi = text.find(";", amp, amp + 12)
        if semi < 0:
            raise XmlError("unterminated reference at %r" % text[amp:amp + 12])
        name = text[amp + 1:semi]
        out.append(text[start:amp])
        out.append(_reference(name))
        start = semi + 1
        amp = text.find("&", start)
    out.append(text[start:])
    return "".join(out)


def _reference(name):
    if name in _ENTITIES:
        return _ENTITIES[name]
    if name[:1] != "#":
        raise XmlError("entity &%s; refused: only the five predefined entities" % name[:16])
    try:
        code = int(name[2:], 16) if name[1:2] == "x" else int(name[1:])
    except ValueError:
        raise XmlError("bad character reference &%s;" % name[:16])
    if not (code in (9, 10, 13) or 0x20 <= code < 0xD800 or 0xE000 <= code <= 0x10FFFF):
        raise XmlError("character reference &%s; is not an XML character" % name[:16])
    return chr(code)


class Tokenizer:
    """Events from XML text fed in pieces: (START, name, attrs), (END, name, None),
    (TEXT, text, None); None from next() until more text arrives."""

    def __init__(self, max_size=65536, max_depth=16, max_elements=4096, max_attrs=8,
                 max_name=64):
        self.max_size = max_size
        self.max_depth = max_depth
        self.max_elements = max_elements
        self.max_attrs = max_attrs
        self.max_name = max_name
        self.buf = ""
        self.pos = 0
        self.size = 0
        self.stack = []
        self.elements = 0
        self.closed = False     # the root element has ended
        self.pending = None     # the END of an empty element <a/>
        self.first = True       # nothing read yet: the XML declaration may come

    def feed(self, text):
        self.size += len(text)
        if self.size > self.max_size:
            raise XmlError("document larger than %d bytes" % self.max_size)
        if self.pos:
            self.buf = self.buf[self.pos:]
            self.pos = 0
        self.buf += text

    def next(self):
        if self.pending is not None:
            name, self.pending = self.pending, None
            return self._end(name)
        while True:
            buf, i = self.buf, self.pos
            if i >= len(buf):
                return None
            if buf[i] != "<":
                lt = buf.find("<", i)
                if lt < 0:
                    if not self.stack:
                        self._outside(buf[i:])
                        self.pos = len(buf)
                    return None
                self.pos = lt
                self.first = False
                if not self.stack:
                    self._outside(buf[i:lt])
                    continue
                return (TEXT, unescape(buf[i:lt]), None)
            event = self._markup(buf, i)
            if event is None:
                return None
            self.first = False
            if event is not True:
                return event

    def _outside(self, text):
        if text.strip(_SPACE):
            raise XmlError("text outside the root element")

    def _markup(self, buf, i):
        """An event, True for markup that makes none (comment, declaration), or None when
        the buffer ends inside it."""
        if i + 1 >= len(buf):
            return None
        c = buf[i + 1]
        if c == "/":
            j = buf.find(">", i)
            if j < 0:
                return None
            self.pos = j + 1
            return self._end(buf[i + 2:j].rstrip(_SPACE))
        if c == "?":
            j = buf.find("?>", i)
            if j < 0:
                return None
            if not self.first or not buf.startswith("<?xml ", i):
                raise XmlError("processing instruction refused (only the XML declaration)")
            self.pos = j + 2
            return True
        if c != "!":
            return self._start(buf, i)
        if buf.startswith("<!--", i):
            j = buf.find("-->", i + 4)
            if j < 0:
                return None
            self.pos = j + 3
            return True
        if buf.startswith("<![CDATA[", i):
            j = buf.find("]]>", i + 9)
            if j < 0:
                return None
            if not self.stack:
                raise XmlError("CDATA outside the root element")
            self.pos = j + 3
            return (TEXT, buf[i + 9:j], None)
        if len(buf) - i < 9 and ("<!DOCTYPE".startswith(buf[i:]) or "<!--".startswith(buf[i:]) or
                                 "<![CDATA[".startswith(buf[i:])):
            return None
        raise XmlError("DTD refused: no DOCTYPE or entity declarations")

    def _name(self, buf, j):
        k = j
        n = len(buf)
        while k < n and buf[k] not in _NAME_STOP:
            k += 1
        if k >= n:
            return None, k
        name = buf[j:k]
        if not name or name[0] in "-.0123456789:" or len(name) > self.max_name:
            raise XmlError("bad name %r" % buf[j:j + 16])
        return name, k

    def _start(self, buf, i):
        name, j = self._name(buf, i + 1)
        if name is None:
            return None
        attrs = {}
        n = len(buf)
        while True:
            k = j
            while k < n and buf[k] in _SPACE:
                k += 1
            if k >= n:
                return None
            c = buf[k]
            if c == ">" or c == "/":
                if c == "/" and k + 1 >= n:
                    return None
                if c == "/" and buf[k + 1] != ">":
                    raise XmlError("bad empty-element tag <%s" % name)
                self.pos = k + (2 if c == "/" else 1)
                break
            if k == j:
                raise XmlError("attributes of <%s> need a space between them" % name)
            aname, k = self._name(buf, k)
            if aname is None:
                return None
            while k < n and buf[k] in _SPACE:
                k += 1
            if k + 1 >= n:
                return None
            if buf[k] != "=":
                raise XmlError("attribute %s of <%s> has no value" % (aname, name))
            k += 1
            while k < n and buf[k] in _SPACE:
                k += 1
            if k >= n:
                return None
            quote = buf[k]
            if quote != '"' and quote != "'":
                raise XmlError("attribute %s of <%s> is not quoted" % (aname, name))
            end = buf.find(quote, k + 1)
            if end < 0:
                return None
            raw = buf[k + 1:end]
            if "<" in raw:
                raise XmlError("'<' in attribute %s of <%s>" % (aname, name))
            if aname in attrs:
                raise XmlError("attribute %s repeated in <%s>" % (aname, name))
            if len(attrs) >= self.max_attrs:
                raise XmlError("more than %d attributes in <%s>" % (self.max_attrs, name))
            attrs[aname] = unescape(raw)
            j = end + 1
        if self.closed:
            raise XmlError("a second root element <%s>" % name)
        if len(self.stack) >= self.max_depth:
            raise XmlError("elements nested deeper than %d" % self.max_depth)
        self.elements += 1
        if self.elements > self.max_elements:
            raise XmlError("more than %d elements" % self.max_elements)
        self.stack.append(name)
        if c == "/":
            self.pending = name
        return (START, name, attrs)

    def _end(self, name):
        if not self.stack or self.stack[-1] != name:
            raise XmlError("end tag </%s> does not match <%s>"
                           % (name[:32], self.stack[-1] if self.stack else ""))
        self.stack.pop()
        if not self.stack:
            self.closed = True
        return (END, name, None)


def _resolve(name, scopes, attr=False):
    """(namespace, local name) of a prefixed name, with the innermost declarations first."""
    colon = name.find(":")
    prefix = name[:colon] if colon > 0 else ""
    if attr and not prefix:
        return "", name
    if prefix == "xml":
        return XML_NS, name[colon + 1:]
    for scope in reversed(scopes):
        if scope is not None and prefix in scope:
            return scope[prefix], name[colon + 1:] if prefix else name
    if prefix:
        raise XmlError("undeclared namespace prefix %s" % prefix[:16])
    return "", name


def parse(data, **limits):
    """The root element of a whole document (bytes, UTF-8) as [ns, name, attrs, children,
    text]: attrs maps plain names (namespace declarations left out) to text; text joins
    the element's own text pieces. Namespace prefixes are resolved."""
    try:
        text = data.decode() if isinstance(data, (bytes, bytearray)) else data
    except UnicodeError:
        raise XmlError("document is not UTF-8")
    tok = Tokenizer(**limits)
    tok.feed(text)
    stack = []
    scopes = []
    root = None
    while True:
        ev = tok.next()
        if ev is None:
            break
        kind, value, attrs = ev
        if kind == START:
            scope = None
            plain = {}
            for a in attrs:
                if a == "xmlns" or a.startswith("xmlns:"):
                    if scope is None:
                        scope = {}
                    scope[a[6:]] = attrs[a]
                else:
                    plain[a] = attrs[a]
            scopes.append(scope)
            for a in plain:
                _resolve(a, scopes, True)
            ns, local = _resolve(value, scopes)
            el = [ns, local, plain, [], ""]
            if stack:
                stack[-1][3].append(el)
            else:
                root = el
            stack.append(el)
        elif kind == END:
            stack.pop()
            scopes.pop()
        else:
            stack[-1][4] += value
    if tok.stack:
        raise XmlError("document ends inside <%s>" % tok.stack[-1])
    if root is None:
        raise XmlError("no root element")
    return root
