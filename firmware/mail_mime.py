# The exchange as a mail (docs/email.md "The meter's mail"): the signed envelope
# `<sig> <json>` (the MQTT payload) as base64 text in a MIME part of type TYPE, so a server
# that re-wraps lines changes nothing the MAC covers (it covers the decoded bytes). The
# meter's id and seq go in headers for threading and for people reading a mailbox.
#
# parse() is strict and bounded: at most MAX_MAIL bytes, MAX_HEADERS header lines of at
# most 998 characters (RFC 5322), either one part of TYPE or a multipart/mixed of at most
# MAX_PARTS parts (a server may add a footer part), no nesting, base64 only. Anything else
# is a MimeError saying what.

from binascii import a2b_base64, b2a_base64

TYPE = b"application/x-backchannel-exchange"
MAX_MAIL = 64 * 1024
MAX_PAYLOAD = 44 * 1024     # decoded; MAX_MAIL holds it in base64 with headers
MAX_HEADERS = 64
MAX_PARTS = 8
LINE = 57                   # bytes per base64 line (76 characters)


class MimeError(ValueError):
    pass


def compose(sender, to, device, seq, nonce, payload):
    """The mail (bytes) carrying payload from the meter `sender` to the head-end `to`."""
    return b"".join(chunks(sender, to, device, seq, nonce, payload))


def chunks(sender, to, device, seq, nonce, payload, size=1024):
    """The same mail as pieces of about `size` bytes, each ending a line, none with a line
    that starts with '.': sent one by one, the whole mail is never held twice (a board's
    heap, fragmented, may lack a few KB in one piece)."""
    domain = sender[sender.find("@") + 1:]
    yield ("From: %s\r\nTo: %s\r\nSubject: bc exchange %s seq %d\r\n"
           "Message-ID: <%s.%s@%s>\r\nX-BC-Device: %s\r\nX-BC-Seq: %d\r\n"
           "MIME-Version: 1.0\r\nContent-Type: %s\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n"
           % (sender, to, device, seq, nonce, device, domain, device, seq,
              TYPE.decode())).encode()
    step = size // 78 * LINE
    view = memoryview(payload)
    for start in range(0, len(payload), step):
        out = []
        for i in range(start, min(start + step, len(payload)), LINE):
            out.append(b2a_base64(view[i:i + LINE]).strip())
        yield b"\r\n".join(out) + b"\r\n"


def split(raw):
    """(header bytes, body bytes) at the first empty line."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if i >= 0:
            j = raw.find(b"\n\n")
            if sep == b"\r\n\r\n" and 0 <= j < i:   # a bare-LF blank line comes first
                return raw[:j], raw[j + 2:]
            return raw[:i], raw[i + len(sep):]
    raise MimeError("no blank line after the headers")


def headers(block):
    """{lowercase name: value} with folded lines joined; MimeError when malformed. A
    repeated header keeps its first value, except that repeats of the ones read are refused."""
    out = {}
    name = None
    count = 0
    for line in block.split(b"\n"):
        if line[-1:] == b"\r":
            line = line[:-1]
        if len(line) > 998:
            raise MimeError("a header line over 998 characters")
        if line[:1] in (b" ", b"\t"):
            if name is None:
                raise MimeError("a continuation line before any header")
            if name:                    # b"": the continuation of a repeat, not kept
                out[name] = out[name] + b" " + line.strip()
            continue
        count += 1
        if count > MAX_HEADERS:
            raise MimeError("more than %d header lines" % MAX_HEADERS)
        i = line.find(b":")
        if i <= 0:
            raise MimeError("a header line without a name")
        key = line[:i].strip().lower()
        for c in key:
            if c < 33 or c > 126:
                raise MimeError("a header name with a space or control character")
        if key in out:
            if key in (b"content-type", b"content-transfer-encoding", b"x-bc-device",
                       b"from"):
                raise MimeError("%s given twice" % key.decode())
            name = b""                  # Received: and the like come many times
            continue
        name = key
        out[key] = line[i + 1:].strip()
    return out


def content_type(value):
    """(lowercase media type, boundary or None) of a Content-Type value."""
    parts = value.split(b";")
    media = parts[0].strip().lower()
    boundary = None
    for p in parts[1:]:
        k, _, v = p.strip().partition(b"=")
        if k.strip().lower() == b"boundary":
            v = v.strip()
            if v[:1] == b'"' and v[-1:] == b'"' and len(v) >= 2:
                v = v[1:-1]
            boundary = v
    return media, boundary


def _payload(hdrs, body):
    enc = hdrs.get(b"content-transfer-encoding", b"").strip().lower()
    if enc != b"base64":
        raise MimeError("the exchange part is not base64 (%r)" % (enc[:20],))
    text = b"".join(body.split())
    if len(text) % 4:
        raise MimeError("base64 of a length that is not a multiple of 4")
    if len(text) > (MAX_PAYLOAD + 2) // 3 * 4:
        raise MimeError("payload over %d bytes" % MAX_PAYLOAD)
    end = len(text)
    while end and text[end - 1] == 61 and len(text) - end < 2:     # '=' padding
        end -= 1
    for c in text[:end]:    # a2b_base64 skips strange characters on both interpreters
        if not (65 <= c <= 90 or 97 <= c <= 122 or 48 <= c <= 57 or c == 43 or c == 47):
            raise MimeError("not base64")
    try:
        return a2b_base64(text)
    except ValueError:   # binascii.Error is a ValueError
        raise MimeError("not base64")


def _parts(body, boundary):
    if not boundary or len(boundary) > 70:
        raise MimeError("multipart without a usable boundary")
    dash = b"--" + boundary
    pieces = body.split(dash)
    if len(pieces) < 3:
        raise MimeError("multipart without its parts")
    tail = pieces[-1]
    if tail[:2] != b"--":
        raise MimeError("multipart without its closing boundary")
    parts = pieces[1:-1]
    if len(parts) > MAX_PARTS:
        raise MimeError("more than %d parts" % MAX_PARTS)
    return parts


def parse(raw):
    """(header dict, payload bytes) of a mail carrying the exchange; MimeError if not."""
    if len(raw) > MAX_MAIL:
        raise MimeError("mail of %d bytes (at most %d)" % (len(raw), MAX_MAIL))
    block, body = split(raw)
    hdrs = headers(block)
    media, boundary = content_type(hdrs.get(b"content-type", b""))
    if media == TYPE:
        return hdrs, _payload(hdrs, body)
    if media != b"multipart/mixed":
        raise MimeError("content type %r is not the exchange's" % (media[:40],))
    for part in _parts(body, boundary):
        if part[:2] == b"\r\n":
            part = part[2:]
        elif part[:1] == b"\n":
            part = part[1:]
        else:
            raise MimeError("a boundary line with text after it")
        if part[:2] == b"\r\n" or part[:1] == b"\n":    # a part without headers
            phdrs, pbody = {}, part
        else:
            pblock, pbody = split(part)
            phdrs = headers(pblock)
        pmedia, _ = content_type(phdrs.get(b"content-type", b"text/plain"))
        if pmedia == TYPE:
            return hdrs, _payload(phdrs, pbody)
        if pmedia[:10] == b"multipart/":
            raise MimeError("nested multipart")
    raise MimeError("no %s part" % TYPE.decode())


def envelope_of(payload):
    """(signature text, signed bytes) of a payload `<64 hex> <body>`; MimeError if not."""
    i = payload.find(b" ")
    if i != 64:
        raise MimeError("payload is not '<signature> <body>'")
    try:
        sig = payload[:i].decode()
    except UnicodeError:
        raise MimeError("signature is not text")
    return sig, payload[i + 1:]
