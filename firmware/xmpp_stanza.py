# The meter's XMPP stream reader (RFC 6120 section 4): bytes from the server in, complete
# stanzas out, on the strict tokenizer of firmware/xmlmini.py (no DTD, no entities beyond
# the five predefined, no processing instructions).
#
# A stream is one long XML document: <stream:stream ...> opens it, each child of it is a
# stanza (message, presence, iq) or a stream-level element (stream:features, stream:error,
# the SASL answers), and </stream:stream> ends it. What one stanza may cost is bounded:
# MAX_STANZA characters (the tokenizer's size, reset at each stanza's end), MAX_DEPTH levels,
# MAX_ELEMENTS elements, 8 attributes of at most 64-character names each; the bytes held
# between reads are one stanza at most plus one network read. A stanza is a small list:
# [name, attrs, children, text], with the xmlns attribute kept in attrs.
#
# Errors: XmlError (malformed, over a limit: the stream is unusable, reconnect) and
# StreamEnded (the server sent a stream error or closed the stream), each with one line.

from xmlmini import END, START, Tokenizer, XmlError

STREAMS_NS = "http://etherx.jabber.org/streams"
MAX_STANZA = 40 * 1024      # characters; the head-end's answers fit (work_size "xmpp")
MAX_DEPTH = 8               # the stream element included
MAX_ELEMENTS = 64           # per stanza

NAME, ATTRS, CHILDREN, TEXT = 0, 1, 2, 3


class StreamEnded(Exception):
    """The server ended the stream: a <stream:error> (its condition) or </stream:stream>."""


def child(el, name, xmlns=None):
    """The first child of el called name (and in xmlns, if given), or None."""
    for c in el[CHILDREN]:
        if c[NAME] == name and (xmlns is None or c[ATTRS].get("xmlns") == xmlns):
            return c
    return None


def utf8_valid(data, end):
    """How many of data's first end bytes are whole, valid UTF-8 characters."""
    i = 0
    while i < end:
        b = data[i]
        n = 1 if b < 0x80 else 2 if 0xC2 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else \
            4 if 0xF0 <= b < 0xF5 else 0
        if not n or i + n > end:
            return i
        try:
            str(data[i:i + n], "utf-8")
        except UnicodeError:
            return i
        i += n
    return i


def utf8_cut(data):
    """Where data ends in a complete UTF-8 character: len(data), or the start of a trailing
    multi-byte sequence that the next read completes."""
    n = len(data)
    i = n - 1
    while i >= 0 and n - i <= 4 and data[i] & 0xC0 == 0x80:
        i -= 1
    if i < 0 or data[i] < 0xC2 or data[i] > 0xF4:    # not a lead byte: decoding says so
        return n
    need = 2 if data[i] < 0xE0 else 3 if data[i] < 0xF0 else 4
    return i if n - i < need else n


class StanzaReader:
    def __init__(self, max_stanza=MAX_STANZA, max_depth=MAX_DEPTH, max_elements=MAX_ELEMENTS):
        self.max_stanza = max_stanza
        self.max_depth = max_depth
        self.max_elements = max_elements
        self.restart()

    def restart(self):
        """A new stream: after SASL success the server starts again from a new header."""
        # the size limit is checked here, per stanza, as events come (_size): the same
        # stanzas pass or fail however the network cuts the stream into reads
        self.tok = Tokenizer(max_size=1 << 30, max_depth=self.max_depth,
                             max_elements=self.max_elements, max_attrs=8, max_name=64)
        self.header = None      # the <stream:stream> attributes, once read
        self.prefix = None      # the stream namespace's prefix + ":" (Prosody: "stream:")
        self.stack = []         # the stanza being built, outermost first
        self.tail = b""         # an incomplete UTF-8 character from the last read

    def feed(self, data):
        """The stanzas completed by data (bytes), in order. Raises XmlError or StreamEnded,
        with the stanzas completed before the fault in its `stanzas` (nothing before a
        fault is lost, whatever the reads' boundaries)."""
        if self.tail:
            data = self.tail + data
        cut = utf8_cut(data)
        self.tail = data[cut:]
        bad = False
        try:
            text = str(data[:cut], "utf-8")
        except UnicodeError:        # parse up to the fault, as if it came in the next read
            bad = True
            text = str(data[:utf8_valid(data, cut)], "utf-8")
        out = []
        try:
            self._parse(text, out)
            if bad:
                raise XmlError("stream is not UTF-8")
        except (XmlError, StreamEnded) as exc:
            exc.stanzas = out
            raise
        return out

    def _parse(self, text, out):
        tok = self.tok
        tok.feed(text)
        while True:
            ev = tok.next()
            self._size(ev is None)
            if ev is None:
                if not self.stack and self.header is not None and tok.pos < len(tok.buf):
                    self._keepalives()
                return
            kind, value, attrs = ev
            if kind == START:
                self._start(value, attrs)
            elif kind == END:
                done = self._end(value)
                if done is not None:
                    out.append(done)
                    # the limits are per stanza: count again from here
                    tok.size = len(tok.buf) - tok.pos
                    tok.elements = 0
            elif self.stack:
                el = self.stack[-1]
                el[TEXT] = el[TEXT] + value if el[TEXT] else value
            elif value.strip(" \t\r\n"):
                raise XmlError("text between stanzas")
            else:
                tok.size = len(tok.buf) - tok.pos     # whitespace keepalives cost nothing

    def _size(self, waiting=False):
        """The stanza read so far over max_stanza, or (waiting: what is held is no complete
        token) one token still arriving over it: refused. What is held after a complete
        token may be more stanzas of the same read: they are counted as they come, so one
        read carrying several stanzas passes as the same bytes in many reads do."""
        tok = self.tok
        left = len(tok.buf) - tok.pos
        if tok.size - left > self.max_stanza or (waiting and left > self.max_stanza):
            raise XmlError("stanza larger than %d characters" % self.max_stanza)

    def _keepalives(self):
        """Whitespace between stanzas (keepalives) is dropped as it arrives, not held until
        the next stanza: hours of them cost nothing."""
        tok = self.tok
        rest = tok.buf[tok.pos:]
        lt = rest.find("<")
        if (rest if lt < 0 else rest[:lt]).strip(" \t\r\n"):
            raise XmlError("text between stanzas")
        if lt < 0:
            tok.pos = len(tok.buf)
            tok.size = 0

    def _start(self, name, attrs):
        if self.header is None:
            colon = name.find(":")
            prefix = name[:colon] if colon > 0 else ""
            ns = attrs.get("xmlns:" + prefix) if prefix else attrs.get("xmlns")
            if name[colon + 1:] != "stream" or ns != STREAMS_NS:
                raise XmlError("expected <stream:stream> in %s, got <%s>"
                               % (STREAMS_NS, name[:32]))
            self.header = attrs
            self.prefix = prefix + ":" if prefix else ""
            self.tok.elements = 0
            return
        if not self.stack and self.prefix and name.startswith(self.prefix):
            name = "stream:" + name[len(self.prefix):]      # one spelling for the caller
        el = [name, attrs, [], ""]
        if self.stack:
            self.stack[-1][CHILDREN].append(el)
        self.stack.append(el)

    def _end(self, name):
        if not self.stack:      # the stream element itself
            raise StreamEnded("the server closed the stream")
        el = self.stack.pop()
        if self.stack:
            return None
        if el[NAME] == "stream:error":
            raise StreamEnded("stream error: %s" % error_text(el))
        return el


def error_text(el):
    """The condition (and text) of a stream or stanza error element, in one line."""
    if el is None:
        return "unspecified"
    cond = ""
    said = ""
    for c in el[CHILDREN]:
        if c[NAME] == "text":
            said = c[TEXT][:120]
        elif not cond:
            cond = c[NAME][:48]
    return cond + (" (%s)" % said if said else "") if cond else "unspecified"
