"""A real XMPP client for tests and benches (slixmpp against the project's CA) in its own
thread and event loop: an operator's phone, an attacker's account, or the echo end of the
bench's baseline. What arrives is collected with the time.time() it arrived; raw() sends
any stanza as is.

With netns=NAME the client's thread enters that network namespace first (lab/netns.py: a
lab's `out`, where the server listens, or a site behind its firewall), so it reaches the
server the way a phone on that network would; the rest of the process stays where it is.
On the server's c2s port the client uses STARTTLS; on its Direct TLS port (XEP-0368, the
only one a confined site may reach) it starts with TLS."""

import asyncio
import threading
import time

from lab import netns as lab_netns


class Operator:
    """A real XMPP client in its own thread and event loop; what arrives is collected.
    echo=True answers every chat message with its own body (the baseline's far end)."""

    def __init__(self, jid, password, port, ca, show=None, host="127.0.0.1", netns=None,
                 echo=False):
        from slixmpp import ClientXMPP
        self.messages, self.presences = [], []
        self.message_at, self.arrived = [], []      # time.time() of each, beside them
        self.loop = asyncio.new_event_loop()
        ready, failed = threading.Event(), []

        def on_message(m):
            self.message_at.append(time.time())
            self.messages.append((m["from"].bare, m["body"]))
            if echo and m["type"] in ("chat", "normal") and m["body"]:
                m.reply(m["body"]).send()

        def run():
            try:
                if netns is not None:
                    lab_netns.enter(netns)
            except OSError as e:
                failed.append(e)
                ready.set()
                return
            asyncio.set_event_loop(self.loop)
            c = self.client = ClientXMPP(jid, password)
            c.ca_certs = str(ca)
            c.auto_authorize = True
            c.auto_subscribe = True

            def started(_):
                c.send_presence(pshow=show)
                c.get_roster()
                ready.set()
            c.add_event_handler("session_start", started)
            c.add_event_handler("message", on_message)
            c.add_event_handler("presence", self._presence)
            c.connect(host, port)
            self.loop.run_forever()
        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(20) and not failed, "%s did not log in %s" % (jid, failed)

    def _presence(self, p):
        self.arrived.append(time.time())
        self.presences.append((p["from"].bare, p["type"], p["show"], p["status"]))

    def say(self, to, body):
        self.loop.call_soon_threadsafe(lambda: self.client.send_message(mto=to, mbody=body,
                                                                        mtype="chat"))

    def wait_message(self, sender, contains, timeout=15, after=0):
        """The body of the first message from sender containing `contains`, from index
        `after` on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = list(self.messages)
            for s, body in got[after:]:
                if s == sender and contains in body:
                    return body
            time.sleep(0.005)
        raise AssertionError("no message from %s with %r: %s" % (sender, contains,
                                                                 self.messages))

    def wait_presence(self, sender, show, status=None, timeout=15, after=0):
        """The index of the first presence from sender with that show (and status), from
        index `after` on; show "" is plain available, "unavailable" an unavailable one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = list(self.presences)
            for i in range(after, len(got)):
                s, type_, sh, st = got[i]
                if type_ == "unavailable":
                    sh = "unavailable"
                if s == sender and sh == show and (status is None or st == status):
                    return i
            time.sleep(0.005)
        raise AssertionError("no presence %s/%s from %s: %s" % (show, status, sender,
                                                                 self.presences))

    def close(self):
        self.loop.call_soon_threadsafe(self.client.disconnect)

    def raw(self, xml):
        """Send a stanza exactly as written (an attacker's hand-made one)."""
        self.loop.call_soon_threadsafe(lambda: self.client.send_raw(xml))
