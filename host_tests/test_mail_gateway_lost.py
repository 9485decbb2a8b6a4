"""The head-end's mail reader comes back after its IMAP server dies in the middle of a
command. A scripted IMAPS server (TLS from the project's PKI) hands over one mail and drops
the connection when the reader asks to move it aside (UID MOVE): aioimaplib leaves that
command waiting for ever, and the head-end read no mail again until it was restarted (seen
in the e2e lab: the mail server stopped mid-move, then no meter on email was answered). Now
the reader logs in again at once, moves the mail and goes on."""

import asyncio
import ssl
import threading
import time

import pytest
from fastapi.testclient import TestClient
from headend_harness import Headend

from lab import pki

pytestmark = pytest.mark.unit

pytest.importorskip("aioimaplib", reason="aioimaplib is not installed: run make venv")

MAIL = b"From: x@mail.test\r\n\r\nhello\r\n"


class ScriptedImap:
    """Just enough IMAP4rev1 for the gateway: one mail in INBOX until it is moved. The first
    connection is dropped, unanswered, at its first UID MOVE."""

    def __init__(self, pem, key):
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(pem), str(key))
        self.logins = 0
        self.moved = False
        self.port = None
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.ctx))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        self.loop.close()

    def stop(self):
        """Close the listener and end every connection's task, then the loop."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _shutdown(self):
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, reader, writer):
        first = self.logins == 0
        writer.write(b"* OK [CAPABILITY IMAP4rev1 IDLE MOVE UIDPLUS] scripted\r\n")
        try:
            while line := await reader.readline():
                tag, _, rest = line.decode().strip().partition(" ")
                verb = rest.split(" ")[0].upper()
                if verb == "UID":
                    verb += " " + rest.split(" ")[1].upper()
                out = self._answer(tag, verb, rest, first)
                if out is None:              # dropped, unanswered
                    writer.transport.abort()
                    return
                writer.write(out)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def _answer(self, tag, verb, rest, first):
        ok = ("%s OK done\r\n" % tag).encode()
        if verb == "CAPABILITY":
            return b"* CAPABILITY IMAP4rev1 IDLE MOVE UIDPLUS\r\n" + ok
        if verb == "LOGIN":
            self.logins += 1
            return ok
        if verb == "SELECT":
            return b"* %d EXISTS\r\n* FLAGS ()\r\n" % (0 if self.moved else 1) + ok
        if verb == "UID FETCH" and "RFC822.SIZE" in rest:
            return (b"" if self.moved else b"* 1 FETCH (UID 7 RFC822.SIZE %d)\r\n" % len(MAIL)) \
                + ok
        if verb == "UID FETCH":
            return b"* 1 FETCH (UID 7 BODY[] {%d}\r\n%s)\r\n" % (len(MAIL), MAIL) + ok
        if verb == "UID MOVE":
            if first:
                return None
            self.moved = True
            return ok
        if verb == "IDLE":
            return b"+ idling\r\n"
        if verb == "DONE":
            return b""
        if verb == "LOGOUT":
            return b"* BYE\r\n" + ok
        return ok                            # CREATE, NOOP, ...


def test_the_reader_logs_in_again_after_the_server_drops_a_move(tmp_path):
    pki.init(tmp_path / "pki")
    p = pki.paths(tmp_path / "pki")
    imap = ScriptedImap(p["server_pem"], p["server_key"])
    he = Headend(tmp_path, mail_address="headend@mail.test", mail_password="x",
                 mail_host="127.0.0.1", mail_imap_port=imap.port, mail_smtp_port=1,
                 mail_cafile=str(p["ca_pem"]))
    try:
        with TestClient(he.app):
            end = time.monotonic() + 20
            while time.monotonic() < end and not imap.moved:
                time.sleep(0.05)
        assert imap.logins >= 2 and imap.moved, "the reader never came back: %d logins" % \
            imap.logins
    finally:
        imap.stop()
