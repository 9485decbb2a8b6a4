# SMTP submission over direct TLS (SMTPS, port 465) with AUTH PLAIN, for the meter's email
# transport (firmware/mail_comms.py): one mail per connection, then QUIT. RFC 5321 replies:
# a 3-digit code, `-` after it on every line but the last; at most MAX_REPLY_LINES lines.

from binascii import b2a_base64

from mail_line import MailError

MAX_REPLY_LINES = 32


async def reply(conn, want):
    """The server's reply; MailError unless its code is one of `want` (a tuple of ints)."""
    text = []
    for _ in range(MAX_REPLY_LINES):
        line = await conn.readline()
        code = line[:3]
        if len(line) < 3 or not code.isdigit() or line[3:4] not in (b"", b" ", b"-"):
            raise MailError("SMTP: malformed reply %r" % (line[:80],))
        text.append(line[4:])
        if line[3:4] != b"-":
            code = int(code)
            if code not in want:
                raise MailError("SMTP: %d %r" % (code, line[4:120]))
            return code, text
    raise MailError("SMTP: a reply of more than %d lines" % MAX_REPLY_LINES)


def _address(text):
    for c in text:
        if c in "<>\r\n \t\"\\":
            raise MailError("SMTP: %r is not a plain address" % (text,))
    return text


def dot_stuffed(message):
    """The DATA section: CRLF line ends, a leading '.' doubled, then the lone '.' line."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for ln in lines:
        out.append(b"." + ln if ln[:1] == b"." else ln)
    return b"\r\n".join(out) + b"\r\n.\r\n"


async def submit(conn, user, password, sender, to, message, helo="meter"):
    """Send `message` from `sender` to `to` on an open connection; MailError on any refusal.
    `message` is bytes (dot-stuffed here), or an iterable of pieces that end lines and hold
    no line starting with '.' (mail_mime.chunks), written one by one. The connection is
    closed by the caller."""
    await reply(conn, (220,))
    await conn.write(b"EHLO " + helo.encode() + b"\r\n")
    await reply(conn, (250,))
    token = b2a_base64(b"\x00" + user.encode() + b"\x00" + password.encode()).strip()
    await conn.write(b"AUTH PLAIN " + token + b"\r\n")
    await reply(conn, (235,))
    await conn.write(b"MAIL FROM:<" + _address(sender).encode() + b">\r\n")
    await reply(conn, (250,))
    await conn.write(b"RCPT TO:<" + _address(to).encode() + b">\r\n")
    await reply(conn, (250, 251))
    await conn.write(b"DATA\r\n")
    await reply(conn, (354,))
    if isinstance(message, bytes):
        await conn.write(dot_stuffed(message))
    else:
        for piece in message:
            await conn.write(piece)
        await conn.write(b".\r\n")
    await reply(conn, (250,))
    try:
        await conn.write(b"QUIT\r\n")
        await reply(conn, (221,))
    except Exception:   # the mail is accepted already
        pass
