# One TLS connection to a mail server, read line by line (firmware/smtp_client.py,
# pop3_client.py, imap_idle.py): SMTP, POP3 and IMAP are all line protocols where the server
# speaks first. Every await has a timeout; a line longer than MAX_LINE or a literal larger
# than the caller's limit is a MailError, read no further (a hostile or broken server cannot
# make the meter buffer without bound). Direct TLS only (SMTPS, IMAPS, POP3S): MicroPython's
# asyncio cannot switch a connection to TLS midway, so there is no STARTTLS.

import asyncio

import netconn
from mpshim import MICROPYTHON

MAX_LINE = 2048         # SMTP replies 512, POP3 512, IMAP lines are short but for literals
CHUNK = 512


class MailError(Exception):
    """The server said no, or broke its protocol: one line saying which."""


class LineConn:
    def __init__(self, host, port, ssl, timeout_s=15):
        self.host = host
        self.port = port
        self.ssl = ssl
        self.timeout_s = timeout_s
        self.reader = None
        self.writer = None
        self.buf = b""
        self.bytes_in = 0
        self.bytes_out = 0

    async def open(self):
        if self.ssl is not None:
            netconn.ROOM.release()  # the block kept for TLS buffers (firmware/netconn.py)
            # server_hostname: what the server's certificate must name (DNS name or IP)
            conn = asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                           server_hostname=self.host)
        else:
            conn = asyncio.open_connection(self.host, self.port)
        self.reader, self.writer = await asyncio.wait_for(conn, self.timeout_s)
        self.buf = b""
        if self.ssl is not None and MICROPYTHON:
            # The server speaks first, and MicroPython's TLS handshake runs on the first read
            # or write of the socket, but its asyncio waits for the socket to be readable
            # before it reads: nothing would ever send the ClientHello. One non-blocking read
            # starts the handshake (CPython did it in open_connection). Whatever it returns
            # (nothing, unless the server were faster than this call) is kept.
            data = self.writer.s.read(CHUNK)
            if data:
                self.buf = data
                self.bytes_in += len(data)

    def close(self):
        w, self.writer = self.writer, None
        self.reader = None
        self.buf = b""
        netconn.close(w)    # the socket too; the block for TLS buffers taken back

    async def _more(self, timeout_s):
        data = await asyncio.wait_for(self.reader.read(CHUNK), timeout_s)
        if not data:
            raise EOFError("%s:%d closed the connection" % (self.host, self.port))
        self.bytes_in += len(data)
        self.buf += data

    async def readline(self, timeout_s=None):
        """One line without its CRLF (or LF), as bytes."""
        t = self.timeout_s if timeout_s is None else timeout_s
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = self.buf[:i]
                self.buf = self.buf[i + 1:]
                return line[:-1] if line[-1:] == b"\r" else line
            if len(self.buf) > MAX_LINE:
                raise MailError("a line from %s:%d over %d bytes" % (self.host, self.port,
                                                                      MAX_LINE))
            await self._more(t)

    async def readexactly(self, n):
        """n bytes (an IMAP literal); the caller has checked n against its limit."""
        have = self.buf[:n]
        self.buf = self.buf[n:]
        if len(have) == n:
            return have
        rest = await asyncio.wait_for(self.reader.readexactly(n - len(have)), self.timeout_s)
        self.bytes_in += len(rest)
        return have + rest

    async def write(self, data):
        self.writer.write(data)
        self.bytes_out += len(data)
        await asyncio.wait_for(self.writer.drain(), self.timeout_s)
