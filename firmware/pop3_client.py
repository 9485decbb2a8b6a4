# POP3 over direct TLS (POP3S, port 995), for the meter's email transport
# (firmware/mail_comms.py): log in, take every mail in the box (oldest first), hand each to
# the caller, delete it, QUIT (which is when the deletions happen, RFC 1939). A mail larger
# than max_bytes is deleted unread, a bad one after its refusal is logged: a bad mail never
# blocks the ones after it. A connection that drops before QUIT deletes
# nothing, so those mails are read again: the caller's dedupe gives them one effect.
#
# Polling: POP3 has no push, so work waits in the box until the next poll. The meter polls
# every mail_poll_s (at least MIN_POLL_S: each poll is a TLS handshake, several KB and some
# CPU on the meter and the server; many providers also limit logins to a few a minute).

from mail_line import MailError

MIN_POLL_S = 15
MAX_MAILS = 16          # per poll; the rest wait for the next one


def ok(line):
    """The text after +OK; MailError for -ERR or anything else."""
    if line[:3] == b"+OK":
        return line[3:].strip()
    raise MailError("POP3: %r" % (line[:120],))


def stat_count(text):
    """The message count of a STAT answer's text ('N SIZE')."""
    parts = text.split()
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        raise MailError("POP3: malformed STAT %r" % (text[:80],))
    return int(parts[0])


def list_size(text, num):
    """The size of message `num` from a LIST answer's text ('NUM SIZE')."""
    parts = text.split()
    if len(parts) < 2 or parts[0] != str(num).encode() or not parts[1].isdigit():
        raise MailError("POP3: malformed LIST %r" % (text[:80],))
    return int(parts[1])


def _arg(text):
    for c in text:
        if c in "\r\n":
            raise MailError("POP3: a line break in a login")
    return text.encode()


async def command(conn, line):
    await conn.write(line + b"\r\n")
    return ok(await conn.readline())


async def retrieve(conn, num, max_bytes):
    """Message `num`'s bytes (CRLF line ends, dot-stuffing undone)."""
    await command(conn, ("RETR %d" % num).encode())
    out = []
    size = 0
    while True:
        line = await conn.readline()
        if line == b".":
            return b"\r\n".join(out) + b"\r\n"
        if line[:1] == b".":
            line = line[1:]
        size += len(line) + 2
        if size > max_bytes + 1024:     # LIST said it fits: the server lied
            raise MailError("POP3: message %d longer than its LIST size" % num)
        out.append(line)


async def collect(conn, user, password, handle, max_bytes):
    """Take every mail from the box; handle(raw bytes) for each that fits. Returns
    (handled, refused as too large)."""
    ok(await conn.readline())                   # the greeting
    await command(conn, b"USER " + _arg(user))
    await command(conn, b"PASS " + _arg(password))
    count = stat_count(await command(conn, b"STAT"))
    handled = refused = 0
    for num in range(1, min(count, MAX_MAILS) + 1):
        size = list_size(await command(conn, ("LIST %d" % num).encode()), num)
        if size > max_bytes:
            refused += 1
        else:
            handle(await retrieve(conn, num, max_bytes))  # never raises: see mail_comms
            handled += 1
        await command(conn, ("DELE %d" % num).encode())
    await command(conn, b"QUIT")
    return handled, refused
