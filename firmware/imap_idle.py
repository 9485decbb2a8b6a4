# IMAP over direct TLS (IMAPS, port 993) with IDLE, for the meter's email transport
# (firmware/mail_comms.py): log in, SELECT INBOX, take every mail (sizes first, then each
# body that fits), flag it \Deleted and EXPUNGE, then IDLE until the server says a new mail
# EXISTS, the caller wants the connection back (a mail to submit: one TLS connection at a
# time), or idle_s passes (renewed below the 30 s at which NAT boxes forget idle flows).
#
# The parser is strict and small: tagged status lines, `* SEARCH`, `* N FETCH (...)` with
# atoms, numbers and parenthesised lists, and at most one literal `{n}` per response (the
# body), bounded by the caller's max_bytes. Anything else from the server is a MailError:
# the caller closes the connection and backs off.

import asyncio

from mail_line import MailError
from mpshim import ticks_diff, ticks_ms

MAX_MAILS = 16          # per drain; the rest wait for the next one
MAX_RESPONSES = 64      # untagged lines before a tagged answer
DRAIN_ROUNDS = 4        # a drain goes round again while mail keeps arriving during it
MAX_DEPTH = 4


def literal_size(line, limit):
    """n for a line ending in {n} (a literal follows), else None; MailError when malformed
    or over limit."""
    if line[-1:] != b"}":
        return None
    i = line.rfind(b"{")
    digits = line[i + 1:-1]
    if i < 0 or not digits or len(digits) > 9 or not digits.isdigit():
        raise MailError("IMAP: malformed literal %r" % (line[-16:],))
    n = int(digits)
    if n > limit:
        raise MailError("IMAP: a literal of %d bytes (at most %d)" % (n, limit))
    return n


def _tokens(text):
    """Atoms and parentheses of a FETCH item list."""
    out = []
    for word in text.split():
        while word[:1] == b"(":
            out.append(b"(")
            word = word[1:]
        closes = 0
        while word[-1:] == b")":
            closes += 1
            word = word[:-1]
        if word:
            out.append(word)
        out.extend([b")"] * closes)
    return out


def fetch_fields(line):
    """(message number, {name: value}) of `* N FETCH (NAME VALUE ...)`: numeric values as
    ints, lists skipped; MailError when malformed."""
    parts = line.split(None, 3)
    if (len(parts) != 4 or parts[0] != b"*" or not parts[1].isdigit()
            or parts[2].upper() != b"FETCH"):
        raise MailError("IMAP: malformed FETCH %r" % (line[:80],))
    toks = _tokens(parts[3])
    if not toks or toks[0] != b"(" or toks[-1] != b")":
        raise MailError("IMAP: malformed FETCH %r" % (line[:80],))
    fields = {}
    depth = 0
    name = None
    for t in toks[1:-1]:
        if t == b"(":
            depth += 1
            if depth > MAX_DEPTH:
                raise MailError("IMAP: FETCH nested too deep")
        elif t == b")":
            depth -= 1
            if depth < 0:
                raise MailError("IMAP: unbalanced FETCH")
            if depth == 0:
                name = None
        elif depth:
            continue
        elif name is None:
            name = t.upper()
        else:
            fields[name] = int(t) if t.isdigit() and len(t) < 10 else t
            name = None
    if depth:
        raise MailError("IMAP: unbalanced FETCH")
    return int(parts[1]), fields


def search_uids(line):
    """The UIDs of a `* SEARCH n n ...` line."""
    words = line.split()
    for w in words[2:]:
        if not w.isdigit() or len(w) > 9:
            raise MailError("IMAP: malformed SEARCH %r" % (line[:80],))
    return [int(w) for w in words[2:]]


def tagged(line, tag):
    """The status word (OK, NO, BAD) of the answer tagged `tag`, else None."""
    if line[:len(tag) + 1] != tag + b" ":
        return None
    words = line[len(tag) + 1:].split(None, 1)
    return words[0].upper() if words else b""


def _quoted(text):
    for c in text:
        if c in '"\\\r\n':
            raise MailError("IMAP: %r cannot be sent as a quoted string" % (c,))
    return b'"' + text.encode() + b'"'


class Imap:
    def __init__(self, conn, max_bytes):
        self.conn = conn
        self.max_bytes = max_bytes
        self.n = 0
        # a mail arrived (an untagged EXISTS) during a command: the server has told us, so
        # IDLE will not tell us again; drain() goes round once more, idle() returns at once
        self.grew = False

    def _note(self, line):
        if line.upper().endswith(b" EXISTS"):
            self.grew = True

    async def response(self):
        """(line, literal or None): a server line with its literal, if any."""
        line = await self.conn.readline()
        n = literal_size(line, self.max_bytes)
        if n is None:
            return line, None
        literal = await self.conn.readexactly(n)
        rest = await self.conn.readline()
        if literal_size(rest, 0) is not None:
            raise MailError("IMAP: more than one literal in a response")
        return line + b" " + rest, literal

    async def command(self, text, on_line=None):
        """Send `tag text`; on_line(line, literal) for each untagged line; MailError unless
        the tagged answer is OK."""
        self.n += 1
        tag = ("a%d" % self.n).encode()
        await self.conn.write(tag + b" " + text + b"\r\n")
        for _ in range(MAX_RESPONSES + MAX_MAILS):
            line, literal = await self.response()
            status = tagged(line, tag)
            if status is not None:
                if status != b"OK":
                    raise MailError("IMAP: %r" % (line[:120],))
                return
            if line[:2] != b"* ":
                raise MailError("IMAP: unexpected %r" % (line[:80],))
            self._note(line)
            if on_line is not None:
                on_line(line, literal)
        raise MailError("IMAP: no tagged answer to %r" % (text[:20],))

    async def login(self, user, password):
        line = await self.conn.readline()
        if line[:5].upper() != b"* OK ":
            raise MailError("IMAP: greeting %r" % (line[:80],))
        await self.command(b"LOGIN " + _quoted(user) + b" " + _quoted(password))
        await self.command(b"SELECT INBOX")

    async def drain(self, handle):
        """handle(raw) for each mail that fits, then delete them all; (handled, refused).
        A mail that arrives meanwhile is announced by an EXISTS among the answers, and IDLE
        would not announce it again: it is taken in another round (up to DRAIN_ROUNDS;
        past that, the next idle() returns at once)."""
        handled = refused = 0
        for _ in range(DRAIN_ROUNDS):
            self.grew = False
            h, r = await self._drain_once(handle)
            handled += h
            refused += r
            if not self.grew:
                break
        return handled, refused

    async def _drain_once(self, handle):
        uids = []

        def found(line, _literal):
            if line[:9].upper() == b"* SEARCH ":
                uids.extend(search_uids(line))
        await self.command(b"UID SEARCH ALL", found)
        uids = sorted(uids)[:MAX_MAILS]
        if not uids:
            return 0, 0
        sets = ",".join(str(u) for u in uids).encode()
        sizes = {}

        def sized(line, _literal):
            if b" FETCH " in line[:20].upper():
                _, f = fetch_fields(line)
                if isinstance(f.get(b"UID"), int) and isinstance(f.get(b"RFC822.SIZE"), int):
                    sizes[f[b"UID"]] = f[b"RFC822.SIZE"]
        await self.command(b"UID FETCH " + sets + b" (RFC822.SIZE)", sized)
        handled = refused = 0
        got = []

        def body(_line, literal):
            if literal:
                got.append(literal)
        for uid in uids:
            size = sizes.get(uid)
            if size is not None and size <= self.max_bytes:
                del got[:]
                await self.command(("UID FETCH %d (BODY.PEEK[])" % uid).encode(), body)
                if got:
                    handle(got[0])      # never raises: see mail_comms
                    handled += 1
            else:
                refused += 1
            await self.command(("UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid).encode())
        await self.command(b"EXPUNGE")
        return handled, refused

    async def idle(self, idle_s, stop):
        """IDLE until a new mail EXISTS (True), stop() is true, or idle_s passes (False).
        True at once when a mail arrived during the last drain and is still unread."""
        if self.grew:
            self.grew = False
            return True
        self.n += 1
        tag = ("a%d" % self.n).encode()
        await self.conn.write(tag + b" IDLE\r\n")
        for _ in range(MAX_RESPONSES):
            line = await self.conn.readline()
            if line[:1] == b"+":
                break
            if line[:2] != b"* ":
                raise MailError("IMAP: IDLE refused: %r" % (line[:80],))
            self._note(line)
        else:
            raise MailError("IMAP: no IDLE continuation")
        new = self.grew
        self.grew = False
        start = ticks_ms()
        while not new and not stop() and ticks_diff(ticks_ms(), start) < idle_s * 1000:
            try:
                line = await self.conn.readline(0.25)
            except asyncio.TimeoutError:
                continue
            if line[:2] != b"* ":
                raise MailError("IMAP: unexpected in IDLE: %r" % (line[:80],))
            new = line.upper().endswith(b" EXISTS")
        await self.conn.write(b"DONE\r\n")
        for _ in range(MAX_RESPONSES):
            line = await self.conn.readline()
            status = tagged(line, tag)
            if status is not None:
                if status != b"OK":
                    raise MailError("IMAP: IDLE ended with %r" % (line[:80],))
                return new
            new = new or line.upper().endswith(b" EXISTS")
        raise MailError("IMAP: IDLE did not end")
