# Fuzz cases for the meter's mail parsers (firmware/mail_mime.py, imap_idle.py,
# pop3_client.py), shared by CPython (hypothesis, test_fuzz_firmware.py) and the MicroPython
# driver fuzz_parsers.py. Each takes bytes:
#   mime  a received mail for mail_mime.parse (then envelope_of): MimeError is the only
#         documented failure, and a payload that parses is within MAX_PAYLOAD
#   imap  what an IMAP server sends, for the line parsers and a whole login + drain
#   pop3  what a POP3 server sends, for a whole login + collect
# MailError and EOFError (the server's bytes ran out) are the documented client failures.

import asyncio

import imap_idle
import mail_mime
import pop3_client
from mail_line import LineConn, MailError

PARSERS = ("mime", "imap", "pop3")
ALLOWED = (mail_mime.MimeError, MailError, EOFError)
LIMIT = 4096


class Crash(Exception):
    pass


class FakeReader:
    def __init__(self, data):
        self.data = data

    async def read(self, n):
        if not self.data:
            raise EOFError("no more from the fake server")
        out, self.data = self.data[:n], self.data[n:]
        return out

    async def readexactly(self, n):
        if len(self.data) < n:
            raise EOFError("short")
        out, self.data = self.data[:n], self.data[n:]
        return out


class FakeConn(LineConn):
    """A LineConn whose server is a function of each line written (its reply bytes), or
    None: a server that sent `greeting` and then nothing more."""

    def __init__(self, server, greeting):
        LineConn.__init__(self, "fake", 0, None, 1)
        self.reader = FakeReader(greeting)
        self.server = server
        self.sent = []

    async def write(self, data):
        self.sent.append(data)
        if self.server is not None:
            self.reader.data += self.server(data)


def run_mime(data):
    hdrs, payload = mail_mime.parse(data)
    if not isinstance(payload, bytes) or len(payload) > mail_mime.MAX_PAYLOAD:
        raise Crash("payload of %d bytes" % len(payload))
    if not isinstance(hdrs, dict):
        raise Crash("headers are not a dict")
    mail_mime.envelope_of(payload)


def run_imap(data):
    for line in data.split(b"\n")[:64]:
        line = line.rstrip(b"\r")
        try:
            imap_idle.literal_size(line, LIMIT)
            if b"FETCH" in line:
                imap_idle.fetch_fields(line)
            if line[:9] == b"* SEARCH ":
                imap_idle.search_uids(line)
            imap_idle.tagged(line, b"a1")
        except MailError:
            pass
    got = []
    client = imap_idle.Imap(FakeConn(None, data), LIMIT)

    async def session():
        await client.login("m1@x.y", "pw")
        await client.drain(got.append)
    asyncio.run(session())
    for raw in got:
        if len(raw) > LIMIT:
            raise Crash("a body over the limit was handed on")


def run_pop3(data):
    got = []
    conn = FakeConn(None, data)
    asyncio.run(pop3_client.collect(conn, "m1@x.y", "pw", got.append, LIMIT))
    for raw in got:
        if len(raw) > LIMIT + 1024 + 2:
            raise Crash("a body over the limit was handed on")


def run(parser, data):
    {"mime": run_mime, "imap": run_imap, "pop3": run_pop3}[parser](data)
